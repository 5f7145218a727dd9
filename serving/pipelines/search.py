"""What `dnsvr_index` and `dnsvr_search` do between their model calls, free of Triton (unit-testable).

The networks are reached through `ModelCalls` (the BLS models pass Triton requests; tests pass functions),
the store through `dnsvr.serving.store.video_store.VideoStore`.

    index_video(store, video_id, embedding, source_uri, metadata)         -> upsert (replaces the id)
    search(store, calls, query, top_k, policy, candidates, filter, exclude_id) -> (Ranking, timings ms)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from dnsvr.serving.pipelines.batching import fine_batches, padded_batch
from dnsvr.serving.store.schema import IndexedVideo
from dnsvr.serving.store.video_store import VideoStore
from dnsvr.training.ranking import RerankPolicy, merge_fine, ranking_order, selector_rows


@dataclass
class Embedding:
    """One video as dnsvr_embed returns it: coarse [C] float32 (unit norm), fine [T, 9, 64] uint8 or
    [T, 9, 512] float32, selector self-similarity (float)."""

    coarse: np.ndarray
    fine: np.ndarray
    selector: float

    @property
    def frame_count(self) -> int:
        return int(self.fine.shape[0])


@dataclass
class ModelCalls:
    """The two networks search needs besides the embedding.

    selector_score: [K, 3] float32 -> [K] float32 in (0, 1).
    fine_similarity: query [Tq, 9, W], query_mask [Tq], candidates [K, Tt, 9, W], candidate_mask [K, Tt]
    -> [K] float32 in [-1, 1].
    """

    selector_score: Callable[[np.ndarray], np.ndarray]
    fine_similarity: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Stopwatch:
    """Named stage durations in milliseconds, in the order they were measured."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)


class _Stage:
    def __init__(self, watch: Stopwatch, name: str) -> None:
        self.watch, self.name = watch, name

    def __enter__(self) -> None:
        self.began = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        elapsed = (time.perf_counter() - self.began) * 1000.0
        self.watch.stages[self.name] = self.watch.stages.get(self.name, 0.0) + elapsed


DEFAULT_CANDIDATES = 100


def candidate_count(top_k: int, candidates: int | None) -> int:
    """K': how many coarse neighbours to fetch: at least top_k, `candidates` if given (else 100)."""
    return max(top_k, candidates if candidates else DEFAULT_CANDIDATES)


@dataclass
class Ranking:
    """Results best first: ids, final scores, whether the fine student re-ranked each, and its coarse and
    selector scores (NaN where the selector did not run)."""

    ids: list[str]
    scores: np.ndarray
    reranked: np.ndarray
    coarse_scores: np.ndarray
    selector_scores: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def final_ranking(
    ids: Sequence[str],
    coarse_scores: np.ndarray,
    selector_scores: np.ndarray | None,
    reranked: np.ndarray,
    fine_similarity: np.ndarray,
    top_k: int,
) -> Ranking:
    """`merge_fine` (fine score where re-ranked, coarse elsewhere), best first (ties: coarse order), top_k.

    ids/coarse/selector: [K] in coarse order; reranked: [n] candidate positions; fine_similarity: [n] in [-1, 1].
    """
    coarse = np.asarray(coarse_scores, np.float32).reshape(-1)
    if len(ids) != len(coarse):
        raise ValueError(f"{len(ids)} ids for {len(coarse)} coarse scores")
    selector = (np.full(len(coarse), np.nan, np.float32) if selector_scores is None
                else np.asarray(selector_scores, np.float32).reshape(-1))
    positions = np.asarray(reranked, np.int64).reshape(-1)
    scores = merge_fine(coarse, positions, fine_similarity)
    flags = np.zeros(len(coarse), bool)
    flags[positions] = True
    order = ranking_order(scores)[:top_k]
    return Ranking([ids[i] for i in order], scores[order], flags[order], coarse[order], selector[order])


def index_video(store: VideoStore, video_id: str, embedding: Embedding, source_uri: str = "",
                metadata: dict[str, Any] | None = None) -> None:
    """Insert or replace `video_id` (validated by the store first; nothing is written on bad input)."""
    store.upsert(IndexedVideo(video_id=video_id, coarse=embedding.coarse, selector=embedding.selector,
                              fine_codes=embedding.fine, source_uri=source_uri, metadata=metadata or {}))


def embedding_of_indexed(store: VideoStore, video_id: str) -> Embedding:
    """The stored embedding of an indexed video (raises VideoNotFound)."""
    video = store.get(video_id, consistency="Session")
    return Embedding(video.coarse, video.fine_codes, video.selector)


def search(
    store: VideoStore,
    calls: ModelCalls,
    query: Embedding,
    top_k: int,
    policy: RerankPolicy,
    candidates: int | None = None,
    filter: str | None = None,
    exclude_id: str | None = None,
    consistency: str = "Session",
) -> tuple[Ranking, dict[str, float]]:
    """DnS retrieval for one query: coarse top-K' -> selector -> fine re-rank of the chosen -> top_k.

    Returns the ranking and stage timings in ms (coarse_search, selector, fetch_codes, fine_similarity).
    """
    watch = Stopwatch()
    limit = candidate_count(top_k, candidates)
    with watch.stage("coarse_search"):
        hits = store.search_coarse(query.coarse, limit + (1 if exclude_id else 0), filter=filter,
                                   consistency=consistency)
    keep = [i for i, video_id in enumerate(hits.ids) if video_id != exclude_id][:limit]
    ids = [hits.ids[i] for i in keep]
    coarse, target_selectors = hits.scores[keep], hits.selectors[keep]
    selector_scores = None
    chosen = np.zeros(0, np.int64)
    fine_scores = np.zeros(0, np.float32)
    if ids and policy.mode != "none":
        with watch.stage("selector"):
            selector_scores = np.asarray(
                calls.selector_score(selector_rows(query.selector, target_selectors, coarse)), np.float32)
        chosen = policy.choose(selector_scores)
    if len(chosen):
        fine_scores = _fine_scores(store, calls, query, [ids[i] for i in chosen], watch, consistency)
        found = ~np.isnan(fine_scores)  # a candidate deleted meanwhile keeps its coarse score
        chosen, fine_scores = chosen[found], fine_scores[found]
    ranking = final_ranking(ids, coarse, selector_scores, chosen, fine_scores, top_k)
    return ranking, watch.stages


def _fine_scores(store: VideoStore, calls: ModelCalls, query: Embedding, video_ids: list[str],
                 watch: Stopwatch, consistency: str) -> np.ndarray:
    """Raw fine similarities [n] in [-1, 1] for `video_ids` (NaN for ids no longer in the store)."""
    with watch.stage("fetch_codes"):
        fetched = store.fetch_codes(video_ids, consistency=consistency)
    scores = np.full(len(video_ids), np.nan, np.float32)
    present = [i for i, count in enumerate(fetched.frame_counts) if count > 0]
    if not present:
        return scores
    query_mask = np.ones(query.frame_count, bool)
    frame_bytes = int(np.prod(fetched.codes.shape[2:])) * fetched.codes.itemsize
    counts = [int(fetched.frame_counts[i]) for i in present]
    with watch.stage("fine_similarity"):
        for batch in fine_batches(counts, frame_bytes):
            positions = [present[b] for b in batch]
            candidates, mask = padded_batch([fetched.codes[p, : fetched.frame_counts[p]] for p in positions])
            similarity = calls.fine_similarity(query.fine, query_mask, candidates, mask)
            scores[positions] = np.asarray(similarity, np.float32).reshape(-1)
    return scores
