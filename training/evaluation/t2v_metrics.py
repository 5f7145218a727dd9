"""Text-to-video retrieval metrics from a similarity matrix: R@K, median rank (MdR), mean rank (MnR).

Inputs: `similarity` float `[Nt, Nv]` (rows = captions, higher = more similar, every entry finite) and
`relevance` bool `[Nt, Nv]` (True where video j is a correct answer to caption i; every caption needs one).
`TextVideoSplit.relevance()` / `owner_index()` (`dnsvr.training.data.text_video_split`) give both.

Definitions (the standard ones of CLIP4Clip's and TeachCLIP's `metrics.py`, restated here):

* **text -> video**: each caption ranks every video; its rank is the 1-based position of its best-scored
  correct video, i.e. 1 + the number of *wrong* videos ranked above it (other correct videos never push it
  down).  R@K = percentage of captions with rank <= K; MdR = the median rank (numpy's median: the mean of the
  two middle ranks for an even count); MnR = the mean rank.
* **video -> text**: the captions are grouped by the video they were written for (their owner), a group scored
  by its best caption (the reference's multi-sentence rule: the max over the group's captions); each video
  ranks the groups, and its rank is that of its best correct group.  With one caption per video this is the
  plain transpose, as in the reference.  Only videos with at least one correct caption are queries.
* **ties** (a correct item scored exactly as high as wrong ones): `"pessimistic"` (default) ranks every such
  wrong item above it, so a constant scorer gets the worst ranks, never perfect ones; `"optimistic"` ranks
  them below, which is what the reference's sort-and-find-first-equal gives.  Without ties both agree.

One caveat when comparing with published multi-caption numbers (MSVD): the reference's text -> video median
there comes from `torch.median`, the lower of the two middle ranks; here it is always numpy's median.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TIES = ("pessimistic", "optimistic")
KS = (1, 5, 10)


class MetricsError(ValueError):
    """The similarity matrix or the ground truth cannot be scored (shape, non-finite score, no answer)."""


def _check(scores: np.ndarray, correct: np.ndarray, ties: str) -> tuple[np.ndarray, np.ndarray]:
    if ties not in TIES:
        raise MetricsError(f"ties must be one of {TIES}, got {ties!r}")
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct)
    if scores.ndim != 2:
        raise MetricsError(f"similarity must be a 2-D matrix [queries, items], got shape {scores.shape}")
    if correct.shape != scores.shape or correct.dtype != np.bool_:
        raise MetricsError(
            f"relevance must be a bool matrix of the similarity's shape {scores.shape}, "
            f"got {correct.dtype} {correct.shape}"
        )
    bad = np.argwhere(~np.isfinite(scores))
    if len(bad):
        row, column = bad[0]
        raise MetricsError(
            f"{len(bad)} similarities are not finite, e.g. [{row}, {column}] = {scores[row, column]}"
        )
    unanswered = np.flatnonzero(~correct.any(axis=1))
    if len(unanswered):
        raise MetricsError(f"{len(unanswered)} queries have no correct item, e.g. query #{unanswered[0]}")
    return scores, correct


def first_correct_ranks(scores: np.ndarray, correct: np.ndarray, ties: str = "pessimistic") -> np.ndarray:
    """int64 `[Q]`: per query row, the 1-based rank of its best-scored correct item among the wrong ones.

    scores: float `[Q, N]`; correct: bool `[Q, N]` with at least one True per row; ties: one of TIES.
    """
    scores, correct = _check(scores, correct, ties)
    best = np.where(correct, scores, -np.inf).max(axis=1, keepdims=True)
    beaten = scores > best if ties == "optimistic" else scores >= best
    return 1 + np.count_nonzero(beaten & ~correct, axis=1)


def summarize_ranks(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Ranks `[Q]` (1-based) -> {'R@k' (percent) for k in ks, 'MdR', 'MnR', 'queries'}."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0 or (ranks < 1).any():
        raise MetricsError(f"ranks must be a non-empty 1-D array of ranks >= 1, got shape {ranks.shape}")
    metrics = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}
    metrics["MdR"] = float(np.median(ranks))
    metrics["MnR"] = float(np.mean(ranks))
    metrics["queries"] = int(ranks.size)
    return metrics


def text_to_video_metrics(
    similarity: np.ndarray, relevance: np.ndarray, ties: str = "pessimistic", ks: Sequence[int] = KS
) -> dict[str, float]:
    """Captions rank videos: similarity and relevance `[Nt, Nv]` -> `summarize_ranks` of every caption."""
    return summarize_ranks(first_correct_ranks(similarity, relevance, ties), ks)


def caption_groups(
    similarity: np.ndarray, relevance: np.ndarray, owner: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Captions grouped by owner video -> (scores float `[G, Nv]`: each group's best caption score,
    relevance bool `[G, Nv]`: any of the group's captions is correct), groups in ascending owner order.

    owner: int `[Nt]`, the owner's column of each caption.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    owner = np.asarray(owner)
    if owner.shape != similarity.shape[:1]:
        raise MetricsError(f"owner must hold one video index per caption ({similarity.shape[0]}), got {owner.shape}")
    order = np.argsort(owner, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(owner[order]) != 0])
    scores = np.maximum.reduceat(similarity[order], starts, axis=0)
    correct = np.logical_or.reduceat(np.asarray(relevance)[order], starts, axis=0)
    return scores, correct


def video_to_text_metrics(
    similarity: np.ndarray,
    relevance: np.ndarray,
    owner: np.ndarray,
    ties: str = "pessimistic",
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Videos rank caption groups (see the module docstring): `[Nt, Nv]` inputs, owner int `[Nt]` ->
    `summarize_ranks` over the videos that have a correct caption."""
    _check(similarity, relevance, ties)
    scores, correct = caption_groups(similarity, relevance, owner)
    answered = correct.any(axis=0)
    return summarize_ranks(first_correct_ranks(scores.T[answered], correct.T[answered], ties), ks)


def retrieval_metrics(
    similarity: np.ndarray,
    relevance: np.ndarray,
    owner: np.ndarray | None = None,
    ties: str = "pessimistic",
    ks: Sequence[int] = KS,
) -> dict[str, dict[str, float]]:
    """{'t2v': text -> video metrics, 'v2t': video -> text metrics (only when `owner` is given)}."""
    metrics = {"t2v": text_to_video_metrics(similarity, relevance, ties, ks)}
    if owner is not None:
        metrics["v2t"] = video_to_text_metrics(similarity, relevance, owner, ties, ks)
    return metrics
