"""Triton python model `video_decode`: an encoded video (or RGB frames) -> the frames the extractor takes.

Copied as `<repository>/video_decode/1/model.py` by `dnsvr.serving.pipeline_configs.install_pipelines`.
    video  BYTES [1] (file bytes)  or  frames uint8 [T, 224, 224, 3]
    -> frames uint8 [T', 224, 224, 3], mask bool [1, T'] (all True), frame_count int64 [1]
Decoding: PyAV via `dnsvr.training.data.video.decode_video`, 1 frame per second by presentation time, shorter
side 256, centre crop 224; clips under MIN_FRAMES frames are repeated.  Config parameters: `fps` (default
1), `max_frames` (default 1200: longer videos are cut there; env DNSVR_MAX_FRAMES overrides).  Corrupt,
empty or non-video bytes -> invalid_video error.
"""

from __future__ import annotations

import os

import numpy as np
import triton_python_backend_utils as pb_utils
from dnsvr.client import spec
from dnsvr.serving.triton.base import BadRequest, error_response, parameters, video_inputs
from dnsvr.training.data.video import VideoDecodeError, decode_video, pad_frames


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        self.fps = float(params.get("fps") or 1.0)
        self.max_frames = int(os.environ.get("DNSVR_MAX_FRAMES") or params.get("max_frames") or 1200)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                frames = self._frames(video_inputs(request))
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("frames", frames),
                    pb_utils.Tensor("mask", np.ones((1, len(frames)), bool)),
                    pb_utils.Tensor("frame_count", np.array([len(frames)], np.int64)),
                ]))
            except Exception as error:
                responses.append(error_response("video_decode", error))
        return responses

    def _frames(self, given: dict[str, np.ndarray]) -> np.ndarray:
        if "frames" in given:
            frames = given["frames"]
            if len(frames) == 0:
                raise BadRequest("frames holds 0 frames")
            if len(frames) > self.max_frames:
                raise BadRequest(f"frames holds {len(frames)} frames, the maximum is {self.max_frames}")
            return np.ascontiguousarray(pad_frames(frames, spec.MIN_FRAMES))
        data = given["video"].reshape(-1)[0]
        if not isinstance(data, bytes) or not data:
            raise BadRequest("video is empty (0 bytes)")
        try:
            return decode_video(data, fps=self.fps, crop=spec.FRAME_SIZE, max_frames=self.max_frames,
                                min_frames=spec.MIN_FRAMES)
        except VideoDecodeError as error:
            raise BadRequest(str(error)) from None
