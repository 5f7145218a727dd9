"""Triton python model `dnsvr_delete`: video_id -> deleted (False when the id was not indexed).

The work: `dnsvr.serving.pipelines.admin.delete_request`.
"""

from __future__ import annotations

import numpy as np
from dnsvr.serving.pipelines.admin import delete_request
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.triton.base import StoreModel


class TritonPythonModel(StoreModel):
    access = "write"

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return delete_request(inputs, self.stores)
