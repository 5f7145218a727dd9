"""Triton python (BLS) model `frame_features`: frames -> region features, `feature_extractor` called in chunks.

The work: `dnsvr.serving.pipelines.video.frame_features`.
"""

from __future__ import annotations

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.pipelines.video import frame_features
from dnsvr.serving.triton.base import PythonModel, call

EXTRACTOR = spec.FEATURE_EXTRACTOR


def _extract(frames: np.ndarray) -> np.ndarray:
    return call(EXTRACTOR.name, {"frames": frames}, ["features"])["features"]


class TritonPythonModel(PythonModel):
    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return {"features": frame_features(inputs.required("frames"), _extract, EXTRACTOR.max_batch_size)}
