"""One search's pieces around the networks: how many candidates, how fine requests are batched, the top-k."""

from __future__ import annotations

import numpy as np
import pytest
from dnsvr.serving.pipelines.batching import fine_batches, padded_batch
from dnsvr.serving.pipelines.search import candidate_count, final_ranking


def test_candidate_count():
    assert candidate_count(10, None) == 100
    assert candidate_count(500, None) == 500
    assert candidate_count(10, 20) == 20
    assert candidate_count(10, 5) == 10


def test_fine_batches_bound_pairs_and_bytes():
    counts = [5, 100, 3, 50, 4, 7]
    batches = fine_batches(counts, frame_bytes=10, max_pairs=2, max_bytes=10**9)
    assert sorted(p for b in batches for p in b) == list(range(6))
    assert all(len(b) <= 2 for b in batches)
    assert batches[0] == [2, 4]  # shortest together
    by_bytes = fine_batches(counts, frame_bytes=10, max_pairs=64, max_bytes=1000)
    for batch in by_bytes:
        assert len(batch) == 1 or len(batch) * max(counts[p] for p in batch) * 10 <= 1000
    assert [1] in by_bytes  # 100 frames alone (over the budget by itself)


def test_padded_batch():
    videos = [np.ones((2, 9, 64), np.uint8), np.full((4, 9, 64), 3, np.uint8)]
    batch, mask = padded_batch(videos)
    assert batch.shape == (2, 4, 9, 64) and mask.tolist() == [[True, True, False, False], [True] * 4]
    assert batch[0, 2:].sum() == 0 and (batch[1] == 3).all()


def test_final_ranking_mixes_fine_and_coarse_scores():
    ids = ["a", "b", "c", "d"]
    coarse = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    selector = np.array([0.1, 0.9, 0.8, 0.2], np.float32)
    ranking = final_ranking(ids, coarse, selector, np.array([1, 2]), np.array([1.0, -1.0]), top_k=3)
    assert ranking.ids == ["b", "a", "d"]
    np.testing.assert_allclose(ranking.scores, [1.0, 0.9, 0.6])
    assert ranking.reranked.tolist() == [True, False, False]
    np.testing.assert_allclose(ranking.coarse_scores, [0.8, 0.9, 0.6])
    np.testing.assert_allclose(ranking.selector_scores, [0.9, 0.1, 0.2])


def test_final_ranking_without_selector_keeps_coarse_order():
    ranking = final_ranking(["a", "b"], np.array([0.5, 0.5]), None, np.zeros(0), np.zeros(0), top_k=5)
    assert ranking.ids == ["a", "b"] and not ranking.reranked.any()
    assert np.isnan(ranking.selector_scores).all()
    with pytest.raises(ValueError, match="fine similarities"):
        final_ranking(["a"], np.array([0.5]), None, np.array([0]), np.zeros(0), top_k=1)
