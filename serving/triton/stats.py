"""Triton python model `dnsvr_stats`: "stats" | "health" -> a JSON report of the store and the models.

The work: `dnsvr.serving.pipelines.admin.stats_request`.
"""

from __future__ import annotations

import numpy as np
from dnsvr.serving.pipelines.admin import stats_request
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.triton.base import StoreModel


class TritonPythonModel(StoreModel):
    access = "read"

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return stats_request(inputs, self.stores)
