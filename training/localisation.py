"""Copy localisation: where, inside a near-duplicate pair, the copied segments are, and how well that is scored.

    align(f2f [Tq, Tt], fps_query, fps_target) -> [Segment, ...]   best first, at most `max_segments`
    segment_precision_recall(predicted, truth)  -> (precision, recall) of one pair
    micro_precision_recall([(predicted, truth), ...]) -> (precision, recall) over many pairs

The matrix `align` expects is one pair's frame-to-frame similarity matrix as the fine student builds it before
its comparator CNN: `FineGrainedStudent.frame_to_frame_similarity` (region Chamfer; S^f_B: the ±1 codes' inner
products / 512, what serving's Hamming kernel computes; S^f_A: cosines), `[Tq, Tt]` at the decode fps (1 fps in
serving), values in [-1, 1].  The default threshold 0.7 is measured on the bundled S^f_B over the real clips of
`benchmarks/localisation_bench.py` (decoded at 2 fps): unrelated frames median 0.54, 99.9 % below 0.70, max 0.71;
copied frames (re-encodes included) 5 % quantile 0.78, median 1.0.  The comparator's Hardtanh output
(`similarity_matrix`, `[Tq//4, Tt//4]`, pass fps / 4) also works, but its 4-frame cells blur the boundaries and
on the bundled student its unrelated cells are not negative (about 0.5-0.6 on those clips): set the threshold
from data there.

Algorithm (local alignment, repeated):

1. cell score s = (f2f - threshold) / (1 - threshold), floored at -gap_penalty: a cell at similarity 1 gains 1,
   one at the threshold 0, the rest cost at most gap_penalty;
2. a Smith-Waterman-style dynamic programme over the matrix, row by row (vectorised along the target axis):
   H[i, j] = max(0, best predecessor + step weight * s[i, j]) with steps (1, 1), (1, 2) and (2, 1), so a path
   follows any speed ratio between 0.5 and 2; the step weight (di + dj) / 2 makes a path's score about
   mean(s) x (query length + target length) / 2 whatever its slope, and a few weak cells (a gap, an overlay)
   cost less than the copied cells around them gain;
3. the best cell ends a segment; backtracking to where the path's score started from 0 gives its start; the
   segment is its bounding box (query interval x target interval) and its confidence the mean of
   (f2f - threshold) / (1 - threshold) along the path, clipped to [0, 1] (1: every frame identical, 0: at the
   threshold);
4. the box is blocked and the programme runs again, until the best score is below `min_score` or
   `max_segments` segments are found: a query part copied twice into the target gives two segments.

Work skipped, the answer unchanged: before each run, a bound of every path's score (`_path_bound`: a path holds
at most one cell per row and per column, each gaining at most 1.5 times its score above 0) below `min_score`
ends the search without a programme (an unrelated pair, most re-ranked hits, costs a few reductions), and the
programme runs only over the rows and columns from the first to the last cell above the threshold
(`_gaining_window`): a path can only start at such a cell, and never ends on a better score after the last.

Deterministic: ties go to the first cell in row-major order and to the diagonal step.

Metrics follow the VSC 2022 matching track: a segment is a box in the query x target time plane; along each axis,
precision = |union(predicted) & union(true)| / |union(predicted)| and recall = the same over |union(true)|; a
pair's precision (recall) is the geometric mean of its two axes'.  Over many pairs the lengths are summed per axis
before dividing (micro average).  Times are in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

STEPS = ((1, 1), (1, 2), (2, 1))  # (query rows, target columns) per DP step; diagonal first wins ties
BLOCKED = -1e6  # cell score inside an already reported segment's box
BOUND_SLACK = 1e-9  # `_path_bound` is compared with this much room for the rounding of the programme's sums


@dataclass(frozen=True)
class Segment:
    """One copied segment: query [query_start_s, query_end_s) matches target [target_start_s, target_end_s).

    confidence in [0, 1]: how far above `align`'s threshold the similarities along the alignment path lie (1 for
    ground truth).
    """

    query_start_s: float
    query_end_s: float
    target_start_s: float
    target_end_s: float
    confidence: float = 1.0

    def __post_init__(self) -> None:
        if not (self.query_start_s <= self.query_end_s and self.target_start_s <= self.target_end_s):
            raise ValueError(f"segment ends before it starts: {self}")


def _check_matrix(f2f: np.ndarray) -> np.ndarray:
    """-> f2f as float32 `[Tq, Tt]`, or ValueError naming what is wrong."""
    matrix = np.asarray(f2f)
    if matrix.ndim != 2:
        raise ValueError(f"f2f must be a 2-D [Tq, Tt] matrix, got {matrix.ndim} dims (shape {matrix.shape})")
    if matrix.size == 0:
        raise ValueError(f"f2f is empty (shape {matrix.shape})")
    if not np.issubdtype(matrix.dtype, np.number) or np.issubdtype(matrix.dtype, np.complexfloating):
        raise ValueError(f"f2f must hold real numbers, got dtype {matrix.dtype}")
    matrix = matrix.astype(np.float32, copy=False)
    if not np.isfinite(matrix).all():
        raise ValueError("f2f holds NaN or infinite values")
    return matrix


def _check_positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _local_alignment(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell scores `[Tq, Tt]` -> (H `[Tq, Tt]` float64 best path score ending at each cell, 0 where none gains;
    step `[Tq, Tt]` int8: the index in STEPS of the step into the cell, -1 where the path starts there)."""
    rows, cols = scores.shape
    weighted = [(di, dj, (di + dj) / 2 * scores) for di, dj in STEPS]  # what a step into each cell adds
    best = np.zeros((rows, cols))
    step_into = np.full((rows, cols), -1, dtype=np.int8)
    candidates = np.empty((len(STEPS) + 1, cols))  # per column: a path starting here, then one per step
    for i in range(rows):
        candidates.fill(-np.inf)
        candidates[0] = scores[i]
        for k, (di, dj, gains) in enumerate(weighted, start=1):
            if i >= di:
                before = best[i - di, : cols - dj]
                np.add(before, gains[i, dj:], out=candidates[k, dj:], where=before > 0)  # only a gaining path
        chosen = candidates.argmax(axis=0)
        gained = candidates.max(axis=0)
        np.maximum(gained, 0.0, out=best[i])
        step_into[i] = np.where(gained > 0, chosen - 1, -1)
    return best, step_into


