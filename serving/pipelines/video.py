"""The first step of the `dnsvr_embed` ensemble: a video (or its frames) -> the frames' region features.

    video_features(inputs, decoding, extract, batch) -> {"features": float32 [1, T, 9, 512], "mask": bool [1, T],
                                                         "frame_count": int64 [1], "thumbnail": BYTES [1] (JPEG
                                                         of the middle frame)} + what `decoding.text` adds (below)

Decoding: PyAV via `dnsvr.training.data.video.sampled_frames`, `fps` frames per second by presentation time,
shorter side 256, centre crop 224; longer videos are cut at `max_frames`.  Given frames uint8 [T, 224, 224, 3]
are checked instead.  Corrupt, empty or non-video bytes -> BadRequest.  Clips under MIN_FRAMES frames are
repeated (`pad_frames`; the features of the repeated frames, which are the repeated features).

Side by side: an encoded video is decoded on a thread of its own (`background.in_background`) while the frames
already decoded go to `extract`, `decoding.chunk` at a time; the decoder and the extractor each keep a core busy
instead of taking turns (`benchmarks/embed_bench.py`); the decoding threads run at a lower priority
(DECODE_NICENESS), so that the extractor keeps pace with them instead of working alone through a backlog after
the decode ends (`benchmarks/revision_ab_bench.py`).  Given frames go to `extract` `batch` at a time.
`extract` is the extractor network (`spec.extractor(kind)`), which takes at most its max batch of frames per
request (Triton's batch axis is the frame axis): an ensemble alone can neither loop nor overlap, hence this step.

A text-video student reads at most its `max_frames` of the sampled frames before any repetition, chosen
uniformly (`clip_frames.select_frame_indices`, the official loaders' rule), from the same decode
(`text_frames(parameters)`, by the student's kind):
    ClipCrops (TeachCLIP)          "clip_frames" uint8 [1, n, S, S, 3] (crops of the native frames),
                                   "clip_mask" bool [1, n]
    FramePositions (offline)       "text_features" float32 [1, n, 1280] (the extractor's `pooled` output at
                                   those frames), "text_mask" bool [1, n]
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.background import in_background
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs, bytes_array
from dnsvr.serving.pipelines.thumbnails import video_thumbnail
from dnsvr.training import paths
from dnsvr.training.data.clip_frames import resize_and_crop, select_frame_indices
from dnsvr.training.data.video import VideoDecodeError, pad_frames, sampled_frames

Extract = Callable[[np.ndarray], dict[str, np.ndarray]]  # uint8 [n, 224, 224, 3] -> {"features": [n, 9, 512], ...}
DECODE_AHEAD = 16  # decoded frames the decoding thread may hold ahead of the extractor
DECODE_NICENESS = 5  # the decoding threads yield the cores to the extractor: it keeps pace instead of finishing alone


@dataclass(frozen=True)
class ClipCrops:
    """A TeachCLIP student's frames: CLIP crops (`size` px) of at most `max_frames` sampled frames."""

    size: int
    max_frames: int

    @property
    def clip_size(self) -> int:
        """The crops the decoder makes of the native frames."""
        return self.size

    def outputs(self, frames: np.ndarray, crops: list[np.ndarray] | None, pooled: np.ndarray | None
                ) -> dict[str, np.ndarray]:
        """The sampled frames uint8 [T, 224, 224, 3] (before repetition) and, for a decoded video, their crops of
        the native frames (None: given frames, cropped here) -> this student's outputs."""
        chosen = select_frame_indices(len(frames), self.max_frames)
        picked = [crops[i] if crops is not None else resize_and_crop(frames[i], self.size) for i in chosen]
        return {"clip_frames": np.ascontiguousarray(np.stack(picked)[None]),
                "clip_mask": np.ones((1, len(picked)), bool)}


@dataclass(frozen=True)
class FramePositions:
    """The offline student's frames: the pooled features of at most `max_frames` sampled frames."""

    max_frames: int
    clip_size = None

    def outputs(self, frames: np.ndarray, crops: list[np.ndarray] | None, pooled: np.ndarray | None
                ) -> dict[str, np.ndarray]:
        """The sampled frames (before repetition) and the extractor's pooled features of each, float32 [T, 1280]
        -> this student's outputs."""
        if pooled is None:
            raise ValueError("the offline text-video student reads the extractor's pooled features")
        chosen = select_frame_indices(len(frames), self.max_frames)
        return {"text_features": np.ascontiguousarray(pooled[chosen][None]),
                "text_mask": np.ones((1, len(chosen)), bool)}


TextFrames = ClipCrops | FramePositions
TEXT_FRAMES: dict[str, Callable[[dict[str, str]], TextFrames]] = {  # kind -> from video_features' parameters
    spec.TEACHCLIP.name: lambda p: ClipCrops(int(p["clip_size"]), int(p["text_max_frames"])),
    spec.OFFLINE_MINILM_EFFNET.name: lambda p: FramePositions(int(p["text_max_frames"])),
}


def text_frames(parameters: dict[str, str]) -> TextFrames | None:
    """What video_features gives the text-video student, from its config parameters (`text_kind`,
    `text_max_frames`, TeachCLIP's `clip_size`); None without a student."""
    kind = parameters.get("text_kind")
    return TEXT_FRAMES[kind](parameters) if kind else None


