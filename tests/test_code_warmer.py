"""CodeWarmer: a search model's code cache filled from a real store in the background
(dnsvr.serving.pipelines.code_warmer), against the session's `milvus-lite server`."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
from dnsvr.serving.pipelines.code_cache import CodeCache
from dnsvr.serving.pipelines.code_warmer import CodeWarmer, warm_period
from dnsvr.serving.store.schema import IndexedVideo
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import VideoStore
from dnsvr.training.networks.codes import pack_codes

DIM = 16
FRAME = 9 * 64  # bytes of one frame's packed codes


def make_video(video_id: str, frames: int, seed: int) -> IndexedVideo:
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=DIM).astype(np.float32)
    fine = pack_codes(rng.choice([-1.0, 1.0], size=(frames, 9, 512)))
    return IndexedVideo(video_id, coarse / np.linalg.norm(coarse), 0.5, fine)


@pytest.fixture()
def store(lite_server):
    settings = StoreSettings(uri=lite_server.uri, prefix="w" + uuid.uuid4().hex[:12])
    with VideoStore(settings, model_version="warm-test", coarse_dim=DIM, representation="binary") as opened:
        yield opened


def fill(store: VideoStore, count: int, frames: int = 5) -> dict[str, IndexedVideo]:
    videos = {f"v{i:02d}": make_video(f"v{i:02d}", frames + i % 3, i) for i in range(count)}
    store.upsert_many(list(videos.values()))
    return videos


def generations(store: VideoStore) -> dict[str, int]:
    return {video_id: generation for video_id, generation, _ in store.code_rows()}


def idle_warmer(cache: CodeCache, batch: int = 4) -> CodeWarmer:
    """A warmer whose scans the test runs itself (no thread), without waiting for idleness."""
    return CodeWarmer(lambda: None, cache, period_s=60, batch=batch, idle_s=0, start=False)


def test_a_scan_caches_every_videos_codes_under_its_generation(store):
    videos = fill(store, 9)
    cache = CodeCache(1 << 20)
    report = idle_warmer(cache).warm_once(store)
    assert (report.videos, report.added, report.full) == (9, 9, False)
    keys = [(video_id, generation, 0) for video_id, generation in generations(store).items()]
    found = cache.lookup(keys)
    assert len(found) == 9
    for (video_id, _, _), codes in found.items():
        assert codes.tobytes() == videos[video_id].fine_codes.tobytes()
    again = idle_warmer(cache).warm_once(store)
    assert (again.videos, again.added) == (9, 0)  # nothing read twice


def test_a_full_cache_stops_the_scan_and_keeps_what_searches_put(store):
    fill(store, 6, frames=4)  # 4-6 frames a video
    cache = CodeCache(14 * FRAME)
    cache.put(("searched", 1, 0), np.zeros((4, 9, 64), np.uint8))
    report = idle_warmer(cache, batch=2).warm_once(store)
    assert report.full and report.added >= 1 and cache.held_bytes <= 14 * FRAME
    assert cache.missing([("searched", 1, 0)]) == []  # a warm scan never drops an entry


def test_a_reindexed_video_is_cached_under_its_new_generation_and_a_deleted_one_not_again(store):
    fill(store, 3)
    cache = CodeCache(1 << 20)
    warmer = idle_warmer(cache)
    warmer.warm_once(store)
    old = generations(store)
    replaced = make_video("v01", 7, 99)
    store.upsert(replaced)
    store.delete("v02")
    new = generations(store)
    assert new["v01"] != old["v01"] and "v02" not in new
    report = warmer.warm_once(store)
    assert (report.videos, report.added) == (2, 1)
    assert cache.lookup([("v01", new["v01"], 0)])["v01", new["v01"], 0].tobytes() == replaced.fine_codes.tobytes()


def test_no_batch_starts_while_a_request_is_answered(store):
    fill(store, 3)
    cache = CodeCache(1 << 20)
    warmer = CodeWarmer(lambda: None, cache, period_s=60, idle_s=0.05, start=False)
    with warmer.busy():
        scan = threading.Thread(target=warmer.warm_once, args=(store,))
        scan.start()
        time.sleep(0.3)
        assert cache.held_bytes == 0
    scan.join(30)
    assert not scan.is_alive() and warmer.last_report is None and cache.held_bytes > 0


def test_the_thread_waits_for_a_store_then_warms_it_and_stops_when_closed(store):
    fill(store, 4)
    keys = [(video_id, generation, 0) for video_id, generation in generations(store).items()]
    cache = CodeCache(1 << 20)
    stores = iter([None])  # nothing indexed at the first scan
    warmer = CodeWarmer(lambda: next(stores, store), cache, period_s=0.1, idle_s=0)
    try:
        deadline = time.monotonic() + 30
        while cache.missing(keys) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cache.missing(keys) == [] and warmer.last_error is None
    finally:
        warmer.close()
    assert not warmer._thread.is_alive()


def test_the_period_parameter_is_checked():
    assert warm_period(None) == 0 and warm_period(" ") == 0 and warm_period("60") == 60 and warm_period("0.5") == 0.5
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(ValueError, match="code_cache_warm_s must be"):
            warm_period(bad)
    with pytest.raises(ValueError, match="period must be > 0"):
        CodeWarmer(lambda: None, CodeCache(1), period_s=0, start=False)