def _path_bound(scores: np.ndarray) -> float:
    """An upper bound of the score of any path over cell scores `[Tq, Tt]`: a path takes at most one cell of each
    row and of each column (every step moves down and right), and a cell adds at most 1.5 (the largest step
    weight) times its score where that is positive."""
    gains = np.maximum(scores, 0.0)
    return 1.5 * float(min(gains.max(axis=1).sum(), gains.max(axis=0).sum()))


def _gaining_window(scores: np.ndarray) -> tuple[slice, slice]:
    """The rows and the columns from the first to the last holding a cell score above 0 (at least one must).

    Every path scoring above 0 starts at such a cell (a path extends only a positive score), so outside the
    window before it no path gains; after it, a path only loses, and the best cell (first in row-major order)
    is never there.  The programme over the window alone gives the same best cell and the same path."""
    rows, cols = np.nonzero(scores > 0)
    return slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)


def _backtrack(step_into: np.ndarray, end: tuple[int, int]) -> list[tuple[int, int]]:
    """The path's cells from its start to `end`, in order."""
    i, j = end
    path = [(i, j)]
    while step_into[i, j] >= 0:
        di, dj = STEPS[step_into[i, j]]
        i, j = i - di, j - dj
        path.append((i, j))
    return path[::-1]


def align(
    f2f: np.ndarray,
    fps_query: float,
    fps_target: float,
    threshold: float = 0.7,
    gap_penalty: float = 0.5,
    min_score: float = 3.0,
    max_segments: int = 10,
) -> list[Segment]:
    """Copied segments of one pair from its similarity matrix, best score first.

    f2f `[Tq, Tt]` float (values in [-1, 1]; row i is query time i / fps_query, column j target time
    j / fps_target; see the module docstring for which matrix) -> up to `max_segments` Segments, seconds, each
    cell covering [i / fps, (i + 1) / fps).  threshold (< 1): the similarity above which a cell counts as
    copied; gap_penalty (> 0): the most a non-copied cell costs a path; min_score (> 0): the least path score
    reported, in cells at similarity 1 (a path of n cells at similarity x scores about
    n (x - threshold) / (1 - threshold)).
    [] for a pair with no copy.  ValueError for an empty, non-2-D or non-finite matrix or bad parameters.
    """
    matrix = _check_matrix(f2f)
    fps_query = _check_positive("fps_query", fps_query)
    fps_target = _check_positive("fps_target", fps_target)
    gap_penalty = _check_positive("gap_penalty", gap_penalty)
    min_score = _check_positive("min_score", min_score)
    if not (math.isfinite(threshold) and threshold < 1):
        raise ValueError(f"threshold must be a finite number < 1, got {threshold!r}")
    if max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments!r}")

    scores = np.maximum((matrix.astype(np.float64) - threshold) / (1 - threshold), -gap_penalty)
    segments = []
    while len(segments) < max_segments and _path_bound(scores) >= min_score - BOUND_SLACK:
        span_rows, span_cols = _gaining_window(scores)
        best, step_into = _local_alignment(scores[span_rows, span_cols])
        end = np.unravel_index(int(best.argmax()), best.shape)
        if best[end] < min_score:
            break
        path = _backtrack(step_into, (int(end[0]), int(end[1])))
        rows = tuple(i + span_rows.start for i, _ in path)  # the window's cells -> the matrix's
        cols = tuple(j + span_cols.start for _, j in path)
        (q0, q1), (t0, t1) = (min(rows), max(rows)), (min(cols), max(cols))
        above = (float(matrix[list(rows), list(cols)].mean()) - threshold) / (1 - threshold)
        segments.append(Segment(q0 / fps_query, (q1 + 1) / fps_query, t0 / fps_target, (t1 + 1) / fps_target,
                                confidence=min(max(above, 0.0), 1.0)))
        scores[q0 : q1 + 1, t0 : t1 + 1] = BLOCKED
    return segments


