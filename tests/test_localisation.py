"""Copy localisation (`dnsvr.training.localisation`): segments found in synthetic similarity maps with known copies,
input errors, and the VSC-style segment precision/recall on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dnsvr.training.localisation import Segment, align, micro_precision_recall, segment_precision_recall
from hypothesis import given, settings
from hypothesis import strategies as st

# A copied segment: (query start row, query end row (exclusive), target start column, target columns per row).
Copy = tuple[int, int, int, float]


def similarity_map(rows: int, cols: int, copies: list[Copy], seed: int = 0) -> np.ndarray:
    """`[rows, cols]` float32 in [-1, 1] like the bundled S^f_B f2f: unrelated frames around 0.5, copies around
    0.85 (`align`'s default threshold, 0.7, lies between)."""
    rng = np.random.default_rng(seed)
    f2f = rng.normal(0.5, 0.07, (rows, cols))
    for q0, q1, t0, speed in copies:
        for i in range(q0, q1):
            first = int(t0 + (i - q0) * speed)
            for j in range(first, min(first + max(int(speed), 1), cols)):
                f2f[i, j] = rng.normal(0.85, 0.08)
    return np.clip(f2f, -1, 1).astype(np.float32)


def box_iou(a: Segment, b: Segment) -> float:
    """Intersection over union of two segments as boxes in the query x target plane."""
    dq = min(a.query_end_s, b.query_end_s) - max(a.query_start_s, b.query_start_s)
    dt = min(a.target_end_s, b.target_end_s) - max(a.target_start_s, b.target_start_s)
    inter = max(dq, 0) * max(dt, 0)
    area = lambda s: (s.query_end_s - s.query_start_s) * (s.target_end_s - s.target_start_s)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def assert_close(found: Segment, q0: float, q1: float, t0: float, t1: float, tolerance: float = 1.0) -> None:
    got = (found.query_start_s, found.query_end_s, found.target_start_s, found.target_end_s)
    assert np.allclose(got, (q0, q1, t0, t1), atol=tolerance), got


def test_identical_copy_is_the_diagonal():
    (found,) = align(similarity_map(40, 40, [(0, 40, 0, 1)]), 1.0, 1.0)
    assert_close(found, 0, 40, 0, 40, tolerance=0)
    assert 0.4 < found.confidence < 0.6  # copies around 0.85: half way from the threshold 0.7 to 1


def test_times_follow_each_side_fps():
    (found,) = align(similarity_map(40, 40, [(0, 40, 0, 1)]), 2.0, 0.25)
    assert_close(found, 0, 20, 0, 160, tolerance=0)


def test_partial_copy_inside_a_longer_target():
    (found,) = align(similarity_map(30, 120, [(5, 15, 70, 1)]), 1.0, 1.0)
    assert_close(found, 5, 15, 70, 80)


@pytest.mark.parametrize("speed", [2.0, 0.5])
def test_speed_change(speed):
    (found,) = align(similarity_map(40, 80, [(0, 30, 5, speed)]), 1.0, 1.0)
    assert_close(found, 0, 30, 5, 5 + 30 * speed, tolerance=1.5)


def test_gap_in_the_middle_keeps_one_segment():
    f2f = similarity_map(40, 40, [(0, 40, 0, 1)])
    f2f[18:21, 18:21] = 0.4  # three frames hidden by an overlay
    (found,) = align(f2f, 1.0, 1.0)
    assert_close(found, 0, 40, 0, 40, tolerance=0)


def test_two_separate_segments_best_first():
    found = align(similarity_map(50, 100, [(0, 10, 0, 1), (25, 50, 60, 1)]), 1.0, 1.0)
    assert len(found) == 2
    assert_close(found[0], 25, 50, 60, 85)  # the longer copy scores higher
    assert_close(found[1], 0, 10, 0, 10)


def test_query_part_repeated_in_the_target():
    found = align(similarity_map(20, 80, [(0, 20, 5, 1), (0, 20, 50, 1)]), 1.0, 1.0)
    assert sorted(round(s.target_start_s) for s in found) == [5, 50]


def test_noise_only_gives_no_segment():
    assert align(similarity_map(60, 60, []), 1.0, 1.0) == []


def test_max_segments_caps_the_answer():
    f2f = similarity_map(50, 100, [(0, 10, 0, 1), (25, 50, 60, 1)])
    assert len(align(f2f, 1.0, 1.0, max_segments=1)) == 1


def test_deterministic():
    f2f = similarity_map(30, 60, [(3, 20, 10, 1)], seed=3)
    assert align(f2f, 1.0, 1.0) == align(f2f.copy(), 1.0, 1.0)


@pytest.mark.parametrize(("f2f", "message"), [
    (np.zeros((0, 5), np.float32), "empty"),
    (np.zeros((2, 3, 4), np.float32), "2-D"),
    (np.zeros(5, np.float32), "2-D"),
    (np.array([[0.1, np.nan]], np.float32), "NaN"),
    (np.array([["a"]]), "real numbers"),
])
def test_bad_matrices_are_named(f2f, message):
    with pytest.raises(ValueError, match=message):
        align(f2f, 1.0, 1.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fps_query": 0.0}, "fps_query"),
    ({"fps_target": math.nan}, "fps_target"),
    ({"gap_penalty": -1.0}, "gap_penalty"),
    ({"max_segments": 0}, "max_segments"),
    ({"threshold": math.inf}, "threshold"),
    ({"threshold": 1.0}, "threshold"),
])
def test_bad_parameters_are_named(kwargs, message):
    arguments = {"fps_query": 1.0, "fps_target": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        align(np.zeros((4, 4), np.float32), **arguments)


def test_segment_must_not_end_before_it_starts():
    with pytest.raises(ValueError, match="ends before"):
        Segment(5.0, 4.0, 0.0, 1.0)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 30), st.integers(8, 30), st.integers(0, 50), st.integers(0, 1000))
