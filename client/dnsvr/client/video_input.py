"""What the client sends for a video: a path or bytes -> `video` (the encoded file), a uint8 frame array ->
`frames`.  Checked here so that a wrong input fails before any network traffic."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from dnsvr.client import spec
from dnsvr.client.errors import InvalidVideo

VideoLike = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray
MAX_VIDEO_BYTES = 2 << 30


def video_tensor(video: VideoLike) -> tuple[str, np.ndarray]:
    """(input name, array): `video` BYTES [1] for a path or bytes, `frames` uint8 [T, 224, 224, 3] for an
    array (RGB, 224 x 224 centre crops, as `dnsvr.training.data.video.decode_video` gives).  Raises InvalidVideo."""
    if isinstance(video, np.ndarray):
        return "frames", _checked_frames(video)
    if isinstance(video, (bytes, bytearray, memoryview)):
        data = bytes(video)
        where = "video bytes"
    elif isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if not path.is_file():
            raise InvalidVideo(f"{path}: no such file")
        if path.stat().st_size > MAX_VIDEO_BYTES:
            raise InvalidVideo(f"{path}: {path.stat().st_size} bytes, over the {MAX_VIDEO_BYTES} byte limit")
        data = path.read_bytes()
        where = str(path)
    else:
        raise InvalidVideo(f"video must be a path, bytes or a uint8 frame array, got {type(video).__name__}")
    if not data:
        raise InvalidVideo(f"{where}: empty (0 bytes)")
    return "video", np.array([data], dtype=np.object_)


def _checked_frames(frames: np.ndarray) -> np.ndarray:
    expected = (spec.FRAME_SIZE, spec.FRAME_SIZE, 3)
    if frames.dtype != np.uint8:
        raise InvalidVideo(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[1:] != expected:
        raise InvalidVideo(f"frames must have shape [T, {', '.join(map(str, expected))}], got {list(frames.shape)}")
    if frames.shape[0] == 0:
        raise InvalidVideo("frames holds 0 frames")
    return np.ascontiguousarray(frames)
