"""Triton python (BLS) model `frame_features`: frames -> region features, the extractor called in chunks.

Config parameter `text_kind` (with a text-video student): which extractor it calls (`spec.extractor`: the
offline student's `feature_extractor_pooled`, whose pooled features it also gives at the request's
`text_frames`).  The work: `dnsvr.serving.pipelines.video.frame_features`.
"""

from __future__ import annotations

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.pipelines.video import frame_features
from dnsvr.serving.triton.base import PythonModel, call


class TritonPythonModel(PythonModel):
    def setup(self) -> None:
        self.extractor = spec.extractor(self.parameters.get("text_kind") or None)

    def extract(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        return call(self.extractor.name, {"frames": frames}, list(self.extractor.output_names))

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return frame_features(inputs.required("frames"), self.extract, self.extractor.max_batch_size,
                              inputs.optional("text_frames"))
