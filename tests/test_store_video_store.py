"""VideoStore against real Milvus processes: a `milvus-lite server` (the embedded default's engine) and a real
Milvus 2.3.5 standalone server (`milvus-server`), both on 127.0.0.1, started once per session (~10 s).

Every test works in its own collections (a fresh prefix), so tests do not see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from dnsvr.serving.cli import main as cli
from dnsvr.serving.store.schema import IndexedVideo, InvalidVideo
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import (
    StoreError,
    StoreMismatch,
    StoreUnavailable,
    VideoNotFound,
    VideoStore,
    lock_path_for,
)
from dnsvr.training.networks.codes import pack_codes

DIM = 32
VERSION = "pack-test-1"


@pytest.fixture(params=["lite", "server"])
def backend_uri(request) -> str:
    server = request.getfixturevalue("lite_server" if request.param == "lite" else "milvus_server")
    return server.uri


def open_store(uri: str, prefix: str, representation: str = "binary", **wanted) -> VideoStore:
    wanted = {"model_version": VERSION, "coarse_dim": DIM, "representation": representation, **wanted}
    return VideoStore(StoreSettings(uri=uri, prefix=prefix), **wanted)


def fresh_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


def make_video(video_id: str, frames: int, seed: int, representation: str = "binary") -> IndexedVideo:
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=DIM).astype(np.float32)
    if representation == "binary":
        fine = pack_codes(rng.choice([-1.0, 1.0], size=(frames, 9, 512)))
    else:
        fine = rng.normal(size=(frames, 9, 512)).astype(np.float32)
    return IndexedVideo(video_id, coarse / np.linalg.norm(coarse), float(rng.random()), fine,
                        source_uri=f"s3://bucket/{video_id}.mp4", metadata={"seed": seed, "tags": ["a", "b"]})


def frame_row_count(store: VideoStore) -> int:
    return store._count(store.frame_collection, "Strong")


@pytest.mark.parametrize("representation", ["binary", "float"])
def test_round_trip_is_exact(backend_uri: str, representation: str) -> None:
    with open_store(backend_uri, fresh_prefix(), representation) as store:
        videos = [make_video(f"v{i}", frames, i, representation) for i, frames in enumerate([1, 60, 130])]
        store.upsert_many(videos[:2])
        store.upsert(videos[2])
        assert store.count() == 3
        fetched = store.fetch_codes(["v2", "absent", "v0", "v1"], consistency="Strong")
        assert fetched.missing == ["absent"]
        np.testing.assert_array_equal(fetched.frame_counts, [130, 0, 1, 60])
        assert fetched.codes.shape == (4, 130, *videos[0].fine_codes.shape[1:])
        assert fetched.codes.dtype == videos[0].fine_codes.dtype
        for row, video in zip([0, 2, 3], [videos[2], videos[0], videos[1]], strict=True):
            count = fetched.frame_counts[row]
            assert fetched.codes[row, :count].tobytes() == video.fine_codes.tobytes()
            assert not fetched.codes[row, count:].any()
        assert not fetched.codes[1].any()
        stored = store.get("v1")
        np.testing.assert_allclose(stored.coarse, videos[1].coarse, rtol=1e-6)
        assert stored.selector == pytest.approx(videos[1].selector)
        assert (stored.frame_count, stored.source_uri, stored.metadata, stored.model_version) == (
            60, "s3://bucket/v1.mp4", {"seed": 1, "tags": ["a", "b"]}, VERSION)
        assert stored.indexed_at > 1.7e9
        hits = store.search_coarse(videos[2].coarse, k=3, consistency="Strong")
        assert hits.ids[0] == "v2" and hits.scores[0] == pytest.approx(1.0, abs=1e-4)
        assert hits.selectors[0] == pytest.approx(videos[2].selector)
        filtered = store.search_coarse(videos[2].coarse, k=3, filter='video_id != "v2"', consistency="Strong")
        assert "v2" not in filtered.ids


def open_at_once(uri: str, prefix: str, openers: int = 4) -> list[str]:
    """`openers` stores opening one new store at the same moment, each with its own client (as Triton's model
    instances and parallel indexers do); returns the errors."""
    barrier = threading.Barrier(openers)

    def open_one(_: int) -> str | None:
        with open_store(uri, prefix) as store:
            barrier.wait()
            try:
                store.meta  # noqa: B018 - opens, creating the collections where missing
            except Exception as error:
                return repr(error)
        return None

    with ThreadPoolExecutor(openers) as pool:
        return [error for error in pool.map(open_one, range(openers)) if error]


def check_usable(uri: str, prefix: str) -> None:
    with open_store(uri, prefix) as writer, open_store(uri, prefix) as reader:
        video = make_video("shared", 5, 3)
        writer.upsert(video)
        assert reader.fetch_codes(["shared"], consistency="Strong").codes[0].tobytes() == video.fine_codes.tobytes()
        assert reader.check(grace_s=0).clean


def test_a_new_store_opened_by_many_at_once(backend_uri: str) -> None:
    """CI once failed here: two Triton index instances created the same collection and one got 'already
    exists' (Milvus Lite can also half-create it).  Openers on one machine take turns."""
    prefix = fresh_prefix()
    assert open_at_once(backend_uri, prefix) == []
    check_usable(backend_uri, prefix)