def _union_length(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length covered by intervals (overlaps counted once)."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _axis_lengths(predicted: Sequence[Segment], truth: Sequence[Segment], axis: str) -> tuple[float, float, float]:
    """-> (|union(predicted) & union(truth)|, |union(predicted)|, |union(truth)|) along axis "query" or "target"."""
    pick = {"query": lambda s: (s.query_start_s, s.query_end_s),
            "target": lambda s: (s.target_start_s, s.target_end_s)}[axis]
    pred = [pick(s) for s in predicted]
    true = [pick(s) for s in truth]
    pred_length, true_length = _union_length(pred), _union_length(true)
    # |A & B| = |A| + |B| - |A | B| for unions of intervals
    overlap = pred_length + true_length - _union_length(pred + true)
    return max(overlap, 0.0), pred_length, true_length


def _ratio(part: float, whole: float) -> float:
    """part / whole, 1.0 when there is nothing to divide (nothing predicted: no false alarm; nothing true: no
    miss)."""
    return 1.0 if whole <= 0 else part / whole


def micro_precision_recall(pairs: Iterable[tuple[Sequence[Segment], Sequence[Segment]]]) -> tuple[float, float]:
    """(predicted segments, true segments) per pair -> (precision, recall) in [0, 1], lengths summed over pairs
    per axis, then the geometric mean of the query and target axes.  A pair without a copy adds its predicted
    lengths to the precision's denominators only; a missed copy its true lengths to the recall's."""
    sums = {axis: np.zeros(3) for axis in ("query", "target")}
    for predicted, truth in pairs:
        for axis in sums:
            sums[axis] += _axis_lengths(predicted, truth, axis)
    precision = math.sqrt(math.prod(_ratio(s[0], s[1]) for s in sums.values()))
    recall = math.sqrt(math.prod(_ratio(s[0], s[2]) for s in sums.values()))
    return precision, recall


def segment_precision_recall(predicted: Sequence[Segment], truth: Sequence[Segment]) -> tuple[float, float]:
    """One pair's (precision, recall): `micro_precision_recall` over that pair alone."""
    return micro_precision_recall([(predicted, truth)])
