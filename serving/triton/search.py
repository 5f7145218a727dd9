"""Triton python (BLS) model `dnsvr_search`: DnS retrieval for one query video or indexed id.

Config parameters `store_uri`, `store_prefix`, `consistency` (Milvus consistency of the ranking reads,
default Session; $DNSVR_SEARCH_CONSISTENCY overrides).  The work: `dnsvr.serving.pipelines.search`.
"""

from __future__ import annotations

import numpy as np
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.pipelines.search import search_request
from dnsvr.serving.triton.base import StoreModel
from dnsvr.serving.triton.calls import model_calls
from dnsvr.training import paths


class TritonPythonModel(StoreModel):
    access = "read"

    def setup(self) -> None:
        super().setup()
        self.consistency = (paths.environment(paths.SEARCH_CONSISTENCY) or self.parameters.get("consistency")
                            or "Session")
        self.calls = model_calls(self.stores.fine_kind, self.stores.text is not None)

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return search_request(inputs, self.stores, self.calls, self.consistency)
