"""ITQ initialisation of the binarization student."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dnsvr.training.distill.itq import itq, load_itq, quantization_error, random_rotation, sample_regions, save_itq


@pytest.fixture(scope="module")
def regions() -> np.ndarray:
    """Non-negative, correlated 64-d regions like post-ReLU CNN features, L2-normalised: `[3000, 64]`."""
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((16, 64))
    videos = [np.maximum(rng.standard_normal((20, 9, 16)) @ mixing, 0) for _ in range(20)]
    return sample_regions(videos, 3000, rng)


def test_sample_regions_is_bounded_and_normalised(regions):
    assert regions.shape == (3000, 64)
    np.testing.assert_allclose(np.linalg.norm(regions, axis=1), 1.0, rtol=1e-5)
    small = sample_regions([np.ones((2, 3, 8))], 100, np.random.default_rng(0))
    assert small.shape == (6, 8)
    with pytest.raises(ValueError, match="empty"):
        sample_regions([], 10, np.random.default_rng(0))


def test_itq_gives_an_orthogonal_rotation(regions):
    projection = itq(regions, iterations=20)
    assert projection.shape == (64, 64) and projection.dtype == np.float32
    np.testing.assert_allclose(projection.T @ projection, np.eye(64), atol=1e-5)


def test_itq_quantises_better_than_random_rotations(regions):
    error = quantization_error(regions, itq(regions, iterations=20))
    rng = np.random.default_rng(1)
    random_errors = [quantization_error(regions, random_rotation(64, rng)) for _ in range(5)]
    assert error < min(random_errors)


def test_itq_with_fewer_bits_and_bad_arguments(regions):
    projection = itq(regions, bits=32, iterations=5)
    assert projection.shape == (64, 32)
    np.testing.assert_allclose(projection.T @ projection, np.eye(32), atol=1e-5)
    with pytest.raises(ValueError):
        itq(regions, bits=65)
    with pytest.raises(ValueError):
        itq(regions[:1])


def test_itq_file_round_trip_in_the_reference_layout(tmp_path, regions):
    projection = itq(regions, iterations=2)
    path = save_itq(tmp_path / "itq.pth", projection)
    assert set(torch.load(path, weights_only=True)) == {"proj"}
    np.testing.assert_array_equal(load_itq(path).numpy(), projection)
    torch.save({"W": torch.zeros(2, 2)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not an ITQ file"):
        load_itq(tmp_path / "bad.pth")
