"""Triton python (BLS) model `dnsvr_search`: DnS retrieval for one query video or indexed id.

Config parameters `store_uri`, `store_prefix`, `consistency` (Milvus consistency of the ranking reads,
default Session; $DNSVR_SEARCH_CONSISTENCY overrides), `code_cache_mb` (MiB of fine codes each model instance
keeps between requests; 0 or absent: none), `code_cache_warm_s` (seconds between the background scans that
fill that cache with the store's codes while the instance is idle, `dnsvr.serving.pipelines.code_warmer`; 0 or
absent: none), `fps` (the decode rate of the stored frames, default
`spec.DECODE_FPS`: copy localisation's seconds).  The pack's score calibration and default re-rank fusion come
from the repository's manifest (`ServiceStore`).  The work: `dnsvr.serving.pipelines.search`.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.code_cache import CodeCache, budget_bytes
from dnsvr.serving.pipelines.code_warmer import CodeWarmer, warm_period
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.pipelines.search import search_request
from dnsvr.serving.pipelines.store_access import ranking_consistency
from dnsvr.serving.triton.base import StoreModel
from dnsvr.serving.triton.calls import model_calls


class TritonPythonModel(StoreModel):
    access = "read"

    def setup(self) -> None:
        super().setup()
        self.consistency = ranking_consistency(self.parameters)
        self.calls = model_calls(self.stores.fine_kind, self.stores.text is not None)
        self.code_cache = CodeCache(budget_bytes(self.parameters.get("code_cache_mb")))
        period_s = warm_period(self.parameters.get("code_cache_warm_s"))
        self.warmer = CodeWarmer(self.stores.existing, self.code_cache, period_s) \
            if period_s and self.code_cache.budget else None
        self.fps = float(self.parameters.get("fps") or spec.DECODE_FPS)

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        with self.warmer.busy() if self.warmer is not None else nullcontext():  # the warmer waits meanwhile
            return search_request(inputs, self.stores, self.calls, self.consistency, self.code_cache, self.fps)

    def teardown(self) -> None:
        if self.warmer is not None:
            self.warmer.close()
        super().teardown()
