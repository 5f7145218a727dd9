"""The two python steps of the `dnsvr_embed` ensemble: decode a video, then region features in chunks.

    decode_request(inputs, fps, max_frames, clip) -> {"frames": uint8 [T, 224, 224, 3], "mask": bool [1, T],
                                                      "frame_count": int64 [1]}
        + with a text-video student (clip = (size S, max_frames M)): "clip_frames": uint8 [1, n, S, S, 3],
          "clip_mask": bool [1, n], n = min(frames before repetition, M), chosen uniformly
    frame_features(frames [T, 224, 224, 3], extract, chunk) -> float32 [1, T, 9, 512]

Decoding: PyAV via `dnsvr.training.data.video.decode_video`, `fps` frames per second by presentation time,
shorter side 256, centre crop 224; clips under MIN_FRAMES frames are repeated; longer videos are cut at
`max_frames`.  Given frames are checked instead.  Corrupt, empty or non-video bytes -> BadRequest.  The text-video
student's crops come from the same decode (`decode_video_with_crops`), or from the given frames.
`extract` is the `feature_extractor` network, which takes at most `chunk` frames per request (Triton's batch
axis is the frame axis); an ensemble alone cannot loop, hence this step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs
from dnsvr.training.data.clip_frames import resize_and_crop, select_frame_indices
from dnsvr.training.data.video import VideoDecodeError, decode_video, decode_video_with_crops, pad_frames

ClipShape = tuple[int, int]  # the text-video student's (crop size, max frames)


def decoded_frames(inputs: RequestInputs, fps: float, max_frames: int,
                   clip: ClipShape | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The request's `video` decoded, or its `frames` checked -> (uint8 [T, 224, 224, 3], the text-video
    student's crops uint8 [n, S, S, 3] when `clip` = (S, max frames) is given, else None)."""
    given = inputs.video()
    if "frames" in given:
        frames = given["frames"]
        if len(frames) == 0:
            raise BadRequest("frames holds 0 frames")
        if len(frames) > max_frames:
            raise BadRequest(f"frames holds {len(frames)} frames, the maximum is {max_frames}")
        crops = None
        if clip is not None:
            crops = np.stack([resize_and_crop(frames[i], clip[0]) for i in select_frame_indices(len(frames), clip[1])])
        return np.ascontiguousarray(pad_frames(frames, spec.MIN_FRAMES)), crops
    data = given["video"].reshape(-1)[0]
    if not isinstance(data, bytes) or not data:
        raise BadRequest("video is empty (0 bytes)")
    try:
        if clip is not None:
            return decode_video_with_crops(data, clip[0], clip[1], fps=fps, crop=spec.FRAME_SIZE,
                                           max_frames=max_frames, min_frames=spec.MIN_FRAMES)
        return decode_video(data, fps=fps, crop=spec.FRAME_SIZE, max_frames=max_frames,
                            min_frames=spec.MIN_FRAMES), None
    except VideoDecodeError as error:
        raise BadRequest(str(error)) from None


def decode_request(inputs: RequestInputs, fps: float, max_frames: int,
                   clip: ClipShape | None = None) -> dict[str, np.ndarray]:
    """`video_decode`'s outputs for one request."""
    frames, crops = decoded_frames(inputs, fps, max_frames, clip)
    outputs = {"frames": frames, "mask": np.ones((1, len(frames)), bool),
               "frame_count": np.array([len(frames)], np.int64)}
    if crops is not None:
        outputs |= {"clip_frames": np.ascontiguousarray(crops[None]), "clip_mask": np.ones((1, len(crops)), bool)}
    return outputs


def frame_features(frames: np.ndarray, extract: Callable[[np.ndarray], np.ndarray],
                   chunk: int = spec.FEATURE_EXTRACTOR.max_batch_size) -> np.ndarray:
    """uint8 [T, 224, 224, 3] -> float32 [1, T, 9, 512], `extract` called on at most `chunk` frames at a time."""
    if len(frames) == 0:
        raise BadRequest("frames holds 0 frames")
    return np.concatenate([extract(frames[start:start + chunk]) for start in range(0, len(frames), chunk)])[None]
