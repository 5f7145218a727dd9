"""The store's text-video vectors against real Milvus (Lite server and the 2.3.5 standalone server): written with
the video in one upsert, searched by inner product with only current generations counted, filtered, replaced,
deleted, checked and repaired; a store without them refuses text search; dimensions are part of the store."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from dnsvr.serving.store.schema import IndexedVideo, InvalidVideo, new_generations
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import NoTextVectors, StoreMismatch, VideoStore
from dnsvr.training.networks.codes import pack_codes

DIM, TEXT_DIM = 16, 8


def unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    vector = rng.normal(size=dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def video(video_id: str, seed: int, text: np.ndarray | None = None, **metadata) -> IndexedVideo:
    rng = np.random.default_rng(seed)
    return IndexedVideo(video_id, unit(rng, DIM), 0.5, pack_codes(rng.choice([-1.0, 1.0], size=(3, 9, 512))),
                        metadata=metadata, text=unit(rng, TEXT_DIM) if text is None else text)


def open_store(uri: str, prefix: str, text_dim: int = TEXT_DIM, **wanted) -> VideoStore:
    return VideoStore(StoreSettings(uri=uri, prefix=prefix), model_version="text-pack-1", coarse_dim=DIM,
                      representation="binary", text_dim=text_dim, **wanted)


def fresh_prefix() -> str:
    return "x" + uuid.uuid4().hex[:12]


def test_text_search_ranks_by_inner_product_and_honours_filters(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        videos = [video(f"v{i}", i, channel="news" if i % 2 else "sport") for i in range(12)]
        store.upsert_many(videos)
        query = videos[5].text
        hits = store.search_text(query, 4, consistency="Strong")
        expected = sorted(videos, key=lambda v: -float(v.text @ query))[:4]
        assert hits.ids == [v.video_id for v in expected]
        np.testing.assert_allclose(hits.scores, [float(v.text @ query) for v in expected], atol=1e-5)
        sport = store.search_text(query, 3, filter='metadata["channel"] == "sport"', consistency="Strong")
        assert sport.ids and all(int(i[1:]) % 2 == 0 for i in sport.ids)
        assert store.search_text(query, 3, filter='video_id in ["v3", "v7"]', consistency="Strong").ids[0] in {
            "v3", "v7"}
        np.testing.assert_array_equal(store.get("v5").text, videos[5].text)
        stats = store.stats()
        assert stats.text_rows == 12 and stats.meta.text_dim == TEXT_DIM


def test_reindex_and_delete_leave_no_stale_vector(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        first = video("clip", 1)
        store.upsert_many([first, video("other", 2)])
        store.upsert(video("clip", 3, text=-first.text))  # re-indexed: its old vector must not be found
        assert store.search_text(first.text, 2, consistency="Strong").ids == ["other", "clip"]
        assert store.search_text(-first.text, 1, consistency="Strong").ids == ["clip"]
        assert store._count(store.text_collection, "Strong") == 2
        assert store.delete("clip")
        assert store.search_text(-first.text, 2, consistency="Strong").ids == ["other"]
        assert store.check(grace_s=0).clean


def test_a_vector_of_an_unfinished_write_is_never_returned_and_is_repaired(backend_uri: str) -> None:
    """A writer that died after writing a new generation's text vector but before switching the row: the
    orphan is not a hit (text search follows the rows' generations), check reports it, repair removes it."""
    with open_store(backend_uri, fresh_prefix()) as store:
        served = video("clip", 1)
        store.upsert(served)
        (generation,) = new_generations(1)
        store._call("insert", lambda c: c.insert(store.text_collection, [
            {"video_id": "clip", "generation": generation, "vector": (-served.text).tolist()}]))
        assert store.search_text(-served.text, 1, consistency="Strong").scores[0] < 0.99  # the served vector
        report = store.check(grace_s=0)
        assert report.orphan_text_rows == 1 and report.orphan_video_ids == ["clip"] and not report.clean
        assert store.check(repair=True, grace_s=0).repaired and store.check(grace_s=0).clean
        np.testing.assert_array_equal(store.get("clip").text, served.text)


def test_a_video_without_its_vector_is_incomplete(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        store.upsert_many([video("clip", 1), video("kept", 2)])
        store._delete_text('video_id == "clip"')
        assert store.check(grace_s=0).incomplete_video_ids == ["clip"]
        store.check(repair=True, grace_s=0)
        assert store.count() == 1 and store.check(grace_s=0).clean


def test_bad_vectors_and_filters_are_refused_and_nothing_is_written(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        store.upsert(video("kept", 1))
        bad = [video("a", 2, text=np.ones(TEXT_DIM, np.float32)),  # not unit norm
               video("b", 3, text=np.full(TEXT_DIM, np.nan, np.float32)),
               video("c", 4, text=np.ones(TEXT_DIM + 1, np.float32) / np.sqrt(TEXT_DIM + 1))]
        missing = video("d", 5)
        missing.text = None
        for item in [*bad, missing]:
            with pytest.raises(InvalidVideo, match="text-video vector"):
                store.upsert_many([video("e", 6), item])
        assert store.count() == 1 and store._count(store.text_collection, "Strong") == 1
        for query in (np.ones(TEXT_DIM, np.float32), np.ones(3, np.float32)):
            with pytest.raises(InvalidVideo, match="text query vector"):
                store.search_text(query, 1)
        with pytest.raises(InvalidVideo, match="unmatched"):
            store.search_text(video("q", 7).text, 1, filter='video_id == "kept") or (video_id != ""')


def test_a_store_without_text_vectors_refuses_text_search_and_text(backend_uri: str) -> None:
    prefix = fresh_prefix()
    with open_store(backend_uri, prefix, text_dim=0) as store:
        plain = video("clip", 1)
        with pytest.raises(InvalidVideo, match="holds no text-video vectors"):
            store.upsert(plain)
        plain.text = None
        store.upsert(plain)
        assert not store._has(store.text_collection)
        with pytest.raises(NoTextVectors, match="no text-video vectors"):
            store.search_text(np.eye(TEXT_DIM, dtype=np.float32)[0], 1)
    with pytest.raises(StoreMismatch, match="text-video vectors of dimension 0"):
        with open_store(backend_uri, prefix) as other:
            other.count()
    with open_store(backend_uri, prefix, text_dim=None) as adopting:  # admin tools adopt what is there
        assert adopting.count() == 1 and adopting.meta.text_dim == 0