def test_random_diagonal_copy_is_recovered(q0, length, t0, seed):
    truth = Segment(q0, q0 + length, t0, t0 + length)
    found = align(similarity_map(60, 80, [(q0, q0 + length, t0, 1)], seed=seed), 1.0, 1.0)
    assert found and box_iou(found[0], truth) > 0.5


def reference_align(f2f: np.ndarray, threshold: float = 0.7, gap_penalty: float = 0.5, min_score: float = 3.0,
                    max_segments: int = 10) -> list[tuple[int, int, int, int, float]]:
    """The module docstring's algorithm written plainly (the whole matrix programmed at every run, no bound, no
    window): each segment as (query row start, end, target column start, end, confidence), at 1 fps."""
    matrix = f2f.astype(np.float32)
    scores = np.maximum((matrix.astype(np.float64) - threshold) / (1 - threshold), -gap_penalty)
    rows, cols = scores.shape
    found = []
    while len(found) < max_segments:
        best = np.zeros((rows, cols))
        step = np.full((rows, cols), -1)
        for i in range(rows):
            for j in range(cols):
                options = [scores[i, j]]  # a path starting here, then the steps (1, 1), (1, 2), (2, 1)
                for di, dj in ((1, 1), (1, 2), (2, 1)):
                    before = best[i - di, j - dj] if i >= di and j >= dj else 0.0
                    options.append(before + (di + dj) / 2 * scores[i, j] if before > 0 else -np.inf)
                k = int(np.argmax(options))
                best[i, j] = max(options[k], 0.0)
                step[i, j] = k - 1 if options[k] > 0 else -1
        end = np.unravel_index(int(best.argmax()), best.shape)
        if best[end] < min_score:
            break
        path, (i, j) = [end], end
        while step[i, j] >= 0:
            di, dj = ((1, 1), (1, 2), (2, 1))[step[i, j]]
            i, j = i - di, j - dj
            path.append((i, j))
        path_rows, path_cols = zip(*path[::-1], strict=True)  # start to end, as the mean adds them
        above = (float(matrix[list(path_rows), list(path_cols)].mean()) - threshold) / (1 - threshold)
        (q0, q1), (t0, t1) = (min(path_rows), max(path_rows) + 1), (min(path_cols), max(path_cols) + 1)
        found.append((q0, q1, t0, t1, min(max(above, 0.0), 1.0)))
        scores[q0:q1, t0:t1] = -1e6
    return found


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 24), st.integers(3, 24), st.lists(st.tuples(st.integers(0, 23), st.integers(1, 12),
                                                                 st.integers(0, 23), st.sampled_from([0.5, 1, 2])),
                                                       max_size=3),
       st.floats(0.3, 0.75), st.integers(0, 1000), st.integers(1, 3))
