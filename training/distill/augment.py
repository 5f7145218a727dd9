"""Temporal augmentations of the reference student training, and padding videos into a masked batch.

`temporal_augment` works on one video's features `[T, R, D]` (any trailing shape) and returns `[T', R, D]`;
videos of 8 frames or fewer are left as they are.  With probability 0.1 each it drops windows, shuffles
windows, keeps every other frame, doubles every frame (videos under 150 frames) or reverses the video;
otherwise (0.5) the video is unchanged.  Windows are 4 to 15 frames; the video is first extended with its
own start to a whole number of windows.  All randomness comes from the `numpy.random.Generator` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

MIN_AUGMENTED_FRAMES = 9
MAX_FRAMES = 300


def window_drop(video: np.ndarray, rng: np.random.Generator, window: int, keep: float = 0.7) -> np.ndarray:
    """Split into windows of `window` frames (extending with the video's start), keep each with probability
    `keep` (all of them if none survives): `[T, ...]` -> `[k * window, ...]`."""
    windows = _windows(video, window)
    kept = rng.random(len(windows)) < keep
    return (windows[kept] if kept.any() else windows).reshape(-1, *video.shape[1:])


def window_shuffle(video: np.ndarray, rng: np.random.Generator, window: int) -> np.ndarray:
    """Split into windows of `window` frames and permute them: `[T, ...]` -> `[ceil(T / w) * w, ...]`."""
    windows = _windows(video, window)
    return windows[rng.permutation(len(windows))].reshape(-1, *video.shape[1:])


def _windows(video: np.ndarray, window: int) -> np.ndarray:
    """`[T, ...]` -> `[ceil(T / window), window, ...]`, the tail filled with the video's first frames."""
    frames = len(video)
    total = -(-frames // window) * window
    extended = np.concatenate([video, video[: total - frames]]) if total > frames else video
    return extended.reshape(-1, window, *video.shape[1:])


def frame_skip(video: np.ndarray) -> np.ndarray:
    """Every other frame: `[T, ...]` -> `[ceil(T / 2), ...]`."""
    return video[::2]


def frame_duplicate(video: np.ndarray) -> np.ndarray:
    """Every frame twice in a row: `[T, ...]` -> `[2T, ...]`."""
    return np.repeat(video, 2, axis=0)


def reverse(video: np.ndarray) -> np.ndarray:
    """Frames in reverse order, `[T, ...]` -> `[T, ...]`."""
    return video[::-1]


def temporal_augment(video: np.ndarray, rng: np.random.Generator, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """One random temporal augmentation of the reference's scheme (see the module docstring), then at most
    `max_frames` frames: `[T, R, D]` -> `[T', R, D]` (a contiguous copy)."""
    if len(video) >= MIN_AUGMENTED_FRAMES:
        draw = rng.random()
        if draw < 0.2:
            window = int(rng.integers(4, 16))
            video = window_drop(video, rng, window) if draw < 0.1 else window_shuffle(video, rng, window)
        elif draw < 0.3:
            video = frame_skip(video)
        elif draw < 0.4:
            if len(video) < 150:
                video = frame_duplicate(video)
        elif draw < 0.5:
            video = reverse(video)
    return np.ascontiguousarray(video[:max_frames])


def pad_batch(videos: Sequence[np.ndarray | Tensor]) -> tuple[Tensor, Tensor]:
    """Videos `[T_i, R, D]` -> (zero-padded float32 batch `[N, max T_i, R, D]`, mask `[N, max T_i]` bool)."""
    if not videos:
        raise ValueError("pad_batch needs at least one video")
    tensors = [torch.as_tensor(np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v,
                               dtype=torch.float32) for v in videos]
    shape = tensors[0].shape[1:]
    for tensor in tensors:
        if tensor.ndim != 3 or tensor.shape[1:] != shape or tensor.shape[0] == 0:
            raise ValueError(f"videos must be non-empty [T, R, D] of one [R, D]; got {tuple(tensor.shape)} "
                             f"next to {tuple(shape)}")
    longest = max(tensor.shape[0] for tensor in tensors)
    batch = torch.zeros(len(tensors), longest, *shape)
    mask = torch.zeros(len(tensors), longest, dtype=torch.bool)
    for i, tensor in enumerate(tensors):
        batch[i, : tensor.shape[0]] = tensor
        mask[i, : tensor.shape[0]] = True
    return batch, mask
