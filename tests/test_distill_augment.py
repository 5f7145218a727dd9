"""Temporal augmentations of the student training and padded batches with masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dnsvr.training.distill.augment import (
    frame_duplicate,
    frame_skip,
    pad_batch,
    reverse,
    temporal_augment,
    window_drop,
    window_shuffle,
)


def numbered(frames: int) -> np.ndarray:
    """A video whose every value is its frame number: `[T, 2, 3]`."""
    return np.broadcast_to(np.arange(frames, dtype=np.float32)[:, None, None], (frames, 2, 3)).copy()


def frame_numbers(video: np.ndarray) -> list[int]:
    return [int(v) for v in video[:, 0, 0]]


def test_simple_temporal_edits():
    video = numbered(9)
    assert frame_numbers(frame_skip(video)) == [0, 2, 4, 6, 8]
    assert frame_numbers(frame_duplicate(video))[:6] == [0, 0, 1, 1, 2, 2]
    assert frame_numbers(reverse(video)) == list(range(8, -1, -1))


def test_windows_are_whole_and_extended_with_the_start():
    rng = np.random.default_rng(0)
    shuffled = frame_numbers(window_shuffle(numbered(10), rng, window=4))
    assert len(shuffled) == 12
    windows = sorted(tuple(shuffled[i:i + 4]) for i in range(0, 12, 4))
    assert windows == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 0, 1)]
    dropped = frame_numbers(window_drop(numbered(40), np.random.default_rng(1), window=5))
    assert 0 < len(dropped) <= 40 and len(dropped) % 5 == 0
    windows = [dropped[i:i + 5] for i in range(0, len(dropped), 5)]
    assert all(w == list(range(w[0], w[0] + 5)) and w[0] % 5 == 0 for w in windows)


def test_window_drop_keeps_everything_when_no_window_survives():
    video = numbered(8)
    assert frame_numbers(window_drop(video, np.random.default_rng(0), window=4, keep=0.0)) == list(range(8))


def test_temporal_augment_is_deterministic_under_a_seed_and_keeps_region_shape():
    video = numbered(30)
    first = [temporal_augment(video, np.random.default_rng(seed)) for seed in range(20)]
    second = [temporal_augment(video, np.random.default_rng(seed)) for seed in range(20)]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.shape[1:] == (2, 3) and a.flags["C_CONTIGUOUS"]
    lengths = {len(a) for a in first}
    assert len(lengths) > 1, "20 seeds should give more than one kind of augmentation"
    assert max(lengths) <= 60 and min(lengths) >= 15


def test_temporal_augment_leaves_short_videos_and_caps_length():
    short = numbered(8)
    for seed in range(10):
        np.testing.assert_array_equal(temporal_augment(short, np.random.default_rng(seed)), short)
    assert len(temporal_augment(numbered(400), np.random.default_rng(0), max_frames=300)) <= 300


def test_pad_batch_pads_with_zeros_and_masks_real_frames():
    videos = [np.ones((3, 2, 4), np.float32), torch.full((5, 2, 4), 2.0)]
    batch, mask = pad_batch(videos)
    assert batch.shape == (2, 5, 2, 4) and batch.dtype == torch.float32
    assert mask.tolist() == [[True, True, True, False, False], [True] * 5]
    assert float(batch[0, 3:].abs().sum()) == 0.0 and float(batch[1].mean()) == 2.0


@pytest.mark.parametrize("videos", [[], [np.zeros((0, 2, 4))], [np.zeros((2, 2, 4)), np.zeros((2, 3, 4))]])
def test_pad_batch_rejects_bad_input(videos):
    with pytest.raises(ValueError):
        pad_batch(videos)
