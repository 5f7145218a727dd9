"""Triton python (BLS) model `dnsvr_search_text`: text query -> dnsvr_text_embed -> Milvus top-k over the
text-video vectors.

Config parameters `store_uri`, `store_prefix`, `consistency` (as dnsvr_search; $DNSVR_SEARCH_CONSISTENCY
overrides).  Served with every pack; without a text-video student it answers NoTextSearch.  The work:
`dnsvr.serving.pipelines.text_search.search_text_request`.
"""

from __future__ import annotations

import numpy as np
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.pipelines.store_access import ranking_consistency
from dnsvr.serving.pipelines.text_search import search_text_request
from dnsvr.serving.triton.base import StoreModel
from dnsvr.serving.triton.calls import embed_text


class TritonPythonModel(StoreModel):
    access = "read"

    def setup(self) -> None:
        super().setup()
        self.consistency = ranking_consistency(self.parameters)
        self.embed_text = embed_text if self.stores.text is not None else None

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return search_text_request(inputs, self.stores, self.embed_text, self.consistency)
