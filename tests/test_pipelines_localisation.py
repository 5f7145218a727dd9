"""dnsvr.serving.pipelines.localisation: a search's f2f matrices -> each re-ranked hit's copied segments, and
the segment tensors of dnsvr_search."""

from __future__ import annotations

import numpy as np
import pytest
from dnsvr.client import spec
from dnsvr.serving.pipelines.localisation import hit_segments, segment_outputs
from dnsvr.training.localisation import Segment


def copied(rows: int, cols: int, offset: int, length: int) -> np.ndarray:
    """f2f `[rows, cols]` of unrelated frames (0.5) with query frames 0..length-1 copied at target `offset`."""
    f2f = np.full((rows, cols), 0.5, np.float32)
    f2f[np.arange(length), offset + np.arange(length)] = 1.0
    return f2f


def test_reranked_hits_get_segments_in_seconds_and_the_others_none():
    f2f = {"copy": copied(6, 20, offset=10, length=6), "other": np.full((6, 9), 0.5, np.float32),
           "coarse": copied(6, 6, 0, 6)}
    found = hit_segments(f2f, ["copy", "coarse", "other"], np.array([True, False, True]), fps=2.0)
    assert found == [[Segment(0.0, 3.0, 5.0, 8.0, 1.0)], [], []]  # frame i at i / 2 s; 'coarse' not re-ranked


def test_a_hit_marked_reranked_needs_its_matrix():
    with pytest.raises(KeyError):
        hit_segments({}, ["gone"], np.array([True]), fps=1.0)


def test_segment_outputs_flatten_the_hits_segments_in_order():
    first, second = Segment(0.0, 4.0, 10.0, 14.0, 0.9), Segment(5.0, 6.0, 1.0, 2.0, 0.25)
    outputs = segment_outputs([[], [first, second], [], [first]])
    assert outputs["segment_hits"].tolist() == [1, 1, 3]
    np.testing.assert_array_equal(outputs["segment_times"], [[0, 4, 10, 14], [5, 6, 1, 2], [0, 4, 10, 14]])
    np.testing.assert_allclose(outputs["segment_confidences"], [0.9, 0.25, 0.9])
    for tensor in spec.SEGMENT_OUTPUTS:
        assert outputs[tensor.name].dtype == tensor.numpy_dtype and outputs[tensor.name].ndim == len(tensor.dims)
    empty = segment_outputs([[], []])
    assert empty["segment_hits"].shape == (0,) and empty["segment_times"].shape == (0, 4)