def test_a_lite_files_locks_lie_beside_it_and_a_servers_in_this_users_folder(tmp_path, monkeypatch) -> None:
    """Locks of a Lite file go with its folder, whatever the spelling of its path; a server's lie in the private
    temporary folder (mode 0700), never loose in the shared one."""
    monkeypatch.chdir(tmp_path)
    beside = lock_path_for(str(tmp_path / "a.db"), "p", "create")
    assert beside.parent == tmp_path and beside.name.startswith(".a.db.dnsvr-create-")
    assert lock_path_for("a.db", "p", "create") == beside
    assert lock_path_for("a.db", "q", "create") != beside != lock_path_for("a.db", "p", "lite-call")
    with open_store(str(tmp_path / "a.db"), "p") as store:
        store.meta  # noqa: B018 - creates the store under its lock
    assert beside.exists()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    served = lock_path_for("http://127.0.0.1:19530", "p", "create")
    assert served.parent == tmp_path / "tmp" / f"dnsvr-{os.geteuid()}"
    assert stat.S_IMODE(served.parent.stat().st_mode) == 0o700


def test_a_new_store_opened_from_several_machines(milvus_server, monkeypatch) -> None:
    """Openers on other machines do not share this machine's lock; they cannot be started here, so the lock is
    replaced by a test double that lets every opener through.  Then a loser of the race meets a collection
    that exists but is not indexed yet ('index not found' on load) and must wait for it."""
    monkeypatch.setattr(VideoStore, "_creation_lock", lambda self: contextlib.nullcontext())
    for _ in range(2):
        prefix = fresh_prefix()
        assert open_at_once(milvus_server.uri, prefix) == []
        check_usable(milvus_server.uri, prefix)


def test_videos_sharing_a_generation_keep_their_own_frames(backend_uri: str, monkeypatch) -> None:
    """Two writers drawing the same generation value (the same millisecond, equal random bits) is a rare race
    that cannot be caused on demand, so the generator is replaced by a test double returning one value.
    Before reads were keyed by (video_id, generation), fetch_codes returned frames of the other video."""
    monkeypatch.setattr("dnsvr.serving.store.video_store.new_generations", lambda count: [(1 << 50) + 7] * count)
    with open_store(backend_uri, fresh_prefix()) as store:
        first, second = make_video("first", 12, 1), make_video("second", 12, 2)
        store.upsert(first)
        store.upsert(second)
        for request in (["first"], ["second"], ["second", "first"]):
            fetched = store.fetch_codes(request, consistency="Strong")
            assert not fetched.missing
            for row, video_id in enumerate(request):
                expected = first if video_id == "first" else second
                assert fetched.codes[row].tobytes() == expected.fine_codes.tobytes(), video_id
        report = store.check(grace_s=0)
        assert report.clean and report.videos == 2, report


def test_fetch_across_the_query_row_limit_is_exact(backend_uri: str) -> None:
    """240 videos x 70 frames: 16,800 frame rows on a server (> 16,384 per query), 480 chunk rows on Lite
    (> its 455-row byte budget per query): fetch_codes must split the candidates and return every frame."""
    with open_store(backend_uri, fresh_prefix()) as store:
        videos = [make_video(f"c{i:03d}", 70, 100 + i) for i in range(240)]
        store.upsert_many(videos)
        assert store.meta.rows_for(70) * len(videos) > store.meta.rows_per_query
        order = list(np.random.default_rng(0).permutation(len(videos)))
        fetched = store.fetch_codes([videos[i].video_id for i in order], consistency="Strong")
        assert not fetched.missing and fetched.frame_counts.tolist() == [70] * len(videos)
        for row, index in enumerate(order):
            assert fetched.codes[row].tobytes() == videos[index].fine_codes.tobytes(), videos[index].video_id


