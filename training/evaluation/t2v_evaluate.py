"""Evaluate any text-to-video scorer on a split: the one driver every model, teacher or score file plugs into.

* `evaluate_text_video(similarity_fn, split)`: `similarity_fn(captions: list[str], video_ids: list[str])` ->
  float `[Nt, Nv]` (rows = captions, columns = videos, higher = more similar) is called once with the split's
  captions and videos -> {'t2v': {...}, 'v2t': {...}, 'captions', 'videos', 'ties', 'similarity_seconds'}
  (metrics of `t2v_metrics`; `similarity_seconds` is the wall time of the call, whatever it computes).
* `evaluate_index(model, split, frames_of)`: a model as it is served (`TextVideoIndex`: each video indexed once
  into a stored array, text queries scored against the stored arrays) -> the same dict plus
  `seconds_per_query` (median wall time of one caption scored against every stored video, indexing excluded)
  and `bytes_per_video` (mean size of the stored arrays).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from dnsvr.training.data.text_video_split import TextVideoSplit
from dnsvr.training.evaluation.t2v_metrics import KS, MetricsError, retrieval_metrics

SimilarityFn = Callable[[list[str], list[str]], np.ndarray]
TIMED_QUERIES = 20  # captions timed one by one for seconds_per_query


class TextVideoIndex(Protocol):
    """A text-video retrieval model as served: `index_video(frames uint8 [T, 224, 224, 3])` -> the array stored
    for the video; `score(captions, stored)` -> float `[len(captions), len(stored)]`."""

    def index_video(self, frames: np.ndarray) -> np.ndarray: ...

    def score(self, captions: Sequence[str], stored: Sequence[np.ndarray]) -> np.ndarray: ...


def evaluate_text_video(
    similarity_fn: SimilarityFn,
    split: TextVideoSplit,
    ties: str = "pessimistic",
    ks: Sequence[int] = KS,
    video_to_text: bool = True,
) -> dict[str, Any]:
    """Score every caption against every video of `split` and measure (see the module docstring)."""
    start = time.perf_counter()
    similarity = np.asarray(similarity_fn(list(split.captions), list(split.video_ids)))
    seconds = time.perf_counter() - start
    expected = (split.num_captions, split.num_videos)
    if similarity.shape != expected:
        raise MetricsError(f"similarity_fn returned shape {similarity.shape}; expected [captions, videos] = {expected}")
    owner = split.owner_index() if video_to_text else None
    metrics = retrieval_metrics(similarity, split.relevance(), owner, ties, ks)
    return {**metrics, "captions": split.num_captions, "videos": split.num_videos, "ties": ties,
            "similarity_seconds": seconds}


def evaluate_index(
    model: TextVideoIndex,
    split: TextVideoSplit,
    frames_of: Callable[[str], np.ndarray],
    ties: str = "pessimistic",
    ks: Sequence[int] = KS,
) -> dict[str, Any]:
    """Index every video of `split` (frames from `frames_of(video_id)`), then evaluate and time the queries."""
    stored = [np.asarray(model.index_video(frames_of(video_id))) for video_id in split.video_ids]
    metrics = evaluate_text_video(lambda captions, _: model.score(captions, stored), split, ties, ks)
    timings = []
    for caption in split.captions[:TIMED_QUERIES]:
        start = time.perf_counter()
        model.score([caption], stored)
        timings.append(time.perf_counter() - start)
    return {**metrics, "seconds_per_query": float(np.median(timings)),
            "bytes_per_video": float(np.mean([array.nbytes for array in stored]))}
