"""Triton python model `dnsvr_thumbnails`: indexed video ids -> their stored JPEG thumbnails (b"" where none).

Config parameters `store_uri`, `store_prefix`, `consistency` (as dnsvr_search; $DNSVR_SEARCH_CONSISTENCY
overrides).  A read: it needs the access token where searches do.  The work:
`dnsvr.serving.pipelines.thumbnails.thumbnails_request`.
"""

from __future__ import annotations

import numpy as np
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.pipelines.store_access import ranking_consistency
from dnsvr.serving.pipelines.thumbnails import thumbnails_request
from dnsvr.serving.triton.base import StoreModel


class TritonPythonModel(StoreModel):
    access = "read"

    def setup(self) -> None:
        super().setup()
        self.consistency = ranking_consistency(self.parameters)

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return thumbnails_request(inputs, self.stores, self.consistency)
