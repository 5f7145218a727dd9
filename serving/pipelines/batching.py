"""How the fine-similarity requests of one search are batched: candidates of similar lengths together.

Plain numpy, no Triton: `dnsvr_search` calls these between its model requests.

    fine_batches(frame_counts [n], frame_bytes)  -> lists of positions, each one fine_similarity request
    padded_batch([T_i, 9, W] ...)                -> candidates [K, Tmax, 9, W] zero-padded, mask [K, Tmax]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_PAIRS_PER_BATCH = 64
MAX_CANDIDATE_BYTES = 64 << 20  # padded candidate tensor of one fine_similarity request


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