def test_align_is_the_plain_programme(rows, cols, copies, noise, seed, max_segments):
    """The bound that skips a run and the window a run is limited to change no answer: random maps, from pure
    noise under the threshold to several copies near it, give the plain programme's segments exactly."""
    rng = np.random.default_rng(seed)
    f2f = np.clip(rng.normal(noise, 0.15, (rows, cols)), -1, 1)
    for q0, length, t0, speed in copies:
        for i in range(q0, min(q0 + length, rows)):
            j = int(t0 + (i - q0) * speed)
            if j < cols:
                f2f[i, j] = rng.uniform(0.75, 1.0)
    f2f = f2f.astype(np.float32)
    got = [(s.query_start_s, s.query_end_s, s.target_start_s, s.target_end_s, s.confidence)
           for s in align(f2f, 1.0, 1.0, max_segments=max_segments)]
    assert got == reference_align(f2f, max_segments=max_segments)


def test_unrelated_pair_runs_no_programme(monkeypatch):
    """A pair whose cells all lie under the threshold (most re-ranked hits) is answered by the bound alone."""
    import dnsvr.training.localisation as localisation

    def no_programme(scores):
        raise AssertionError("the programme ran")

    monkeypatch.setattr(localisation, "_local_alignment", no_programme)
    assert align(similarity_map(60, 60, [], seed=3) - 0.2, 1.0, 1.0) == []


def test_metric_exact_match_and_nothing():
    truth = [Segment(0, 10, 20, 30)]
    assert segment_precision_recall(truth, truth) == (1.0, 1.0)
    assert segment_precision_recall([], truth) == (1.0, 0.0)  # nothing claimed, everything missed
    assert segment_precision_recall(truth, []) == (0.0, 1.0)  # a false alarm on a pair without a copy
    assert segment_precision_recall([], []) == (1.0, 1.0)


def test_metric_partial_overlap_by_hand():
    # query axis: predicted [0, 10), true [5, 15): overlap 5 -> precision 5/10, recall 5/10
    # target axis: predicted [0, 20), true [0, 10): overlap 10 -> precision 10/20, recall 10/10
    precision, recall = segment_precision_recall([Segment(0, 10, 0, 20)], [Segment(5, 15, 0, 10)])
    assert precision == pytest.approx(math.sqrt(0.5 * 0.5))
    assert recall == pytest.approx(math.sqrt(0.5 * 1.0))


def test_metric_counts_overlapping_predictions_once():
    # two predictions covering the same query seconds do not double the predicted length
    predicted = [Segment(0, 10, 0, 10), Segment(5, 10, 5, 10)]
    assert segment_precision_recall(predicted, [Segment(0, 10, 0, 10)]) == (1.0, 1.0)


def test_micro_average_sums_lengths_over_pairs():
    # pair 1: perfect, 10 s each axis; pair 2: 10 s predicted on a pair without a copy
    pairs = [([Segment(0, 10, 0, 10)], [Segment(0, 10, 0, 10)]), ([Segment(0, 10, 0, 10)], [])]
    precision, recall = micro_precision_recall(pairs)
    assert precision == pytest.approx(0.5)  # 10 of 20 predicted seconds on each axis
    assert recall == 1.0
