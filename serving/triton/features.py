"""Triton python (BLS) model `frame_features`: frames -> region features in the video models' layout.

Copied as `<repository>/frame_features/1/model.py` by `install_pipelines`.
    frames uint8 [T, 224, 224, 3] -> features float32 [1, T, 9, 512]
`feature_extractor` takes at most its max_batch_size frames per request (Triton's batch axis is the frame
axis), so longer videos go through it in chunks; an ensemble alone cannot loop.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils
from dnsvr.client import spec
from dnsvr.serving.triton.base import call, error_response, required_input

EXTRACTOR = spec.FEATURE_EXTRACTOR


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                frames = required_input(request, "frames")
                chunks = [
                    call(EXTRACTOR.name, {"frames": frames[start:start + EXTRACTOR.max_batch_size]},
                         ["features"])["features"]
                    for start in range(0, len(frames), EXTRACTOR.max_batch_size)
                ]
                features = np.concatenate(chunks)[None]
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("features", features)]))
            except Exception as error:
                responses.append(error_response("frame_features", error))
        return responses
