"""The pipelines between model calls (dnsvr.serving.pipelines), on a real embedded Milvus Lite store.

The networks are reached through `ModelCalls`, the seam the Triton BLS models fill with their requests; here
they are small numpy functions with known answers (embed = a lookup of prepared embeddings, selector = coarse
similarity, fine similarity = mean best-match agreement of the codes), so the outcomes can be checked exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from dnsvr.serving.pipelines.admin import delete_request, stats_request
from dnsvr.serving.pipelines.code_cache import CodeCache
from dnsvr.serving.pipelines.index import index_request, index_video
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs
from dnsvr.serving.pipelines.search import Embedding, ModelCalls, embedding_of_indexed, search, search_request
from dnsvr.serving.store.schema import InvalidVideo
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import StoreError, VideoNotFound, VideoStore
from dnsvr.training.localisation import Segment
from dnsvr.training.networks.codes import pack_codes, unpack_codes
from dnsvr.training.ranking import FUSIONS, RerankPolicy, ScoreCalibration, fine_to_unit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DIM = 16


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def codes_similarity(query, query_mask, candidates, candidate_mask) -> tuple[np.ndarray, np.ndarray]:
    """([K] in [-1, 1]: mean over query frames of the best frame agreement (Hamming, all regions), f2f
    [K, Tq, Tt]: those frame agreements at the real frames, 0 elsewhere)."""
    q = unpack_codes(query[query_mask]).reshape(int(query_mask.sum()), -1)
    f2f = np.zeros((len(candidates), len(query), candidates.shape[1]), np.float32)
    scores = []
    for k, (video, mask) in enumerate(zip(candidates, candidate_mask, strict=True)):
        t = unpack_codes(video[mask]).reshape(int(mask.sum()), -1)
        f2f[k, : len(q), : len(t)] = q @ t.T / q.shape[1]
        scores.append(f2f[k, : len(q), : len(t)].max(axis=1).mean())
    return np.array(scores, np.float32), f2f


EMBEDDINGS: dict[bytes, Embedding] = {}  # "video bytes" -> the embedding the stand-in dnsvr_embed returns


def embed(video: dict[str, np.ndarray]) -> Embedding:
    return EMBEDDINGS[video["video"].reshape(-1)[0]]


CALLS = ModelCalls(embed=embed, selector_score=lambda pairs: pairs[:, 2], fine_similarity=codes_similarity)


def text(value: str) -> np.ndarray:
    return np.array([value.encode()], dtype=object)


def request(**inputs) -> RequestInputs:
    return RequestInputs({name: text(v) if isinstance(v, str) else v for name, v in inputs.items()})


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


def test_a_search_that_only_ranks_looks_for_no_segments(store, library):
    located, _ = search(store, CALLS, library, top_k=6, policy=RerankPolicy("fraction", 1.0))
    ranked, timings = search(store, CALLS, library, top_k=6, policy=RerankPolicy("fraction", 1.0), localise=False)
    assert ranked.ids == located.ids and ranked.scores.tobytes() == located.scores.tobytes()
    assert ranked.segments == [[]] * 6 and "localisation" not in timings


def same_ranking(first, second) -> bool:
    return (first.ids == second.ids and first.scores.tobytes() == second.scores.tobytes()
            and first.reranked.tolist() == second.reranked.tolist())


def counting_reads(store, monkeypatch) -> list[int]:
    """Spy on store.read_codes: the number of videos each call asked for."""
    real, asked = store.read_codes, []

    def read_codes(wanted, consistency="Session", views=None):
        asked.append(len(wanted))
        return real(wanted, consistency, views)

    monkeypatch.setattr(store, "read_codes", read_codes)
    return asked


def test_the_code_cache_changes_no_result_and_saves_the_reads(store, library, monkeypatch):
    policy = RerankPolicy("fraction", 1.0)
    asked = counting_reads(store, monkeypatch)
    uncached, _ = search(store, CALLS, library, top_k=6, policy=policy)
    cache = CodeCache(1 << 20)
    cold, _ = search(store, CALLS, library, top_k=6, policy=policy, cache=cache)
    warm, timings = search(store, CALLS, library, top_k=6, policy=policy, cache=cache)
    assert same_ranking(uncached, cold) and same_ranking(uncached, warm) and uncached.reranked.all()
    assert asked == [6, 6]  # without the cache, then cold; warm: no store read
    assert {"fetch_codes", "fine_similarity"} <= set(timings)
    tiny = CodeCache(3 * 9 * 64 * 6)  # room for only some of the videos: hits and misses mixed
    for _ in range(3):
        assert same_ranking(uncached, search(store, CALLS, library, top_k=6, policy=policy, cache=tiny)[0])


def test_read_chunks_let_the_fine_similarity_start_early():
    from dnsvr.serving.pipelines.search import read_chunks

    def sizes(count: int) -> list[int]:
        return [len(chunk) for chunk in read_chunks([f"v{i}" for i in range(count)])]

    assert sizes(0) == [] and sizes(15) == [15] and sizes(20) == [8, 12]
    assert sizes(50) == [13, 37] and sizes(200) == [50, 50, 50, 50] and sizes(300) == [64, 59, 59, 59, 59]
    assert sum(read_chunks([f"v{i}" for i in range(77)]), []) == [f"v{i}" for i in range(77)]


def test_codes_read_in_chunks_while_scoring_give_the_same_ranking(store, library, monkeypatch):
    import dnsvr.serving.pipelines.search as search_module

    policy = RerankPolicy("fraction", 1.0)
    whole, _ = search(store, CALLS, library, top_k=6, policy=policy)
    monkeypatch.setattr(search_module, "MIN_READ_CHUNK", 3)
    asked = counting_reads(store, monkeypatch)
    cache = CodeCache(3 * 9 * 64 * 6)  # some cached, the rest read in chunks
    for _ in range(3):
        chunked, timings = search(store, CALLS, library, top_k=6, policy=policy, cache=cache)
        assert same_ranking(whole, chunked) and {"fetch_codes", "fine_similarity"} <= set(timings)
    assert asked[:2] == [3, 3]  # six cold misses: a first read of 3 (a quarter, at least 3), then the rest


def test_a_reindexed_video_is_scored_with_its_new_codes(store, library):
    """'twin' (the query's own codes: fine score 1) is re-indexed with other codes under the same id and coarse
    vector: the next search through the same cache must score the new codes, as a search without a cache does."""
    policy, cache = RerankPolicy("fraction", 1.0), CodeCache(1 << 20)
    before, _ = search(store, CALLS, library, top_k=6, policy=policy, cache=cache)
    assert before.ids[0] == "twin" and before.scores[0] == pytest.approx(1.0)
    twin = embedding_of_indexed(store, "twin")
    other_codes = pack_codes(np.random.default_rng(7).choice([-1.0, 1.0], size=(5, 9, 512)))
    index_video(store, "twin", Embedding(twin.coarse, other_codes, 0.4))
    after, _ = search(store, CALLS, library, top_k=6, policy=policy, cache=cache)
    uncached, _ = search(store, CALLS, library, top_k=6, policy=policy)
    assert same_ranking(after, uncached)
    scores, _ = codes_similarity(library.fine, np.ones(5, bool), other_codes[None], np.ones((1, 5), bool))
    expected = fine_to_unit(scores)
    assert after.scores[after.ids.index("twin")] == pytest.approx(expected[0]) and expected[0] < 0.9


def test_a_deleted_video_is_not_scored(store, library):
    policy, cache = RerankPolicy("fraction", 1.0), CodeCache(1 << 20)
    before, _ = search(store, CALLS, library, top_k=6, policy=policy, cache=cache)
    assert "twin" in before.ids
    assert store.delete("twin")
    after, _ = search(store, CALLS, library, top_k=6, policy=policy, cache=cache)
    assert "twin" not in after.ids and len(after) == 5 and after.reranked.all()


def test_a_candidate_gone_since_the_coarse_search_keeps_its_coarse_score(store, library, monkeypatch):
    """A re-index or delete between the coarse search and the code read (a race that cannot be timed on
    demand, so the coarse hits are replaced by a test double carrying a generation the store never wrote)."""
    real = store.search_coarse

    def stale_hits(*args, **kwargs):
        hits = real(*args, **kwargs)
        hits.generations[hits.ids.index("twin")] += 1
        return hits

    monkeypatch.setattr(store, "search_coarse", stale_hits)
    ranking, _ = search(store, CALLS, library, top_k=6, policy=RerankPolicy("fraction", 1.0), cache=CodeCache(1 << 20))
    twin = ranking.ids.index("twin")
    assert not ranking.reranked[twin] and ranking.scores[twin] == ranking.coarse_scores[twin]
    assert ranking.reranked.sum() == 5


def test_the_query_embedding_of_an_indexed_video_reads_its_row_and_its_codes_once(store, library, monkeypatch):
    """Search by id: the row in one query and the codes in one read, the codes then kept in the search's cache;
    the same embedding as everything the store holds for the video (`get`)."""
    stored = store.get("twin")
    asked, cache = counting_reads(store, monkeypatch), CodeCache(1 << 20)
    for _ in range(2):
        query = embedding_of_indexed(store, "twin", cache)
        assert np.array_equal(query.fine, stored.fine_codes) and np.array_equal(query.coarse, stored.coarse)
        assert query.selector == pytest.approx(stored.selector) and query.text is None
    assert asked == [1]


def test_the_query_embedding_of_a_video_whose_codes_are_gone_is_an_error(store, library, monkeypatch):
    monkeypatch.setattr(store, "read_codes", lambda wanted, consistency="Session", views=None: {})
    with pytest.raises(StoreError, match="incomplete frames"):
        embedding_of_indexed(store, "twin")


def test_an_indexed_querys_codes_come_with_the_first_candidates(store, library, monkeypatch):
    """By id: the query's codes are read in the candidates' first read, and not at all without a re-rank; the
    ranking is the one of the fully read embedding."""
    from dnsvr.serving.pipelines.search import indexed_query

    expected, _ = search(store, CALLS, embedding_of_indexed(store, "twin"), top_k=6,
                         policy=RerankPolicy("fraction", 1.0), exclude_id="twin")
    asked = counting_reads(store, monkeypatch)
    coarse_only = indexed_query(store, "twin")
    search(store, CALLS, coarse_only, top_k=6, policy=RerankPolicy("none", 0), exclude_id="twin")
    assert asked == [] and coarse_only.fine is None and coarse_only.frame_count == 5
    query = indexed_query(store, "twin")
    ranking, _ = search(store, CALLS, query, top_k=6, policy=RerankPolicy("fraction", 1.0), exclude_id="twin")
    assert asked == [6] and same_ranking(ranking, expected)  # the query + its 5 candidates, one read
    assert np.array_equal(query.fine, store.get("twin").fine_codes)


def test_an_indexed_query_reindexed_under_the_search_is_read_again(store, library, monkeypatch):
    from dnsvr.serving.pipelines.search import indexed_query

    query = indexed_query(store, "twin")
    real = store.read_codes
    monkeypatch.setattr(store, "read_codes", lambda wanted, consistency="Session", views=None: {
        video_id: codes for video_id, codes in real(wanted, consistency, views).items()
        if video_id != "twin" or consistency == "Strong"})  # the Session read misses the swapped query
    ranking, _ = search(store, CALLS, query, top_k=6, policy=RerankPolicy("fraction", 1.0), exclude_id="twin")
    assert ranking.reranked.all() and np.array_equal(query.fine, store.get("twin").fine_codes)


def test_policy_decides_how_many_pairs_are_reranked(store, library):
    for policy, expected in [(RerankPolicy("fraction", 0.5), 3), (RerankPolicy("threshold", 2.0 / 3), None)]:
        ranking, _ = search(store, CALLS, library, top_k=6, policy=policy)
        if expected is not None:
            assert ranking.reranked.sum() == expected
        else:  # threshold on the selector score (= coarse similarity here)
            assert ranking.reranked.sum() == int((ranking.coarse_scores >= 2.0 / 3).sum())


def test_fusion_decides_the_reranked_scores(store, library):
    calibration = ScoreCalibration((-1.0, 1.0), (0.25, 0.75))
    coarse, _ = search(store, CALLS, library, top_k=6, policy=RerankPolicy("none"))
    rankings = {fusion: search(store, CALLS, library, top_k=6, policy=RerankPolicy("fraction", 0.5, fusion),
                               calibration=calibration)[0] for fusion in FUSIONS}
    for fusion, ranking in rankings.items():
        picked = ranking.reranked
        assert picked.sum() == 3, fusion
        if fusion == "cascade":  # the re-ranked hits hold the coarse scores the picked block held
            assert sorted(ranking.scores[picked]) == pytest.approx(sorted(ranking.coarse_scores[picked]))
            assert sorted(ranking.scores) == pytest.approx(sorted(coarse.scores))
    mixed, calibrated = rankings["mix"], rankings["calibrated"]
    by_id = dict(zip(mixed.ids, mixed.scores, strict=True))
    for video_id, score, picked in zip(calibrated.ids, calibrated.scores, calibrated.reranked, strict=True):
        if picked:  # the same fine similarity s: mix gives s/2 + 0.5, this calibration s/4 + 0.5
            assert score == pytest.approx((by_id[video_id] - 0.5) / 2 + 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="has none"):
        search(store, CALLS, library, top_k=6, policy=RerankPolicy("fraction", 0.5, "calibrated"))


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


def test_index_search_delete_and_stats_requests(stores):
    rng = np.random.default_rng(2)
    for name in ("a", "b", "c"):
        codes = pack_codes(rng.choice([-1.0, 1.0], (4, 9, 512)))
        EMBEDDINGS[name.encode()] = Embedding(unit(rng.normal(size=DIM)), codes, 0.3)
        out = index_request(request(video_id=name, video=np.array([name.encode()], object),
                                    metadata='{"channel": "news"}', source_uri=f"file:{name}"), stores, CALLS)
        assert out["frame_count"].tolist() == [4] and "total" in json.loads(out["timings"][0])
    found = search_request(request(video_id="a", top_k=np.array([5], np.int32), rerank="count:1"), stores, CALLS)
    assert sorted(found["video_ids"].tolist()) == [b"b", b"c"] and found["reranked"].sum() == 1
    assert found["segment_times"].shape == (0, 4) and found["segment_hits"].dtype == np.int32  # random codes
    assert {"embed", "coarse_search", "selector", "fetch_codes", "fine_similarity", "total"} <= set(
        json.loads(found["timings"][0]))
    by_video = search_request(request(video=np.array([b"a"], object), top_k=np.array([1], np.int32), rerank="none"),
                              stores, CALLS)
    assert by_video["video_ids"].tolist() == [b"a"] and by_video["scores"][0] == pytest.approx(1.0)
    report = json.loads(stats_request(request(request="stats"), stores)["report"][0])
    assert report["videos"] == 3 and report["models"]["source"] == "tests" and report["fine"] == "bin"
    assert report["default_fusion"] == "mix"  # the manifest names none
    assert delete_request(request(video_id="a"), stores)["deleted"].tolist() == [True]
    assert delete_request(request(video_id="a"), stores)["deleted"].tolist() == [False]
    with pytest.raises(VideoNotFound, match="'a' is not indexed"):
        search_request(request(video_id="a", top_k=np.array([5], np.int32)), stores, CALLS)
    invalid = "source_uri like " + "(" * 3000  # a 3 KB invalid filter: a short, clear error
    with pytest.raises(BadRequest, match="was rejected by the store") as rejected:
        search_request(request(video_id="b", top_k=np.array([5], np.int32), filter=invalid), stores, CALLS)
    assert len(str(rejected.value)) < 1000
    narrowed = search_request(request(video_id="b", top_k=np.array([5], np.int32), filter='source_uri == "file:c"'),
                              stores, CALLS)
    assert narrowed["video_ids"].tolist() == [b"c"]


def test_a_search_naming_no_fusion_uses_the_packs_default(stores):
    rng = np.random.default_rng(3)
    for name in ("d", "e", "f"):
        codes = pack_codes(rng.choice([-1.0, 1.0], (4, 9, 512)))
        EMBEDDINGS[name.encode()] = Embedding(unit(rng.normal(size=DIM)), codes, 0.3)
        index_request(request(video_id=name, video=np.array([name.encode()], object)), stores, CALLS)

    def reranked_scores(rerank: str) -> tuple[np.ndarray, np.ndarray]:
        found = search_request(request(video_id="d", top_k=np.array([5], np.int32), rerank=rerank), stores, CALLS)
        return found["scores"][found["reranked"]], found["coarse_scores"][found["reranked"]]

    assert stores.default_fusion == "mix"  # the manifest names none
    mixed, coarse = reranked_scores("count:1")
    assert len(mixed) == 1 and mixed[0] != coarse[0]  # the paper's mix: fine / 2 + 0.5 in place of the coarse score
    stores.default_fusion = "cascade"  # as a manifest with "fusion": "cascade" sets it
    held, coarse = reranked_scores("count:1")
    assert held.tolist() == coarse.tolist()  # one re-ranked pair keeps the rank (and the score) it held
    assert reranked_scores("count:1,fusion:mix")[0].tolist() == mixed.tolist()  # a named fusion wins


@pytest.mark.parametrize(("inputs", "message"), [
    ({"video_id": "a", "top_k": np.array([0], np.int32)}, "top_k must be in"),
    ({"video_id": "a", "top_k": np.array([3], np.int32), "candidates": np.array([-1], np.int32)}, "candidates"),
    ({"video_id": "a", "top_k": np.array([3], np.int32), "rerank": "sometimes"}, "re-rank policy"),
    ({"video_id": "a", "top_k": np.array([3], np.int32), "rerank": "0.5,fusion:blend"}, "fusion must be one of"),
    ({"video_id": "a", "top_k": np.array([3], np.int32), "rerank": "0.5,fusion:calibrated"}, "has none"),
    ({"video_id": "a", "video": np.array([b"a"], object), "top_k": np.array([3], np.int32)}, "exactly one"),
    ({"top_k": np.array([3], np.int32)}, "exactly one"),
    ({"video_id": "a"}, "lacks input 'top_k'"),
    ({"video_id": "a", "top_k": np.array([1.5], np.float32)}, "one integer"),
    ({"video_id": "a", "top_k": np.array([3], np.int32), "filter": "x" * 4097}, "the maximum is 4096"),
])
def test_bad_search_requests_name_the_problem(stores, inputs, message):
    with pytest.raises(BadRequest, match=message):
        search_request(request(**inputs), stores, CALLS)


def test_bad_index_requests_write_nothing(stores):
    EMBEDDINGS[b"x"] = Embedding(unit(np.ones(DIM)), pack_codes(np.ones((4, 9, 512))), 0.3)
    video = np.array([b"x"], object)
    for inputs, error, message in [
        ({"video_id": "x", "video": video, "metadata": "[1, 2]"}, BadRequest, "JSON object"),
        ({"video_id": "x", "video": video, "metadata": "{"}, BadRequest, "not valid JSON"),
        ({"video_id": 'x"y', "video": video}, InvalidVideo, "forbidden character"),
        ({"video": video}, BadRequest, "lacks input 'video_id'"),
    ]:
        with pytest.raises(error, match=message):
            index_request(request(**inputs), stores, CALLS)
    assert stores.existing() is None  # nothing was written: not even the collections


def test_stats_request_before_anything_is_indexed(stores):
    report = json.loads(stats_request(request(request="health"), stores)["report"][0])
    assert report["store_exists"] is False and report["videos"] == 0
    with pytest.raises(BadRequest, match="'stats' or 'health'"):
        stats_request(request(request="everything"), stores)


def test_request_inputs_accessors():
    inputs = request(name="clip", n=np.array([7], np.int64), frames=np.zeros((2, 224, 224, 3), np.uint8))
    assert inputs.text("name") == "clip" and inputs.text("absent") is None and inputs.integer("n") == 7
    assert inputs.integer("absent", default=3) == 3 and inputs.json_object("absent") == {}
    assert list(inputs.video()) == ["frames"] and inputs.given_videos() == ["frames"]
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        RequestInputs({"name": np.array([b"\xff"], object)}).text("name")
    with pytest.raises(BadRequest, match="one string"):
        RequestInputs({"name": np.array([b"a", b"b"], object)}).text("name")


def test_thumbnails_fit_the_stores_limit_even_for_noise():
    from dnsvr.client.spec import MAX_THUMBNAIL_BYTES
    from dnsvr.serving.pipelines.thumbnails import video_thumbnail

    noise = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    assert len(video_thumbnail(noise)) <= MAX_THUMBNAIL_BYTES


def test_thumbnails_request_checks_ids_and_answers_each():
    from dnsvr.serving.pipelines.thumbnails import thumbnails_request

    class Store:
        def thumbnails(self, video_ids, consistency):
            return {"a": b"\xff\xd8\xffA"}

    class Stores:
        def __init__(self, store):
            self.store = store

        def existing(self):
            return self.store

    ids = np.array([b"a", b"b"], object)
    out = thumbnails_request(RequestInputs({"video_ids": ids}), Stores(Store()), "Session")
    assert out["thumbnails"].tolist() == [b"\xff\xd8\xffA", b""]
    assert thumbnails_request(RequestInputs({"video_ids": ids}), Stores(None), "Session")["thumbnails"].tolist() == [
        b"", b""]
    for sent, message in [(np.array([b'bad"id'], object), "forbidden character"), (np.array([], object), "1 to 1000"),
                          (np.array([b"\xff"], object), "not valid UTF-8")]:
        with pytest.raises((BadRequest, InvalidVideo), match=message):
            thumbnails_request(RequestInputs({"video_ids": sent}), Stores(Store()), "Session")


FILTERS = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expression=FILTERS | st.sampled_from(['video_id != ""', 'source_uri like "%"', "1 == 1",
                                             'video_id in ["a"] or 1 == 1', "selector > 0.5"]))
def test_fuzz_a_filter_only_narrows_a_search(stores, expression):
    """Any filter string: the search answers (a subset of the videos) or refuses it as a bad request; the store
    is never changed."""
    if stores.existing() is None:
        for name in ("a", "b", "c"):
            coarse = unit(np.arange(1.0, DIM + 1) + ord(name))
            EMBEDDINGS[name.encode()] = Embedding(coarse, pack_codes(np.ones((4, 9, 512))), 0.3)
            index_request(request(video_id=name, video=np.array([name.encode()], object)), stores, CALLS)
    try:
        found = search_request(request(video_id="a", top_k=np.array([5], np.int32), filter=expression), stores,
                               CALLS)
        assert set(found["video_ids"].tolist()) <= {b"b", b"c"}
    except BadRequest:
        pass
    assert stores.existing().count() == 3


def test_reranked_hits_carry_their_copied_segments(store, library):
    """'twin' holds the query's 5 frames: one segment over all of them on both sides, in seconds at `fps`;
    random codes give none, and hits left unranked by the fine student have none."""
    ranking, timings = search(store, CALLS, library, top_k=6, policy=RerankPolicy("count", 3))
    segments = dict(zip(ranking.ids, ranking.segments, strict=True))
    assert segments["twin"] == [Segment(0.0, 5.0, 0.0, 5.0, 1.0)] and "localisation" in timings
    assert all(segments[name] == [] for name in ("near0", "near1", "far0", "far1", "far2"))
    at_two, _ = search(store, CALLS, library, top_k=6, policy=RerankPolicy("count", 3), fps=2.0)
    assert dict(zip(at_two.ids, at_two.segments, strict=True))["twin"] == [Segment(0.0, 2.5, 0.0, 2.5, 1.0)]
    coarse_only, _ = search(store, CALLS, library, top_k=6, policy=RerankPolicy("none", 0))
    assert coarse_only.segments == [[]] * 6
