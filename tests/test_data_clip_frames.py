"""CLIP frame preprocessing (dnsvr.training.data.clip_frames) against the official loader's pixels
(golden_t2v/teachclip_student.npz)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dnsvr.training.data.clip_frames import preprocess_video, preprocess_videos, resize_and_crop, select_frame_indices
from PIL import Image

MAX_FRAMES = 12
SIZE = 96


@pytest.fixture(scope="module")
def golden(golden_t2v):
    return np.load(golden_t2v / "teachclip_student.npz")


def raw_videos(z) -> list[np.ndarray]:
    spans = zip(z["raw_frame_offsets"], z["raw_frame_counts"], strict=True)
    return [z["raw_frames_uint8"][offset : offset + count] for offset, count in spans]


def test_pixels_and_mask_are_bit_exact(golden):
    pixels, mask = preprocess_videos(raw_videos(golden), max_frames=MAX_FRAMES, size=SIZE)
    assert pixels.dtype == torch.float32 and mask.dtype == torch.bool
    assert torch.equal(pixels, torch.from_numpy(golden["pixels"]))
    assert torch.equal(mask, torch.from_numpy(golden["video_mask"]).bool())


def test_selected_raw_index(golden):
    for b, video in enumerate(raw_videos(golden)):
        kept = select_frame_indices(len(video), MAX_FRAMES)
        expected = golden["selected_raw_index"][b]
        assert kept.dtype == np.int64
        np.testing.assert_array_equal(kept, expected[expected >= 0])


def test_padded_slots_are_exactly_zero(golden):
    pixels, mask = preprocess_video(raw_videos(golden)[3], max_frames=MAX_FRAMES, size=SIZE)
    assert mask.tolist() == [True] + [False] * (MAX_FRAMES - 1)
    assert not pixels[1:].any()


def test_frame_selection_edges():
    assert select_frame_indices(12, 12).tolist() == list(range(12))
    assert select_frame_indices(3, 12).tolist() == [0, 1, 2]
    assert select_frame_indices(100, 4).tolist() == [0, 33, 66, 99]


def test_portrait_frames_are_resized_on_the_width_and_cropped_at_the_rounded_centre():
    frame = np.random.default_rng(0).integers(0, 256, size=(81, 60, 3), dtype=np.uint8)
    crop = resize_and_crop(frame, SIZE)
    assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
    resized = np.asarray(Image.fromarray(frame).resize((SIZE, 129), Image.Resampling.BICUBIC))  # int(96 * 81 / 60)
    np.testing.assert_array_equal(crop, resized[16 : 16 + SIZE])  # round(16.5) = 16: half to even


@pytest.mark.parametrize("bad_frames", [
    np.zeros((2, 8, 8, 3), dtype=np.float32),
    np.zeros((8, 8, 3), dtype=np.uint8),
    np.zeros((2, 8, 8, 4), dtype=np.uint8),
    np.zeros((0, 8, 8, 3), dtype=np.uint8),
])
def test_bad_frames_are_refused(bad_frames):
    with pytest.raises(ValueError):
        preprocess_video(bad_frames, MAX_FRAMES, SIZE)