def test_search_coarse_carries_each_rows_generation_and_frame_count(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        videos = [make_video(f"g{i}", frames, i) for i, frames in enumerate([3, 70, 1])]
        store.upsert_many(videos)
        rows = store._video_rows([v.video_id for v in videos], ["generation"], "Strong")
        hits = store.search_coarse(videos[1].coarse, k=3, consistency="Strong")
        assert sorted(hits.ids) == ["g0", "g1", "g2"]
        assert hits.generations.dtype == np.int64 and hits.frame_counts.dtype == np.int64
        by_id = {v.video_id: v for v in videos}
        for video_id, generation, count in zip(hits.ids, hits.generations, hits.frame_counts, strict=True):
            assert (generation, count) == (rows[video_id]["generation"], len(by_id[video_id].fine_codes))
        store.upsert(make_video("g1", 5, 9))  # a re-index: a fresh generation, the new length
        again = store.search_coarse(make_video("g1", 5, 9).coarse, k=1, consistency="Strong")
        assert again.ids == ["g1"] and again.frame_counts.tolist() == [5]
        assert again.generations[0] != rows["g1"]["generation"]


def test_read_codes_across_a_small_query_row_limit_is_exact(backend_uri: str, monkeypatch) -> None:
    """read_codes with the (generation, frame_count) of coarse hits, the per-query row limit shrunk to 4 rows (the
    byte budget behind `rows_per_query` lowered), so short videos are split over several queries and a long one
    is paged by frame index; a stale generation, a wrong frame count and a deleted video are left out."""
    with open_store(backend_uri, fresh_prefix()) as store:
        per_row = store.meta.frames_per_row
        monkeypatch.setattr("dnsvr.serving.store.schema.QUERY_BYTE_BUDGET",
                            4 * store.meta.row_bytes * (2 if store.meta.layout == "chunk" else 1))
        assert store.meta.rows_per_query == 4
        lengths = [1 + (i * 37) % (2 * per_row) for i in range(11)] + [9 * per_row + 5]
        videos = [make_video(f"r{i:02d}", frames, 300 + i) for i, frames in enumerate(lengths)]
        store.upsert_many(videos)
        hits = store.search_coarse(videos[0].coarse, k=len(videos), consistency="Strong")
        wanted = {video_id: (generation, count) for video_id, generation, count
                  in zip(hits.ids, hits.generations.tolist(), hits.frame_counts.tolist(), strict=True)}
        assert len(wanted) == len(videos)
        real_call, queries = store._call, []

        def counting_call(operation, action, *args):
            queries.append(operation)
            return real_call(operation, action, *args)

        monkeypatch.setattr(store, "_call", counting_call)
        codes = store.read_codes(wanted, consistency="Strong")
        rows = sum(store.meta.rows_for(length) for length in lengths)
        assert queries.count("query frames") >= -(-rows // 4) and "get videos" not in queries
        assert sorted(codes) == sorted(wanted)
        for video in videos:
            assert codes[video.video_id].tobytes() == video.fine_codes.tobytes(), video.video_id
        stale = wanted["r00"]
        store.upsert(make_video("r00", 4, 999))
        store.delete("r01")
        generation, count = wanted["r02"]
        left = store.read_codes({"r00": stale, "r01": wanted["r01"], "r02": (generation, count + 1),
                                 "r03": wanted["r03"]}, consistency="Strong")
        assert list(left) == ["r03"] and left["r03"].tobytes() == videos[3].fine_codes.tobytes()
        with pytest.raises(InvalidVideo):
            store.read_codes({'bad"id': (1, 1)})


def test_reindex_is_idempotent_and_a_shorter_one_leaves_no_stale_frames(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        long = make_video("clip", 150, 1)
        store.upsert(long)
        store.upsert(long)
        assert store.count() == 1
        rows_for_long = frame_row_count(store)
        assert rows_for_long == store.meta.rows_for(150)
        short = make_video("clip", 7, 2)
        store.upsert(short)
        fetched = store.fetch_codes(["clip"], consistency="Strong")
        assert fetched.frame_counts.tolist() == [7]
        assert fetched.codes[0].tobytes() == short.fine_codes.tobytes()
        assert frame_row_count(store) == store.meta.rows_for(7)
        assert store.check(grace_s=0).clean


def test_delete_removes_row_then_frames(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        store.upsert_many([make_video("keep", 10, 1), make_video("gone", 70, 2)])
        assert store.delete("gone") is True
        assert store.count() == 1
        with pytest.raises(VideoNotFound):
            store.get("gone")
        assert store.fetch_codes(["gone"], consistency="Strong").missing == ["gone"]
        assert "gone" not in store.search_coarse(make_video("gone", 1, 2).coarse, 5, consistency="Strong").ids
        assert frame_row_count(store) == store.meta.rows_for(10)
        assert store.delete("gone") is False


def jpeg(value: int) -> bytes:
    from dnsvr.serving.pipelines.thumbnails import video_thumbnail

    return video_thumbnail(np.full((1, 224, 224, 3), value, np.uint8))


def test_a_thumbnail_switches_and_goes_with_its_row(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        first, second = jpeg(10), jpeg(200)
        store.upsert_many([replace(make_video("a", 3, 1), thumbnail=first), make_video("b", 3, 2)])
        assert store.thumbnails(["a", "b", "never"], consistency="Strong") == {"a": first}
        assert store.get("a").thumbnail == first and store.get("b").thumbnail is None
        store.upsert(replace(make_video("a", 5, 3), thumbnail=second))  # a re-index replaces it
        assert store.thumbnails(["a"], consistency="Strong") == {"a": second}
        for bad, message in [(b"GIF89a", "not a JPEG"), (first + b"\0" * 12_288, "maximum is 12288"),
                             ("/9j/4AAQ", "must be JPEG bytes")]:
            with pytest.raises(InvalidVideo, match=message):
                store.upsert(replace(make_video("a", 2, 4), thumbnail=bad))
        assert store.thumbnails(["a"], consistency="Strong") == {"a": second}  # the refused writes left it
        with pytest.raises(InvalidVideo):
            store.thumbnails(['bad"id'])
        store.delete("a")
        assert store.thumbnails(["a", "b"], consistency="Strong") == {}


def test_a_store_made_before_thumbnails_keeps_working(lite_server, monkeypatch) -> None:
    """Schema 1 (no thumbnail field): videos are written and read as before, without their thumbnails."""
    import dnsvr.serving.store.video_store as video_store

    made = video_store.make_meta
    monkeypatch.setattr(video_store, "make_meta", lambda *args: replace(made(*args), schema=1))
    prefix = fresh_prefix()
    with open_store(lite_server.uri, prefix) as store:
        store.upsert(replace(make_video("old", 3, 1), thumbnail=jpeg(10)))
    monkeypatch.undo()
    with open_store(lite_server.uri, prefix) as store:
        assert not store.meta.has_thumbnails
        store.upsert(replace(make_video("new", 3, 2), thumbnail=jpeg(20)))
        assert store.count() == 2 and store.get("new").thumbnail is None
        assert store.thumbnails(["old", "new"], consistency="Strong") == {}
        assert store.check(grace_s=0).clean


def indexes(store: VideoStore, collection: str) -> set[str]:
    assert store.meta is not None  # opens the store (and so adds what is missing)
    return set(store._call("list_indexes", lambda client: client.list_indexes(collection)))


def test_frame_and_text_rows_are_indexed_by_video_and_generation_on_a_server(milvus_server, monkeypatch) -> None:
    """A new store's frame and text collections get the scalar indexes; a store made without them (before they
    came) keeps working while loaded and gets them at an open that finds it released; reads stay exact."""
    import dnsvr.serving.store.video_store as video_store

    monkeypatch.setattr(video_store, "SCALAR_INDEXES", ())
    prefix = fresh_prefix()
    videos = [make_video(f"v{i}", 5 + i, i) for i in range(4)]
    with open_store(milvus_server.uri, prefix, text_dim=8) as store:
        texts = np.random.default_rng(0).normal(size=(len(videos), 8)).astype(np.float32)
        texts /= np.linalg.norm(texts, axis=1, keepdims=True)
        store.upsert_many([replace(video, text=text) for video, text in zip(videos, texts, strict=True)])
        assert not {"video_id", "generation"} & indexes(store, store.frame_collection)
    monkeypatch.undo()
    with open_store(milvus_server.uri, prefix, text_dim=8) as store:  # loaded: left as it is, still served
        assert not {"video_id", "generation"} & indexes(store, store.frame_collection)
        assert store.fetch_codes(["v1"], consistency="Strong").missing == []
        for name in (store.frame_collection, store.text_collection):
            store._call("release", lambda client, n=name: client.release_collection(n))
    with open_store(milvus_server.uri, prefix, text_dim=8) as store:  # released: indexed, then loaded
        for name in (store.frame_collection, store.text_collection):
            assert {"video_id", "generation"} <= indexes(store, name), name
        fetched = store.fetch_codes([video.video_id for video in videos], consistency="Strong")
        for index, video in enumerate(videos):
            np.testing.assert_array_equal(fetched.codes[index, :fetched.frame_counts[index]], video.fine_codes)
        store.delete("v0")
        assert store.check(grace_s=0).clean
    with open_store(milvus_server.uri, fresh_prefix()) as fresh:
        assert {"video_id", "generation"} <= indexes(fresh, fresh.frame_collection)


def test_the_server_reports_rows_it_has_not_indexed_yet(backend_uri: str) -> None:
    import time

    with open_store(backend_uri, fresh_prefix()) as store:
        store.upsert_many([make_video(f"v{i}", 3, i) for i in range(20)])
        deadline = time.monotonic() + 60
        while (pending := store.pending_index_rows()) and time.monotonic() < deadline:
            time.sleep(1)
        assert pending == 0


def test_a_filter_naming_a_timeout_is_a_bad_filter_not_an_outage(backend_uri: str) -> None:
    """The server's answer echoes the filter ("unknown field 'DEADLINE'"): a StoreError, not StoreUnavailable
    (found by the text-search filter fuzz)."""
    with open_store(backend_uri, fresh_prefix()) as store:
        video = make_video("a", 2, 1)
        store.upsert(video)
        for expression in ("DEADLINE", "connection_timeout > 3", "unavailable"):
            with pytest.raises(StoreError) as raised:
                store.search_coarse(video.coarse, 3, filter=expression)
            assert not isinstance(raised.value, StoreUnavailable), raised.value


def test_bad_input_writes_nothing(backend_uri: str) -> None:
    with open_store(backend_uri, fresh_prefix()) as store:
        good = make_video("ok", 3, 1)
        bad_videos = [
            make_video("", 3, 1),
            make_video("x" * 300, 3, 1),
            IndexedVideo("nan", np.full(DIM, np.nan, np.float32), 0.1, good.fine_codes),
            IndexedVideo("dim", np.ones(DIM + 1, np.float32) / np.sqrt(DIM + 1), 0.1, good.fine_codes),
            IndexedVideo("dtype", good.coarse, 0.1, good.fine_codes.astype(np.int16)),
            IndexedVideo("zero", good.coarse, 0.1, np.zeros((0, 9, 64), np.uint8)),
        ]
        for bad in bad_videos:
            with pytest.raises(InvalidVideo):
                store.upsert(bad)
        with pytest.raises(InvalidVideo):  # one bad video in a batch: none of the batch is written
            store.upsert_many([good, bad_videos[2]])
        with pytest.raises(InvalidVideo):
            store.search_coarse(np.ones(DIM + 1, np.float32), 3)
        with pytest.raises(InvalidVideo):
            store.fetch_codes(['bad"id'])
        assert store.count() == 0 and frame_row_count(store) == 0


def test_store_of_another_model_is_refused(backend_uri: str) -> None:
    prefix = fresh_prefix()
    with open_store(backend_uri, prefix) as store:
        store.upsert(make_video("a", 2, 1))
    for wanted in ({"model_version": "pack-test-2"}, {"coarse_dim": DIM * 2}, {"representation": "float"}):
        with pytest.raises(StoreMismatch, match="must not be mixed"):
            open_store(backend_uri, prefix, **wanted).count()
    with VideoStore(StoreSettings(uri=backend_uri, prefix=prefix), create=False) as adopted:
        assert (adopted.meta.model_version, adopted.meta.coarse_dim) == (VERSION, DIM)
        assert adopted.count() == 1


CRASHING_WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from dnsvr.serving.store.video_store import VideoStore
    from dnsvr.serving.store.settings import StoreSettings
    from dnsvr.serving.store.schema import IndexedVideo

    uri, prefix, frames = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = VideoStore(StoreSettings(uri=uri, prefix=prefix), model_version="{version}", coarse_dim={dim},
                       representation="binary")
    real_call = store._call

    def call(operation, action):  # fault injection: die the moment the per-video row would be written
        if operation == "upsert videos":
            os.kill(os.getpid(), signal.SIGKILL)
        return real_call(operation, action)

    store._call = call
    coarse = np.zeros({dim}, np.float32)
    coarse[0] = 1.0
    codes = np.full((frames, 9, 64), 0xA5, np.uint8)
    store.upsert(IndexedVideo("clip", coarse, 0.5, codes))
""").format(version=VERSION, dim=DIM)


def test_an_insert_broken_off_after_the_server_took_it_stores_no_row_twice(backend_uri: str, monkeypatch) -> None:
    """The server stores a frame batch, then the connection breaks before its answer (the server killed in that
    window: CI saw an acknowledged video with a frame row twice).  The retry on a new connection inserts only
    what is missing: the video is whole, its codes exact, the store's check clean."""
    from pymilvus import MilvusClient

    real_insert, broken = MilvusClient.insert, []
    with open_store(backend_uri, fresh_prefix()) as store:
        def insert_then_break(client, collection_name, data, *args, **kwargs):
            result = real_insert(client, collection_name, data, *args, **kwargs)
            if collection_name == store.frame_collection and not broken:
                broken.append(len(data))
                raise ConnectionError("connection reset by peer before the insert's answer")
            return result

        monkeypatch.setattr(MilvusClient, "insert", insert_then_break)
        video = make_video("broken-off", 90, 3)
        store.upsert(video)
        assert broken == [store.meta.rows_for(90)]
        fetched = store.fetch_codes(["broken-off"], consistency="Strong")
        assert fetched.codes[0, :fetched.frame_counts[0]].tobytes() == video.fine_codes.tobytes()
        assert frame_row_count(store) == store.meta.rows_for(90)
        assert store.check(grace_s=0).clean


def test_writer_killed_between_frames_and_row_leaves_only_orphans(backend_uri: str, capsys) -> None:
    """A real writer process is SIGKILLed after its frames and before its row (it kills itself at that point:
    the only way to hit the window deterministically). The old version stays served; repair drops orphans."""
    prefix = fresh_prefix()
    with open_store(backend_uri, prefix) as store:
        old = make_video("clip", 90, 1)
        store.upsert(old)
        writer = subprocess.run([sys.executable, "-c", CRASHING_WRITER, backend_uri, prefix, "20"],
                                capture_output=True, text=True, timeout=120)
        assert writer.returncode == -signal.SIGKILL, writer.stderr[-2000:]
        fetched = store.fetch_codes(["clip"], consistency="Strong")
        assert fetched.codes[0, :fetched.frame_counts[0]].tobytes() == old.fine_codes.tobytes()
        report = store.check(grace_s=0)
        assert report.orphan_rows == store.meta.rows_for(20) and report.orphan_video_ids == ["clip"]
        assert store.check(grace_s=3600).orphan_rows == 0  # an upsert in flight is not touched by default
        assert cli.main(["store", "check", "--store", backend_uri, "--prefix", prefix, "--grace", "0"]) == 1
        assert cli.main(["store", "check", "--store", backend_uri, "--prefix", prefix, "--grace", "0",
                         "--repair"]) == 0
        assert "orphan frame rows: " in capsys.readouterr().out
        assert store.check(grace_s=0).clean
        assert frame_row_count(store) == store.meta.rows_for(90)
        writer = subprocess.run([sys.executable, "-c", CRASHING_WRITER, backend_uri, prefix, "5"],
                                capture_output=True, text=True, timeout=120)
        store.delete("clip")
        assert store.fetch_codes(["clip"], consistency="Strong").missing == ["clip"]
        assert cli.main(["store", "check", "--store", backend_uri, "--prefix", prefix, "--grace", "0",
                         "--repair"]) == 0
        assert store.count() == 0 and frame_row_count(store) == 0


def test_a_store_has_pymilvus_look_for_scipy_as_it_connects(lite_server, monkeypatch) -> None:
    """pymilvus's lazy scipy.sparse check re-executes scipy.sparse's __init__; two request threads running it at
    once met half-imported submodules (a served search failed).  A store runs it once as it connects, under its
    connection lock, before any thread reads through it."""
    from dnsvr.serving.store import video_store
    from pymilvus.client.utils import SciPyHelper

    video_store.settle_scipy_check()
    assert SciPyHelper._checked
    checks = []
    monkeypatch.setattr(video_store, "settle_scipy_check", lambda: checks.append(threading.get_ident()))
    store = VideoStore(StoreSettings(uri=lite_server.uri, prefix=fresh_prefix()), create=False)
    with ThreadPoolExecutor(4) as pool:
        clients = list(pool.map(lambda _: store._connect(), range(4)))
    store.close()
    assert len(checks) == 1 and all(client is clients[0] for client in clients)


def test_store_cli_stats_and_delete(lite_server, capsys) -> None:
    prefix = fresh_prefix()
    with open_store(lite_server.uri, prefix) as store:
        store.upsert_many([make_video("a", 60, 1), make_video("b", 60, 2)])
    assert cli.main(["store", "stats", "--store", lite_server.uri, "--prefix", prefix]) == 0
    out = capsys.readouterr().out
    assert "videos:          2" in out and "frames:          120" in out and VERSION in out
    assert cli.main(["store", "delete", "--store", lite_server.uri, "--prefix", prefix, "a"]) == 0
    assert cli.main(["store", "delete", "--store", lite_server.uri, "--prefix", prefix, "a"]) == 1
    assert cli.main(["store", "stats", "--store", lite_server.uri, "--prefix", "nostore"]) == 2
    assert "no video store" in capsys.readouterr().err


def test_embedded_db_path(tmp_path) -> None:
    """The default: a .db path opened in-process (one process only)."""
    path = tmp_path / "store" / "milvus.db"
    with open_store(str(path), "dnsvr") as store:
        store.upsert(make_video("a", 65, 1))
        assert store.meta.layout == "chunk"
        assert store.fetch_codes(["a"]).frame_counts.tolist() == [65]
        stats = store.stats()
        assert (stats.videos, stats.frames, stats.frame_rows) == (1, 65, 2) and stats.disk_bytes > 0


def test_server_killed_gives_typed_error_then_reconnects(request, backend_uri: str) -> None:
    """Kill -9 the session's server under a connected client, then restart it on the same data and port.
    (Milvus 2.3.5 fixes its embedded etcd peer port at 2380, so a second 2.3.5 server cannot run beside it.)"""
    server = request.getfixturevalue("lite_server" if "lite" in request.node.name else "milvus_server")
    token = "reader:s3cret-token"
    settings = StoreSettings(uri=server.uri, token=token, prefix=fresh_prefix(), timeout_s=5)
    with VideoStore(settings, model_version=VERSION, coarse_dim=DIM, representation="binary") as store:
        video = make_video("a", 10, 1)
        store.upsert(video)
        server.kill()
        try:
            with pytest.raises(StoreUnavailable) as error:
                store.fetch_codes(["a"])
            assert server.uri in str(error.value) and token not in str(error.value)
            with pytest.raises(StoreUnavailable):
                store.count()
        finally:
            server.start()  # same data directory and port
        fetched = store.fetch_codes(["a"], consistency="Strong")
        assert fetched.codes[0].tobytes() == video.fine_codes.tobytes()


def test_a_refused_connection_is_tried_again_for_reconnect_s(lite_server) -> None:
    """A write that finds the server down (killed, restarted 1.5 s later by another thread) waits for it when
    `reconnect_s` allows, and lands; nothing is written twice."""
    settings = StoreSettings(uri=lite_server.uri, prefix=fresh_prefix(), timeout_s=5, reconnect_s=30)
    with VideoStore(settings, model_version=VERSION, coarse_dim=DIM, representation="binary") as store:
        store.upsert(make_video("a", 10, 1))
        lite_server.kill()
        restart = threading.Timer(1.5, lite_server.start)
        restart.start()
        try:
            began = time.monotonic()
            store.upsert(make_video("b", 4, 2))
            waited = time.monotonic() - began
        finally:
            restart.join()
            if not lite_server.running:
                lite_server.start()
        assert waited >= 1.0
        fetched = store.fetch_codes(["a", "b"], consistency="Strong")
        assert fetched.frame_counts.tolist() == [10, 4]
        assert store.stats().frames == 14 and store.check(grace_s=0).clean


def test_concurrent_writers_on_milvus_lite_lose_no_row(lite_server) -> None:
    """Four writers at once, each its own client (as Triton's model instances are): every video complete
    afterwards.  Without the store's turn on Milvus Lite this lost every frame row of 2-5 of 101 videos in each
    of 5 runs (`benchmarks/lite_concurrency.py`)."""
    prefix = fresh_prefix()
    stores = [VideoStore(StoreSettings(uri=lite_server.uri, prefix=prefix), model_version=VERSION, coarse_dim=DIM,
                         representation="binary") for _ in range(4)]

    def write(worker: int) -> None:
        for number in range(25):
            stores[worker].upsert(make_video(f"w{worker}-{number}", 6, 100 * worker + number))

    try:
        stores[0].upsert(make_video("first", 6, 0))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(write, range(4)))
        report = stores[0].check(grace_s=0)
        assert report.videos == 101 and report.incomplete_video_ids == [] and report.clean
        ids = [f"w{worker}-{number}" for worker in range(4) for number in range(25)]
        assert stores[0].fetch_codes(ids, consistency="Strong").frame_counts.tolist() == [6] * 100
    finally:
        for store in stores:
            store.close()


def test_scans_see_every_row_once_whatever_the_storage_order(backend_uri: str) -> None:
    """Queries with a limit return some matching rows, not the smallest keys (Milvus Lite 3: storage order):
    a scan must still see each row exactly once.  Ids written in descending order, in several batches."""
    with open_store(backend_uri, fresh_prefix()) as store:
        ids = [f"v{n:03d}" for n in range(24)][::-1]
        for start in range(0, len(ids), 10):
            store.upsert_many([make_video(video_id, 1 + n % 3, n) for n, video_id in enumerate(ids[start:start + 10])])
        for batch_size in (5, 100):
            rows = list(store._scan(store.video_collection, "video_id", ["frame_count"], batch_size=batch_size))
            assert sorted(row["video_id"] for row in rows) == sorted(ids), batch_size
            frames = list(store._scan(store.frame_collection, "pk", ["video_id"], batch_size=batch_size))
            assert len({row["pk"] for row in frames}) == len(frames) == frame_row_count(store)
        report = store.check(grace_s=0)
        assert report.videos == len(ids) and report.clean and store.stats().videos == len(ids)


def test_the_coarse_index_finds_the_exact_top_100(backend_uri: str) -> None:
    """Recall@100 of `search_coarse` (the store's own index and search parameters: HNSW, ef from k) against an
    exact inner-product scan, >= 0.99, on 3,000 seeded 1024-d unit vectors around 30 centres (near neighbours
    crowd together, as copies do), once the index covers every row.  k: the served K' by default (100,
    `serving.pipelines.search.DEFAULT_CANDIDATES`) and the benchmarks' 1,000."""
    rng = np.random.default_rng(15)
    centres = rng.normal(size=(30, 1024))

    def unit_vectors(count: int) -> np.ndarray:  # [count, 1024] float32
        vectors = centres[rng.integers(0, len(centres), count)] + 0.5 * rng.normal(size=(count, 1024))
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    stored, queries = unit_vectors(3000), unit_vectors(20)
    codes = pack_codes(np.ones((1, 9, 512)))
    with open_store(backend_uri, fresh_prefix(), coarse_dim=1024) as store:
        for start in range(0, len(stored), 1000):
            store.upsert_many([IndexedVideo(f"v{i:04d}", stored[i], 0.5, codes)
                               for i in range(start, start + 1000)])
        store.flush()
        deadline = time.monotonic() + 120
        while store.pending_index_rows() and time.monotonic() < deadline:
            time.sleep(0.5)
        index = store._call("describe index", lambda c: c.describe_index(store.video_collection, "coarse"))
        assert (index["index_type"], index["indexed_rows"]) == (StoreSettings().coarse_index, len(stored)), index
        exact = [{f"v{i:04d}" for i in np.argsort(-(stored @ query), kind="stable")[:100]} for query in queries]
        for k in (100, 1000):
            found = sum(len(top & set(store.search_coarse(query, k=k, consistency="Strong").ids[:100]))
                        for query, top in zip(queries, exact, strict=True))
            assert found / (100 * len(queries)) >= 0.99, k
