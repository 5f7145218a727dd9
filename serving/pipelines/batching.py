"""Search routing between the networks: selector inputs, fine-similarity batches, the final ranking.

Plain numpy, no Triton: the `dnsvr_search` model calls these between its model requests.

    pair_features(q_sel, t_sel [K], coarse [K])      -> [K, 3] float32 selector input rows
    fine_batches(frame_counts [n], ...)              -> lists of positions, each one fine_similarity request
    fine_to_unit(similarity [n])                     -> [n] in [0, 1] (s / 2 + 0.5, as the paper)
    final_ranking(ids, coarse [K], selector [K], reranked_idx [n], fine_unit [n], top_k) -> Ranking
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_CANDIDATES = 100
MAX_PAIRS_PER_BATCH = 64
MAX_CANDIDATE_BYTES = 64 << 20  # padded candidate tensor of one fine_similarity request


def candidate_count(top_k: int, candidates: int | None) -> int:
    """K': how many coarse neighbours to fetch: at least top_k, `candidates` if given (else 100)."""
    return max(top_k, candidates if candidates else DEFAULT_CANDIDATES)


def pair_features(query_selector: float, candidate_selectors: np.ndarray, coarse_scores: np.ndarray) -> np.ndarray:
    """Selector input rows [sn_q, sn_t, coarse similarity]: [K] + [K] -> [K, 3] float32."""
    candidate_selectors = np.asarray(candidate_selectors, np.float32).reshape(-1)
    coarse_scores = np.asarray(coarse_scores, np.float32).reshape(-1)
    if candidate_selectors.shape != coarse_scores.shape:
        raise ValueError(f"{len(candidate_selectors)} selector scalars for {len(coarse_scores)} coarse scores")
    query = np.full_like(coarse_scores, np.float32(query_selector))
    return np.stack([query, candidate_selectors, coarse_scores], axis=1)


def fine_batches(
    frame_counts: Sequence[int],
    frame_bytes: int,
    max_pairs: int = MAX_PAIRS_PER_BATCH,
    max_bytes: int = MAX_CANDIDATE_BYTES,
) -> list[list[int]]:
    """Group candidate positions into fine_similarity requests: similar lengths together (less padding),
    at most `max_pairs` per request and a padded tensor of at most `max_bytes` (a longer video goes alone)."""
    order = sorted(range(len(frame_counts)), key=lambda i: frame_counts[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for position in order:
        longest = frame_counts[position]  # ascending order: the newest is the longest
        if current and (len(current) + 1 > max_pairs or (len(current) + 1) * longest * frame_bytes > max_bytes):
            batches.append(current)
            current = []
        current.append(position)
    if current:
        batches.append(current)
    return batches


def padded_batch(codes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Videos [T_i, 9, W] -> candidates [K, Tmax, 9, W] zero-padded and candidate_mask [K, Tmax] bool."""
    longest = max(len(c) for c in codes)
    batch = np.zeros((len(codes), longest, *codes[0].shape[1:]), codes[0].dtype)
    mask = np.zeros((len(codes), longest), bool)
    for index, video in enumerate(codes):
        batch[index, : len(video)] = video
        mask[index, : len(video)] = True
    return batch, mask


def fine_to_unit(similarity: np.ndarray) -> np.ndarray:
    """Fine-student similarity in [-1, 1] -> [0, 1] (s / 2 + 0.5), comparable with coarse scores."""
    return (np.asarray(similarity, np.float32) / 2.0 + 0.5).astype(np.float32)


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
    fine_unit_scores: np.ndarray,
    top_k: int,
) -> Ranking:
    """Fine score where re-ranked, coarse score elsewhere; sorted descending (ties: coarse order); top_k.

    ids/coarse/selector: [K] in coarse order; reranked: [n] candidate positions; fine_unit_scores: [n].
    """
    coarse = np.asarray(coarse_scores, np.float32).reshape(-1)
    if len(ids) != len(coarse):
        raise ValueError(f"{len(ids)} ids for {len(coarse)} coarse scores")
    selector = (np.full(len(coarse), np.nan, np.float32) if selector_scores is None
                else np.asarray(selector_scores, np.float32).reshape(-1))
    positions = np.asarray(reranked, np.int64).reshape(-1)
    fine = np.asarray(fine_unit_scores, np.float32).reshape(-1)
    if positions.shape != fine.shape:
        raise ValueError(f"{len(positions)} re-ranked positions for {len(fine)} fine scores")
    scores = coarse.copy()
    scores[positions] = fine
    flags = np.zeros(len(coarse), bool)
    flags[positions] = True
    order = np.argsort(-scores, kind="stable")[:top_k]
    return Ranking([ids[i] for i in order], scores[order], flags[order], coarse[order], selector[order])
