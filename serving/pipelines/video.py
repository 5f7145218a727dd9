"""The two python steps of the `dnsvr_embed` ensemble: decode a video, then region features in chunks.

    decode_request(inputs, fps, max_frames, text) -> {"frames": uint8 [T, 224, 224, 3], "mask": bool [1, T],
                                                      "frame_count": int64 [1], "thumbnail": BYTES [1] (JPEG of
                                                      the middle frame)} + what `text` adds (below)
    frame_features(frames [T, 224, 224, 3], extract, chunk, text_frames) -> {"features": float32 [1, T, 9, 512]}
        + "text_features" float32 [1, n, 1280]: the pooled features at `text_frames` int64 [1, n], when given

Decoding: PyAV via `dnsvr.training.data.video.decode_video`, `fps` frames per second by presentation time,
shorter side 256, centre crop 224; clips under MIN_FRAMES frames are repeated; longer videos are cut at
`max_frames`.  Given frames are checked instead.  Corrupt, empty or non-video bytes -> BadRequest.

A text-video student reads at most its `max_frames` of the sampled frames before any repetition, chosen
uniformly (`clip_frames.select_frame_indices`, the official loaders' rule), from the same decode
(`text_frames(parameters)`, by the student's kind):
    ClipCrops (TeachCLIP)          "clip_frames" uint8 [1, n, S, S, 3] (crops of the native frames,
                                   `decode_video_with_crops`), "clip_mask" bool [1, n]
    FramePositions (offline)       "text_frames" int64 [1, n] (positions in `frames`), "text_mask" bool [1, n];
                                   frame_features then gathers those frames' pooled EfficientNet-Lite0 features
`extract` is the extractor network (`spec.extractor(kind)`), which takes at most `chunk` frames per request
(Triton's batch axis is the frame axis); an ensemble alone cannot loop, hence this step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs, bytes_array
from dnsvr.serving.pipelines.thumbnails import video_thumbnail
from dnsvr.training.data.clip_frames import resize_and_crop, select_frame_indices
from dnsvr.training.data.video import VideoDecodeError, decode_video, decode_video_with_crops, pad_frames


@dataclass(frozen=True)
class ClipCrops:
    """A TeachCLIP student's frames: CLIP crops (`size` px) of at most `max_frames` sampled frames."""

    size: int
    max_frames: int

    def decode(self, data: bytes, fps: float, max_frames: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Encoded video -> (the DnS frames, repeated to MIN_FRAMES; this student's outputs)."""
        frames, crops = decode_video_with_crops(data, self.size, self.max_frames, fps=fps, crop=spec.FRAME_SIZE,
                                                max_frames=max_frames, min_frames=spec.MIN_FRAMES)
        return frames, self._outputs(crops)

    def given(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Given frames uint8 [T, 224, 224, 3] (before repetition) -> this student's outputs."""
        chosen = select_frame_indices(len(frames), self.max_frames)
        return self._outputs(np.stack([resize_and_crop(frames[i], self.size) for i in chosen]))

    @staticmethod
    def _outputs(crops: np.ndarray) -> dict[str, np.ndarray]:
        return {"clip_frames": np.ascontiguousarray(crops[None]), "clip_mask": np.ones((1, len(crops)), bool)}


@dataclass(frozen=True)
class FramePositions:
    """The offline student's frames: positions of at most `max_frames` sampled frames among the DnS frames."""

    max_frames: int

    def decode(self, data: bytes, fps: float, max_frames: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Encoded video -> (the DnS frames, repeated to MIN_FRAMES; this student's outputs)."""
        frames = decode_video(data, fps=fps, crop=spec.FRAME_SIZE, max_frames=max_frames, min_frames=0)
        return pad_frames(frames, spec.MIN_FRAMES), self.given(frames)

    def given(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Given frames uint8 [T, 224, 224, 3] (before repetition) -> this student's outputs."""
        chosen = select_frame_indices(len(frames), self.max_frames)
        return {"text_frames": chosen[None], "text_mask": np.ones((1, len(chosen)), bool)}


TextFrames = ClipCrops | FramePositions
TEXT_FRAMES: dict[str, Callable[[dict[str, str]], TextFrames]] = {  # kind -> from video_decode's parameters
    spec.TEACHCLIP.name: lambda p: ClipCrops(int(p["clip_size"]), int(p["text_max_frames"])),
    spec.OFFLINE_MINILM_EFFNET.name: lambda p: FramePositions(int(p["text_max_frames"])),
}


def text_frames(parameters: dict[str, str]) -> TextFrames | None:
    """What video_decode gives the text-video student, from its config parameters (`text_kind`,
    `text_max_frames`, TeachCLIP's `clip_size`); None without a student."""
    kind = parameters.get("text_kind")
    return TEXT_FRAMES[kind](parameters) if kind else None


def decode_request(inputs: RequestInputs, fps: float, max_frames: int,
                   text: TextFrames | None = None) -> dict[str, np.ndarray]:
    """`video_decode`'s outputs for one request: the request's `video` decoded, or its `frames` checked; with a
    text-video student (`text`), what it reads of them too."""
    given = inputs.video()
    extra: dict[str, np.ndarray] = {}
    if "frames" in given:
        frames = given["frames"]
        if len(frames) == 0:
            raise BadRequest("frames holds 0 frames")
        if len(frames) > max_frames:
            raise BadRequest(f"frames holds {len(frames)} frames, the maximum is {max_frames}")
        extra = text.given(frames) if text else {}
        frames = pad_frames(frames, spec.MIN_FRAMES)
    else:
        data = given["video"].reshape(-1)[0]
        if not isinstance(data, bytes) or not data:
            raise BadRequest("video is empty (0 bytes)")
        try:
            if text:
                frames, extra = text.decode(data, fps, max_frames)
            else:
                frames = decode_video(data, fps=fps, crop=spec.FRAME_SIZE, max_frames=max_frames,
                                      min_frames=spec.MIN_FRAMES)
        except VideoDecodeError as error:
            raise BadRequest(str(error)) from None
    return {"frames": np.ascontiguousarray(frames), "mask": np.ones((1, len(frames)), bool),
            "frame_count": np.array([len(frames)], np.int64), "thumbnail": bytes_array([video_thumbnail(frames)]),
            **extra}


def frame_features(frames: np.ndarray, extract: Callable[[np.ndarray], dict[str, np.ndarray]],
                   chunk: int = spec.FEATURE_EXTRACTOR.max_batch_size,
                   text_frames: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """uint8 [T, 224, 224, 3] -> {"features": float32 [1, T, 9, 512]}, `extract` called on at most `chunk` frames
    at a time; with `text_frames` int64 [1, n] (positions in `frames`), also {"text_features": [1, n, 1280]}: the
    `pooled` output of `extract` at those frames."""
    if len(frames) == 0:
        raise BadRequest("frames holds 0 frames")
    parts = [extract(frames[start:start + chunk]) for start in range(0, len(frames), chunk)]
    outputs = {"features": np.concatenate([part["features"] for part in parts])[None]}
    if text_frames is None:
        return outputs
    shape, dtype = text_frames.shape, text_frames.dtype
    if len(shape) != 2 or shape[0] != 1 or shape[1] == 0 or not np.issubdtype(dtype, np.integer):
        raise BadRequest(f"text_frames must be integer positions [1, n >= 1], got {dtype} {list(shape)}")
    positions = text_frames[0]
    if positions.min() < 0 or positions.max() >= len(frames):
        raise BadRequest(f"text_frames must be positions in 0..{len(frames) - 1}, got {positions.tolist()}")
    pooled = np.concatenate([part["pooled"] for part in parts])  # [T, 1280]
    return outputs | {"text_features": np.ascontiguousarray(pooled[positions][None])}
