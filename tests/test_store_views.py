"""The store's crop views against real Milvus (Lite server and the 2.3.5 standalone server): written with the video
in one upsert, the coarse search ranking each video by its best view with only current generations counted,
filtered, replaced, deleted, read back, checked and repaired; bad views refused; the number of views is part of
the store.  The crop views' fine codes (schema 3, where the export keeps them: `view_codes`) ride with the frames:
read back view by view, the best view of each hit names the codes the fine student compares, and a store that
keeps none serves its full frames'; the choice is part of the store."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace

import numpy as np
import pytest
from conftest import unit_vectors
from dnsvr.serving.store import video_store as video_store_module
from dnsvr.serving.store.schema import IndexedVideo, InvalidVideo, StoreMeta, make_meta, new_generations
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import StoreMismatch, VideoStore
from dnsvr.training.networks.codes import pack_codes

DIM, VIEWS = 16, 3


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return unit_vectors(rng, *shape, dim=DIM)


def video(video_id: str, seed: int, views: np.ndarray | None = None, frames: int = 3, **metadata) -> IndexedVideo:
    rng = np.random.default_rng(seed)
    codes = pack_codes(rng.choice([-1.0, 1.0], size=(frames, 9, 512)))
    return IndexedVideo(video_id, unit(rng), 0.25 + seed / 100, codes, metadata=metadata,
                        views=unit(rng, VIEWS) if views is None else views,
                        view_codes=rng.integers(0, 256, size=(VIEWS, frames, 9, 64), dtype=np.uint8))


def open_store(uri: str, prefix: str, views: int | None = VIEWS, view_codes: bool | None = True) -> VideoStore:
    return VideoStore(StoreSettings(uri=uri, prefix=prefix), model_version="views-pack-1", coarse_dim=DIM,
                      representation="binary", text_dim=0, views=views, view_codes=view_codes)


def fresh_prefix() -> str:
    return "x" + uuid.uuid4().hex[:12]


def best_view(item: IndexedVideo, query: np.ndarray) -> float:
    return float(max(item.coarse @ query, *(item.views @ query)))


def test_coarse_search_ranks_each_video_by_its_best_view_and_honours_filters(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        videos = [video(f"v{i}", i, channel="news" if i % 2 else "sport") for i in range(12)]
        query = videos[7].views[1]  # what a crop of v7 shows: v7 scores 1 by its second crop view
        store.upsert_many(videos)
        hits = store.search_coarse(query, 5, consistency="Strong")
        expected = sorted(videos, key=lambda v: -best_view(v, query))[:5]
        assert hits.ids[0] == "v7" and hits.ids == [v.video_id for v in expected]
        np.testing.assert_allclose(hits.scores, [best_view(v, query) for v in expected], atol=1e-5)
        np.testing.assert_allclose(hits.selectors, [v.selector for v in expected], atol=1e-6)
        assert hits.frame_counts.tolist() == [3] * 5 and len(set(hits.generations.tolist())) >= 1
        sport = store.search_coarse(query, 4, filter='metadata["channel"] == "sport"', consistency="Strong")
        assert len(sport.ids) == 4 and all(int(i[1:]) % 2 == 0 for i in sport.ids)
        everything = store.search_coarse(query, 100, consistency="Strong")
        assert sorted(everything.ids) == sorted(v.video_id for v in videos)  # each video once
        back = store.get("v7")
        np.testing.assert_array_equal(back.views, videos[7].views)
        np.testing.assert_array_equal(back.view_codes, videos[7].view_codes)
        np.testing.assert_array_equal(back.fine_codes, videos[7].fine_codes)
        stats = store.stats()
        assert stats.view_rows == 12 * (1 + VIEWS) and stats.meta.views == VIEWS
        assert stats.payload_bytes_per_video == 4 * DIM * (1 + VIEWS) + 4 + (1 + VIEWS) * 3 * 9 * 64


def test_k_videos_come_back_past_the_row_cap_and_under_a_selective_filter(backend_uri: str, monkeypatch) -> None:
    """Milvus returns at most MAX_QUERY_ROWS rows a search, and a video has 1 + VIEWS of them: the reads go on
    below the videos already settled, and a filter few videos pass restricts the reads to them (here the cap is
    8 rows, 2 videos' worth)."""
    monkeypatch.setattr(video_store_module, "MAX_QUERY_ROWS", 8)
    with open_store(backend_uri, fresh_prefix()) as store:
        videos = [video(f"v{i}", i, channel="news" if i % 2 else "sport") for i in range(12)]
        store.upsert_many(videos)
        query = videos[4].views[2]

        def expected(k: int, keep=lambda v: True) -> list[str]:
            return [v.video_id for v in sorted(filter(keep, videos), key=lambda v: -best_view(v, query))][:k]

        assert store.search_coarse(query, 6, consistency="Strong").ids == expected(6)
        news = store.search_coarse(query, 6, filter='metadata["channel"] == "news"', consistency="Strong")
        assert news.ids == expected(6, lambda v: v.metadata["channel"] == "news")  # by id: 6 pass the filter
        monkeypatch.setattr(video_store_module, "SCOPE_IDS", 2)  # too many pass: read on past the cap instead
        sport = store.search_coarse(query, 5, filter='metadata["channel"] == "sport"', consistency="Strong")
        assert sport.ids == expected(5, lambda v: v.metadata["channel"] == "sport")


@pytest.mark.parametrize("rows_cap", [8, 16_384])
def test_the_best_view_search_is_exact_against_brute_force(backend_uri: str, monkeypatch, rows_cap: int) -> None:
    """150 videos, queries near a full frame, near a crop, and anywhere; k from 1 to every video; no filter, a
    filter half the videos pass, one 5 pass: the ids and scores of an exhaustive best-view ranking (with the
    row cap at 8, every read is cut short and the reads go on), with `view_depth` every video.  A FLAT index, so
    that the reads are exact: an HNSW search under a filter 5 of 600 rows pass can miss rows (seen on Lite), and
    the search is as exact as its index."""
    monkeypatch.setattr(video_store_module, "MAX_QUERY_ROWS", rows_cap)
    rng = np.random.default_rng(5)
    settings = StoreSettings(uri=backend_uri, prefix=fresh_prefix(), coarse_index="FLAT", view_depth=150)
    with VideoStore(settings, model_version="views-pack-1", coarse_dim=DIM, representation="binary", text_dim=0,
                    views=VIEWS, view_codes=True) as store:
        videos = [video(f"v{i:03d}", i, channel="news" if i % 2 else "sport", rare=i % 30 == 0) for i in range(150)]
        store.upsert_many(videos)
        filters = {None: lambda v: True, 'metadata["channel"] == "news"': lambda v: v.metadata["channel"] == "news",
                   'metadata["rare"] == true': lambda v: v.metadata["rare"]}
        for query in (videos[10].coarse, videos[20].views[1], unit(rng)):
            for k in (1, 7, 8, 40, 150):
                for expression, keep in filters.items():
                    if k > rows_cap:
                        continue
                    hits = store.search_coarse(query, k, filter=expression, consistency="Strong")
                    ranked = sorted(filter(keep, videos), key=lambda v: -best_view(v, query))[:k]
                    assert set(hits.ids) == {v.video_id for v in ranked}, (k, expression)
                    np.testing.assert_allclose(hits.scores, [best_view(v, query) for v in ranked], atol=1e-5)
                    by_id = {v.video_id: v for v in videos}
                    views = [np.vstack([by_id[i].coarse, by_id[i].views]) @ query for i in hits.ids]  # [k][1 + B]
                    assert [float(v[hits.code_views[n]]) for n, v in enumerate(views)] == pytest.approx(
                        [float(v.max()) for v in views], abs=1e-5)  # each hit's code view is its best view


def test_the_list_is_the_best_view_ranking_down_to_view_depth_and_by_views_read_under_it(backend_uri: str) -> None:
    """With `view_depth` under k, the first `view_depth` places are the exhaustive best-view ranking (ids and
    scores); every place under them holds a video once, scored between its full frame's score and its best view's,
    best first, and no video left out scores above any of them by its full frame."""
    rng = np.random.default_rng(8)
    settings = StoreSettings(uri=backend_uri, prefix=fresh_prefix(), coarse_index="FLAT")
    with VideoStore(settings, model_version="views-pack-1", coarse_dim=DIM, representation="binary", text_dim=0,
                    views=VIEWS, view_codes=True) as writer:
        videos = [video(f"v{i:03d}", i) for i in range(120)]
        writer.upsert_many(videos)
        writer.flush()
    by_id = {v.video_id: v for v in videos}
    for view_depth in (1, 20, 60):
        with VideoStore(replace(settings, view_depth=view_depth), create=False) as store:
            for query in (videos[3].coarse, videos[9].views[0], unit(rng)):
                hits = store.search_coarse(query, 80, consistency="Strong")
                ranked = sorted(videos, key=lambda v: -best_view(v, query))[:view_depth]
                assert hits.ids[:view_depth] == [v.video_id for v in ranked], view_depth
                np.testing.assert_allclose(hits.scores[:view_depth], [best_view(v, query) for v in ranked], atol=1e-5)
                assert len(set(hits.ids)) == 80 and (np.diff(hits.scores) <= 1e-6).all()
                for video_id, score in zip(hits.ids, hits.scores.tolist(), strict=True):
                    assert by_id[video_id].coarse @ query - 1e-5 <= score <= best_view(by_id[video_id], query) + 1e-5
                left_out = [v for v in videos if v.video_id not in set(hits.ids)]
                assert max(float(v.coarse @ query) for v in left_out) <= float(hits.scores[-1]) + 1e-5


def test_only_the_videos_a_crop_read_brings_into_the_list_have_their_rows_read(backend_uri: str,
                                                                              monkeypatch) -> None:
    """Crop views independent of their full frames bring many videos in; of those the crop read finds, only the
    ones that enter the top k are looked up (the rest can never enter), and the result stays exhaustive."""
    looked_up: list[str] = []
    video_rows = VideoStore._video_rows

    def counted(self, video_ids, *args, **kwargs):
        looked_up.extend(video_ids)
        return video_rows(self, video_ids, *args, **kwargs)

    monkeypatch.setattr(VideoStore, "_video_rows", counted)
    settings = StoreSettings(uri=backend_uri, prefix=fresh_prefix(), coarse_index="FLAT")
    with VideoStore(settings, model_version="views-pack-1", coarse_dim=DIM, representation="binary", text_dim=0,
                    views=VIEWS, view_codes=True) as store:
        videos = [video(f"v{i:02d}", i) for i in range(60)]
        store.upsert_many(videos)
        query = videos[7].views[0]
        looked_up.clear()
        hits = store.search_coarse(query, 3, consistency="Strong")
        ranked = sorted(videos, key=lambda v: -best_view(v, query))[:3]
        assert hits.ids == [v.video_id for v in ranked]
        np.testing.assert_allclose(hits.scores, [best_view(v, query) for v in ranked], atol=1e-5)
        crop_rows = sorted(((float(score), v.video_id) for v in videos for score in v.views @ query), reverse=True)
        first_crop_read = {video_id for _, video_id in crop_rows[:3 + 16]}  # k + 16 rows
        assert set(looked_up) <= {v.video_id for v in ranked}  # at most the newcomers of the top 3 ...
        assert len(first_crop_read) > 10  # ... of the many videos the first crop read brings


def test_reindex_and_delete_leave_no_stale_view(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        first = video("clip", 1)
        store.upsert_many([first, video("other", 2)])
        replaced = video("clip", 3)
        store.upsert(replaced)  # re-indexed: its old views must not be found
        old_view = first.views[0]
        hits = store.search_coarse(old_view, 2, consistency="Strong")
        assert dict(zip(hits.ids, hits.scores.tolist(), strict=True))["clip"] == pytest.approx(
            best_view(replaced, old_view), abs=1e-5)
        assert store._count(store.view_collection, "Strong") == 2 * (1 + VIEWS)
        assert store.delete("clip")
        assert store.search_coarse(old_view, 2, consistency="Strong").ids == ["other"]
        assert store._count(store.view_collection, "Strong") == 1 + VIEWS
        assert store.check(grace_s=0).clean


def test_views_of_an_unfinished_write_are_never_returned_and_are_repaired(backend_uri: str) -> None:
    """A writer that died after writing a new generation's views but before switching the row: the orphans are
    not hits (the search follows the rows' generations), check reports them, repair removes them; a video that
    lost views is incomplete."""
    with open_store(backend_uri, fresh_prefix()) as store:
        served = video("clip", 1)
        store.upsert_many([served, video("kept", 2)])
        (generation,) = new_generations(1)
        stray = unit(np.random.default_rng(9))
        store._call("insert", lambda c: c.insert(store.view_collection, [
            {"video_id": "clip", "generation": generation, "view": 1, "vector": stray.tolist()}]))
        hits = store.search_coarse(stray, 1, consistency="Strong")
        assert hits.scores[0] < 0.99 and hits.generations[0] != generation
        old_generation = (int((time.time() - 3_600) * 1000) << 20) | 5  # a writer that died an hour ago
        store._call("insert", lambda c: c.insert(store.view_collection, [
            {"video_id": "kept", "generation": old_generation, "view": view, "vector": stray.tolist()}
            for view in range(1 + VIEWS)]))
        assert store.search_coarse(stray, 2, consistency="Strong").scores[0] < 0.99
        report = store.check()  # the default grace: the hour-old rows are orphans, the fresh one may be in flight
        assert report.orphan_view_rows == 1 + VIEWS and report.skipped_recent_rows == 1
        assert report.orphan_video_ids == ["kept"] and not report.clean
        report = store.check(grace_s=0)
        assert report.orphan_view_rows == 2 + VIEWS and report.orphan_video_ids == ["clip", "kept"]
        assert report.orphan_rows == report.orphan_text_rows == 0 and not report.incomplete_video_ids
        assert store.check(repair=True, grace_s=0).repaired and store.check(grace_s=0).clean
        np.testing.assert_array_equal(store.get("clip").views, served.views)
        store._delete_in(store.view_collection, 'video_id == "kept" and view == 2')
        assert store.check(grace_s=0).incomplete_video_ids == ["kept"]
        store.check(repair=True, grace_s=0)
        assert store.count() == 1 and store.check(grace_s=0).clean


def test_bad_views_are_refused_and_nothing_is_written(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        store.upsert(video("kept", 1))
        rng = np.random.default_rng(5)
        bad = {"crop view 2": np.stack([unit(rng), np.ones(DIM, np.float32), unit(rng)]),  # not unit norm
               "crop view 1": np.full((VIEWS, DIM), np.nan, np.float32),
               "crop views must have shape": unit(rng, VIEWS + 1),
               "needs each video's 3 crop-view": None}
        for message, views in bad.items():
            item = video("a", 2)
            item.views = views
            with pytest.raises(InvalidVideo, match=message):
                store.upsert_many([video("e", 6), item])
        assert store.count() == 1 and store._count(store.view_collection, "Strong") == 1 + VIEWS
        with pytest.raises(InvalidVideo, match="unmatched"):
            store.search_coarse(unit(rng), 1, filter='video_id == "kept") or (video_id != ""')


def test_the_number_of_views_is_part_of_the_store(backend_uri: str) -> None:
    prefix = fresh_prefix()
    with open_store(backend_uri, prefix, views=0) as store:
        plain = video("clip", 1)
        with pytest.raises(InvalidVideo, match="holds no crop views"):
            store.upsert(plain)
        plain.views = plain.view_codes = None
        store.upsert(plain)
        assert not store._has(store.view_collection)
        assert store.search_coarse(plain.coarse, 1, consistency="Strong").ids == ["clip"]
    with pytest.raises(StoreMismatch, match="0 crop views per video"):
        with open_store(backend_uri, prefix) as other:
            other.count()
    with open_store(backend_uri, prefix, views=None) as adopting:  # admin tools adopt what is there
        assert adopting.count() == 1 and adopting.meta.views == 0
    prefix = fresh_prefix()
    with open_store(backend_uri, prefix) as store:
        store.upsert(video("clip", 1))
    with pytest.raises(StoreMismatch, match="3 crop views per video .*this caller: 0"):
        with open_store(backend_uri, prefix, views=0) as other:
            other.count()


def test_views_are_written_in_batches_and_rolled_back_with_a_failed_write(backend_uri: str, monkeypatch) -> None:
    """Crop views go in INSERT_BYTE_BUDGET-sized calls like frames; a write that fails before its switch leaves
    none of its views behind and the served generation as it was."""
    monkeypatch.setattr(video_store_module, "INSERT_BYTE_BUDGET", 4 * DIM * 3)  # three view rows a call
    with open_store(backend_uri, fresh_prefix()) as store:
        calls: list[str] = []
        call = store._call
        monkeypatch.setattr(store, "_call", lambda operation, action: calls.append(operation) or call(operation,
                                                                                                       action))
        videos = [video(f"v{i}", i) for i in range(4)]
        store.upsert_many(videos)
        assert calls.count("insert views") == -(-4 * (1 + VIEWS) // 3)
        for item in videos:
            np.testing.assert_array_equal(store.get(item.video_id).views, item.views)
        served = store.search_coarse(videos[2].views[2], 1, consistency="Strong")
        assert served.ids == ["v2"] and served.scores[0] == pytest.approx(1.0, abs=1e-5)

        def broken_switch(*args) -> None:
            raise RuntimeError("the switch failed")

        monkeypatch.setattr(store, "_switch", broken_switch)
        with pytest.raises(RuntimeError, match="the switch failed"):
            store.upsert_many([video("v2", 20), video("new", 21)])
        monkeypatch.undo()
        assert store._count(store.view_collection, "Strong") == 4 * (1 + VIEWS) and store.count() == 4
        np.testing.assert_array_equal(store.get("v2").views, videos[2].views)
        assert store.search_coarse(videos[2].views[2], 1, consistency="Strong").generations[0] == \
            served.generations[0]
        assert store.check(grace_s=0).clean


def test_the_number_of_views_is_checked_and_old_metadata_has_none() -> None:
    with pytest.raises(ValueError, match="views must be in 0..64"):
        make_meta("v1", DIM, "binary", "chunk", views=65)
    meta = make_meta("v1", DIM, "binary", "chunk", views=VIEWS)
    assert StoreMeta.from_json(meta.to_json()) == meta
    old = json.loads(meta.to_json())
    del old["dnsvr_store"]["views"], old["dnsvr_store"]["view_codes"]  # a store made before crop views
    assert StoreMeta.from_json(json.dumps(old)).views == 0
    with pytest.raises(ValueError, match="view_codes needs crop views"):
        make_meta("v1", DIM, "binary", "chunk", view_codes=True)
    kept = make_meta("v1", DIM, "binary", "chunk", views=VIEWS, view_codes=True)
    assert kept.has_view_codes and not meta.has_view_codes and StoreMeta.from_json(kept.to_json()) == kept


def test_each_views_fine_codes_are_read_back_by_the_view_a_search_names(backend_uri: str, monkeypatch) -> None:
    """read_codes returns the codes of the view asked for each video (the full frame's by default), across a
    small per-query row limit and for a video longer than a query's rows; a view the store keeps no codes of
    is refused; check counts the views' frame rows, so a video that lost one view's codes is incomplete."""
    monkeypatch.setattr("dnsvr.serving.store.schema.QUERY_BYTE_BUDGET", 4 * 36_864 * 2)  # 4 chunk rows a query
    with open_store(backend_uri, fresh_prefix()) as store:
        videos = [video("short", 1), video("long", 2, frames=300), video("other", 3)]
        store.upsert_many(videos)
        hits = store.search_coarse(videos[0].views[1], 3, consistency="Strong")
        assert hits.ids[0] == "short" and hits.code_views[0] == 2  # its second crop view is the query itself
        wanted = {v.video_id: (int(g), int(n)) for v, g, n in zip(
            sorted(videos, key=lambda v: hits.ids.index(v.video_id)), hits.generations, hits.frame_counts,
            strict=True)}
        for views in ({}, {"short": 2, "long": 3, "other": 1}, {"short": 0, "long": 1}):
            codes = store.read_codes(wanted, "Strong", views)
            for item in videos:
                view = views.get(item.video_id, 0)
                expected = item.fine_codes if view == 0 else item.view_codes[view - 1]
                np.testing.assert_array_equal(codes[item.video_id], expected)
        with pytest.raises(ValueError, match="no fine codes of view 4"):
            store.read_codes(wanted, "Strong", {"short": VIEWS + 1})
        assert store.check(grace_s=0).clean
        assert store.stats().frame_rows == sum(store.meta.video_frame_rows(len(v.fine_codes)) for v in videos)
        store._delete_in(store.frame_collection, 'video_id == "other" and frame_start >= 200000')
        assert store.check(grace_s=0).incomplete_video_ids == ["other"]


def test_a_store_with_views_that_keeps_no_view_codes_serves_its_full_frames_codes(backend_uri: str) -> None:
    """A store with crop views made for an export without `--view-codes` (and every store with views of stops
    31-33, whose metadata has no `view_codes`) keeps no crop views' codes: a video's view codes are not needed
    and are ignored, every hit's code view is its full frame's, asking for a crop's codes is refused, and a caller
    that keeps them is refused the store."""
    prefix = fresh_prefix()
    with open_store(backend_uri, prefix, view_codes=False) as store:
        assert not store.meta.has_view_codes
        bare = video("bare", 1)
        bare.view_codes = None
        store.upsert_many([bare, video("full", 2)])
        hits = store.search_coarse(bare.views[1], 2, consistency="Strong")
        assert hits.ids[0] == "bare" and hits.code_views.tolist() == [0, 0]
        assert store.get("full").view_codes is None and store.stats().frame_rows == 2 * store.meta.rows_for(3)
        with pytest.raises(ValueError, match="no fine codes of view 1"):
            store.read_codes({"bare": (int(hits.generations[0]), 3)}, "Strong", {"bare": 1})
        assert store.check(grace_s=0).clean
    with pytest.raises(StoreMismatch, match="fine codes not kept .this caller: kept"):
        with open_store(backend_uri, prefix) as other:
            other.count()
    with open_store(backend_uri, prefix, view_codes=None) as adopting:
        assert adopting.count() == 2 and not adopting.meta.has_view_codes


def test_bad_view_codes_are_refused_and_nothing_is_written(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        store.upsert(video("kept", 1))
        bad = {"crop views' fine codes must have shape": np.zeros((VIEWS, 4, 9, 64), np.uint8),
               "needs each video's 3 crop views' fine codes": None,
               "binary fine codes must be packed uint8": np.zeros((VIEWS, 3, 9, 64), np.float32)}
        for message, view_codes in bad.items():
            item = video("a", 2)
            item.view_codes = view_codes
            with pytest.raises(InvalidVideo, match=message):
                store.upsert_many([video("e", 6), item])
        assert store.count() == 1 and store.stats().frame_rows == store.meta.video_frame_rows(3)
