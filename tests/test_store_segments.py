"""The store's segment views (the S^c vectors of a video's frame windows, `SegmentLayout`) against real Milvus (Lite
server and the 2.3.5 standalone server): stored after the crop views in the view collection, in one upsert with the
video; the coarse search ranks each video by its best view, a window's included, and a window that wins names
the full frame's fine codes (a window has no codes of its own); read back, counted, checked, replaced and deleted
with the rest; bad windows refused; the number of windows is part of the store."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from conftest import unit_vectors
from dnsvr.serving.store.schema import IndexedVideo, InvalidVideo, StoreMeta, make_meta
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import StoreMismatch, VideoStore
from dnsvr.training.networks.codes import pack_codes

DIM, VIEWS, SEGMENTS = 16, 2, 3


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return unit_vectors(rng, *shape, dim=DIM)


def video(video_id: str, seed: int, views: int = VIEWS, frames: int = 3) -> IndexedVideo:
    rng = np.random.default_rng(seed)
    codes = pack_codes(rng.choice([-1.0, 1.0], size=(frames, 9, 512)))
    return IndexedVideo(video_id, unit(rng), 0.5, codes, views=unit(rng, views) if views else None,
                        view_codes=rng.integers(0, 256, size=(views, frames, 9, 64), dtype=np.uint8) if views else None,
                        segments=unit(rng, SEGMENTS))


def open_store(uri: str, prefix: str, views: int = VIEWS, segments: int | None = SEGMENTS) -> VideoStore:
    return VideoStore(StoreSettings(uri=uri, prefix=prefix, coarse_index="FLAT"), model_version="segments-pack-1",
                      coarse_dim=DIM, representation="binary", text_dim=0, views=views, view_codes=bool(views),
                      segments=segments)


def all_views(item: IndexedVideo) -> np.ndarray:
    """[1 + B + W, D]: the full frame's vector, each crop view's, each window's."""
    return np.vstack([item.coarse[None], *([item.views] if item.views is not None else []), item.segments])


@pytest.mark.parametrize("views", [VIEWS, 0])
def test_a_window_ranks_its_video_and_names_the_full_frames_codes(backend_uri: str, views: int) -> None:
    with open_store(backend_uri, "x" + uuid.uuid4().hex[:12], views=views) as store:
        videos = [video(f"v{i:02d}", i, views) for i in range(20)]
        store.upsert_many(videos)
        for query, owner in ((videos[7].segments[2], 7), (videos[3].coarse, 3)):
            hits = store.search_coarse(query, 5, consistency="Strong")
            ranked = sorted(videos, key=lambda v: -float((all_views(v) @ query).max()))[:5]
            assert hits.ids[0] == f"v{owner:02d}" and hits.ids == [v.video_id for v in ranked]
            np.testing.assert_allclose(hits.scores, [(all_views(v) @ query).max() for v in ranked], atol=1e-5)
            best = [int(np.argmax(all_views(v) @ query)) for v in ranked]
            assert hits.code_views.tolist() == [b if 0 < b <= views else 0 for b in best]  # a window: view 0
        back = store.get("v07")
        np.testing.assert_array_equal(back.segments, videos[7].segments)
        if views:
            np.testing.assert_array_equal(back.views, videos[7].views)
        else:
            assert back.views is None
        stats = store.stats()
        assert stats.view_rows == 20 * (1 + views + SEGMENTS) and stats.meta.segments == SEGMENTS
        assert stats.payload_bytes_per_video == 4 * DIM * (1 + views + SEGMENTS) + 4 + (1 + views) * 3 * 9 * 64
        store.upsert(video("v07", 99, views))  # re-indexed: its old windows are gone
        assert store.search_coarse(videos[7].segments[2], 1, consistency="Strong").scores[0] < 0.99
        assert store.delete("v03") and store._count(store.view_collection, "Strong") == 19 * (1 + views + SEGMENTS)
        assert store.check(grace_s=0).clean
        store._delete_in(store.view_collection, f'video_id == "v05" and view == {1 + views + SEGMENTS - 1}')
        assert store.check(grace_s=0).incomplete_video_ids == ["v05"]


def test_bad_windows_are_refused_and_nothing_is_written(backend_uri: str) -> None:
    with open_store(backend_uri, "x" + uuid.uuid4().hex[:12]) as store:
        store.upsert(video("kept", 1))
        rng = np.random.default_rng(5)
        bad = {"segment view 2": np.stack([unit(rng), np.ones(DIM, np.float32), unit(rng)]),  # not unit norm
               "segment view 1": np.full((SEGMENTS, DIM), np.nan, np.float32),
               "segment views must have shape": unit(rng, SEGMENTS + 1),
               "needs each video's 3 segment-view": None}
        for message, segments in bad.items():
            item = video("a", 2)
            item.segments = segments
            with pytest.raises(InvalidVideo, match=message):
                store.upsert_many([video("e", 6), item])
        assert store.count() == 1 and store._count(store.view_collection, "Strong") == 1 + VIEWS + SEGMENTS


def test_the_number_of_windows_is_part_of_the_store(backend_uri: str) -> None:
    prefix = "x" + uuid.uuid4().hex[:12]
    with open_store(backend_uri, prefix, segments=0) as store:
        with pytest.raises(InvalidVideo, match="holds no segment views"):
            store.upsert(video("clip", 1))
    with pytest.raises(StoreMismatch, match="0 segment views per video .*this caller: 3"):
        with open_store(backend_uri, prefix) as other:
            other.count()
    with open_store(backend_uri, prefix, segments=None) as adopting:  # admin tools adopt what is there
        assert adopting.count() == 0 and adopting.meta.segments == 0


def test_the_number_of_windows_is_checked_and_old_metadata_has_none() -> None:
    with pytest.raises(ValueError, match="segments must be in 0..64"):
        make_meta("v1", DIM, "binary", "chunk", segments=65)
    meta = make_meta("v1", DIM, "binary", "chunk", views=VIEWS, segments=SEGMENTS)
    assert StoreMeta.from_json(meta.to_json()) == meta and meta.view_vectors == 1 + VIEWS + SEGMENTS
    old = json.loads(meta.to_json())
    del old["dnsvr_store"]["segments"]  # a store made before segment views
    assert StoreMeta.from_json(json.dumps(old)).segments == 0
    assert make_meta("v1", DIM, "binary", "chunk").view_vectors == 0
    assert make_meta("v1", DIM, "binary", "chunk", segments=SEGMENTS).view_vectors == 1 + SEGMENTS
