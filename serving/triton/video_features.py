"""Triton python (BLS) model `video_features`: an encoded video (or RGB frames) -> region features, the
extractor called on the frames decoded so far while the next ones decode.

Config parameters `fps` (default `spec.DECODE_FPS`), `max_frames` (default 1200; $DNSVR_MAX_FRAMES overrides),
`chunk_frames` (decoded frames per extractor request), and with a text-video student `text_kind`,
`text_max_frames` (and TeachCLIP's `clip_size`): what the student reads and which extractor is called
(`spec.extractor`).  The work: `dnsvr.serving.pipelines.video.video_features`.
"""

from __future__ import annotations

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.pipelines.video import Decoding, video_features
from dnsvr.serving.triton.base import PythonModel, call


class TritonPythonModel(PythonModel):
    def setup(self) -> None:
        self.decoding = Decoding.from_parameters(self.parameters)
        self.extractor = spec.extractor(self.parameters.get("text_kind") or None)

    def extract(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        return call(self.extractor.name, {"frames": frames}, list(self.extractor.output_names))

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return video_features(inputs, self.decoding, self.extract, self.extractor.max_batch_size)
