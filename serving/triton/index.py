"""Triton python (BLS) model `dnsvr_index`: video id + video -> dnsvr_embed (+ video_views with the pack's crop
grid, + coarse_embed on each frame window with the pack's segment layout) -> (on_duplicate report / skip: the
search of dnsvr_search, selector and fine student included) -> Milvus upsert unless skipped.

Store location: config parameters `store_uri` / `store_prefix`, else DNSVR_MILVUS_URI etc.
(`dnsvr.serving.pipelines.store_access`).  The work: `dnsvr.serving.pipelines.index.index_request`.
"""

from __future__ import annotations

import numpy as np
from dnsvr.serving.pipelines.index import index_request
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.triton.base import StoreModel
from dnsvr.serving.triton.calls import model_calls


class TritonPythonModel(StoreModel):
    access = "write"

    def setup(self) -> None:
        super().setup()
        self.calls = model_calls(self.stores.fine_kind, self.stores.text is not None, thumbnail=True,
                                 views=self.stores.index_views is not None, segments=self.stores.index_segments)

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return index_request(inputs, self.stores, self.calls)
