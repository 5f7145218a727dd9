"""The search service between model calls, on a real embedded Milvus Lite store.

The two networks are reached through `ModelCalls`, the seam the Triton BLS model fills with its requests;
here they are small numpy functions with known answers (selector = coarse similarity, fine similarity =
mean best-match agreement of the codes), so the routing outcome can be checked exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from dnsvr.serving.pipelines.search import Embedding, ModelCalls, embedding_of_indexed, index_video, search
from dnsvr.serving.store.schema import InvalidVideo
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import VideoNotFound, VideoStore
from dnsvr.training.networks.codes import pack_codes, unpack_codes
from dnsvr.training.ranking import RerankPolicy

DIM = 16


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def codes_similarity(query, query_mask, candidates, candidate_mask) -> np.ndarray:
    """[K] in [-1, 1]: mean over query frames of the best frame agreement (Hamming, all regions)."""
    q = unpack_codes(query[query_mask]).reshape(int(query_mask.sum()), -1)
    scores = []
    for video, mask in zip(candidates, candidate_mask, strict=True):
        t = unpack_codes(video[mask]).reshape(int(mask.sum()), -1)
        scores.append((q @ t.T / q.shape[1]).max(axis=1).mean())
    return np.array(scores, np.float32)


CALLS = ModelCalls(selector_score=lambda pairs: pairs[:, 2], fine_similarity=codes_similarity)


@pytest.fixture()
def store(tmp_path):
    settings = StoreSettings(uri=str(tmp_path / "store.db"), coarse_index="FLAT")
    with VideoStore(settings, model_version="test", coarse_dim=DIM, representation="binary") as opened:
        yield opened


@pytest.fixture()
def library(store):
    """Six videos: 'twin' has the query's codes, the others random codes; coarse vectors at known angles."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=DIM)
    query_bits = rng.choice([-1.0, 1.0], size=(5, 9, 512))
    query = Embedding(unit(base), pack_codes(query_bits), 0.5)
    for index, name in enumerate(["near0", "near1", "twin", "far0", "far1", "far2"]):
        noise = rng.normal(size=DIM) * (0.2 + 0.3 * index)
        bits = query_bits if name == "twin" else rng.choice([-1.0, 1.0], size=(4 + index, 9, 512))
        index_video(store, name, Embedding(unit(base + noise), pack_codes(bits), 0.4))
    return query


def test_coarse_only_ranks_by_coarse_similarity(store, library):
    ranking, timings = search(store, CALLS, library, top_k=4, policy=RerankPolicy("none", 0))
    assert ranking.ids == ["near0", "near1", "twin", "far0"]
    assert not ranking.reranked.any() and np.all(np.diff(ranking.scores) <= 0)
    assert set(timings) == {"coarse_search"}


def test_fine_reranking_lifts_the_true_duplicate(store, library):
    ranking, timings = search(store, CALLS, library, top_k=6, policy=RerankPolicy("count", 3))
    assert ranking.ids[0] == "twin" and ranking.scores[0] == pytest.approx(1.0)
    assert ranking.reranked.sum() == 3
    assert sorted(np.array(ranking.ids)[ranking.reranked]) == ["near0", "near1", "twin"]
    assert {"coarse_search", "selector", "fetch_codes", "fine_similarity"} <= set(timings)


def test_policy_decides_how_many_pairs_are_reranked(store, library):
    for policy, expected in [(RerankPolicy("fraction", 0.5), 3), (RerankPolicy("threshold", 2.0 / 3), None)]:
        ranking, _ = search(store, CALLS, library, top_k=6, policy=policy)
        if expected is not None:
            assert ranking.reranked.sum() == expected
        else:  # threshold on the selector score (= coarse similarity here)
            assert ranking.reranked.sum() == int((ranking.coarse_scores >= 2.0 / 3).sum())


def test_search_by_indexed_id_excludes_itself(store, library):
    query = embedding_of_indexed(store, "twin")
    ranking, _ = search(store, CALLS, query, top_k=10, policy=RerankPolicy("fraction", 1.0), exclude_id="twin")
    assert "twin" not in ranking.ids and len(ranking) == 5
    with pytest.raises(VideoNotFound):
        embedding_of_indexed(store, "missing")


def test_reindexing_replaces_and_bad_vectors_write_nothing(store, library):
    rng = np.random.default_rng(1)
    replacement = Embedding(unit(rng.normal(size=DIM)), pack_codes(rng.choice([-1.0, 1.0], (3, 9, 512))), 0.1)
    index_video(store, "far2", replacement)
    assert store.count() == 6 and store.get("far2").frame_count == 3
    with pytest.raises(InvalidVideo, match="L2-normalised"):
        index_video(store, "far2", Embedding(np.ones(DIM, np.float32), replacement.fine, 0.1))
    with pytest.raises(InvalidVideo, match="shape"):
        index_video(store, "new", Embedding(replacement.coarse, replacement.fine[..., :8], 0.1))
    assert store.count() == 6 and store.get("far2").frame_count == 3