@dataclass(frozen=True)
class Decoding:
    """How video_features decodes: `fps`, at most `max_frames` frames, `chunk` frames per extractor request
    while decoding, and what the text-video student reads (`text`, None without one)."""

    fps: float
    max_frames: int
    text: TextFrames | None = None
    chunk: int = spec.DECODE_CHUNK_FRAMES

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> Decoding:
        """A decoding pipeline's config parameters (`fps`, `max_frames`, $DNSVR_MAX_FRAMES over it,
        `chunk_frames`, the text-video student's; defaults for those unset) -> its Decoding."""
        return cls(fps=float(parameters.get("fps") or spec.DECODE_FPS),
                   max_frames=int(paths.environment(paths.MAX_FRAMES) or parameters.get("max_frames") or 1200),
                   text=text_frames(parameters),
                   chunk=int(parameters.get("chunk_frames") or spec.DECODE_CHUNK_FRAMES))


def video_features(inputs: RequestInputs, decoding: Decoding, extract: Extract,
                   batch: int = spec.FEATURE_EXTRACTOR.max_batch_size) -> dict[str, np.ndarray]:
    """`video_features`' outputs for one request: its `video` decoded while the extractor runs on the frames
    decoded so far, or its `frames` checked and run `batch` at a time (see the module)."""
    video = checked_video(inputs, decoding)
    crops: list[np.ndarray] | None = None
    if isinstance(video, np.ndarray):
        frames = video
        parts = [extract(frames[start:start + batch]) for start in range(0, len(frames), batch)]
    else:
        try:
            frames, crops, parts = _decoded_features(video, decoding, extract)
        except VideoDecodeError as error:
            raise BadRequest(str(error)) from None
    outputs = _features(parts, frames)
    if decoding.text:
        pooled = np.concatenate([part["pooled"] for part in parts]) if "pooled" in parts[0] else None
        outputs |= decoding.text.outputs(frames, crops, pooled)
    return outputs


def checked_video(inputs: RequestInputs, decoding: Decoding) -> np.ndarray | bytes:
    """A request's given `frames` uint8 [T, 224, 224, 3] (1 <= T <= `decoding.max_frames`) or its encoded `video`'s
    bytes (not empty); BadRequest naming the problem."""
    given = inputs.video()
    if "frames" in given:
        frames = given["frames"]
        if len(frames) == 0:
            raise BadRequest("frames holds 0 frames")
        if len(frames) > decoding.max_frames:
            raise BadRequest(f"frames holds {len(frames)} frames, the maximum is {decoding.max_frames}")
        return frames
    data = given["video"].reshape(-1)[0]
    if not isinstance(data, bytes) or not data:
        raise BadRequest("video is empty (0 bytes)")
    return data


def frame_chunks(video: np.ndarray | bytes, decoding: Decoding) -> Iterator[np.ndarray]:
    """`checked_video`'s frames, or the encoded video decoded as video_features decodes it (on a thread of its
    own), in chunks uint8 [n <= decoding.chunk, 224, 224, 3]; VideoDecodeError on a corrupt video."""
    if isinstance(video, np.ndarray):
        for start in range(0, len(video), decoding.chunk):
            yield video[start:start + decoding.chunk]
        return
    for chunk in _decoded_chunks(video, decoding):
        yield np.stack([frame for frame, _ in chunk])


def _decoded_features(data: bytes, decoding: Decoding, extract: Extract
                      ) -> tuple[np.ndarray, list[np.ndarray] | None, list[dict[str, np.ndarray]]]:
    """Encoded video -> (its sampled frames [T, 224, 224, 3], the text student's crops or None, the extractor's
    outputs chunk by chunk), the extractor running while the next frames decode."""
    clip_size = decoding.text.clip_size if decoding.text else None
    chunks, crops, parts = [], [], []
    for chunk in _decoded_chunks(data, decoding, clip_size):
        chunks.append(np.stack([frame for frame, _ in chunk]))
        crops.extend(crop for _, crop in chunk)
        parts.append(extract(chunks[-1]))
    return np.concatenate(chunks), (crops if clip_size else None), parts


def _decoded_chunks(data: bytes, decoding: Decoding, clip_size: int | None = None
                    ) -> Iterator[list[tuple[np.ndarray, np.ndarray | None]]]:
    """The encoded video decoded on a thread of its own (at most DECODE_AHEAD frames ahead of the consumer), in
    lists of `decoding.chunk` (model frame uint8 [224, 224, 3], the text student's crop of `clip_size` or None);
    VideoDecodeError on a corrupt video."""
    decoded = sampled_frames(data, decoding.fps, crop=spec.FRAME_SIZE, max_frames=decoding.max_frames,
                             clip_size=clip_size)
    with in_background(_behind_extraction(decoded), depth=DECODE_AHEAD, name="decode") as frames:
        yield from _chunks(frames, decoding.chunk)


def _behind_extraction(items: Iterator) -> Iterator:
    """`items`, produced by a thread that first lowers its own priority by DECODE_NICENESS (Linux: the nice value
    is a thread's, and the threads it starts, FFmpeg's and the keyframe decoders', inherit it; it ends with
    `in_background`'s thread)."""
    thread = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + DECODE_NICENESS)
    yield from items


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    """`items` in lists of `size` (the last one shorter)."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _features(parts: list[dict[str, np.ndarray]], frames: np.ndarray) -> dict[str, np.ndarray]:
    """The extractor's outputs for the sampled `frames` [T, 224, 224, 3] -> the DnS outputs, a short clip
    repeated to MIN_FRAMES (its thumbnail: the middle one of the repeated frames)."""
    features = pad_frames(np.concatenate([part["features"] for part in parts]), spec.MIN_FRAMES)  # [T', 9, 512]
    middle = (len(features) // 2) % len(frames)
    return {"features": features[None], "mask": np.ones((1, len(features)), bool),
            "frame_count": np.array([len(features)], np.int64),
            "thumbnail": bytes_array([video_thumbnail(frames[middle:middle + 1])])}
