"""Triton python model `video_decode`: an encoded video (or RGB frames) -> the frames the extractor takes.

Config parameters `fps` (default `spec.DECODE_FPS`) and `max_frames` (default 1200; $DNSVR_MAX_FRAMES
overrides), and with a text-video student `text_kind`, `text_max_frames` (and TeachCLIP's `clip_size`): what the
student reads.  The work: `dnsvr.serving.pipelines.video.decode_request`.
"""

from __future__ import annotations

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.requests import RequestInputs
from dnsvr.serving.pipelines.video import decode_request, text_frames
from dnsvr.serving.triton.base import PythonModel
from dnsvr.training import paths


class TritonPythonModel(PythonModel):
    def setup(self) -> None:
        self.fps = float(self.parameters.get("fps") or spec.DECODE_FPS)
        self.max_frames = int(paths.environment(paths.MAX_FRAMES) or self.parameters.get("max_frames") or 1200)
        self.text = text_frames(self.parameters)

    def handle(self, inputs: RequestInputs) -> dict[str, np.ndarray]:
        return decode_request(inputs, self.fps, self.max_frames, self.text)
