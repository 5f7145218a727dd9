"""The product end to end: real Triton (cpu_local) + real Milvus Lite server, through the client over gRPC.

One service per session (conftest's `service`: export ~45 s, start ~25 s, frames capped at 8 per video) over the
repository the production image bakes in (the Dockerfile's export step, run here: the bundled model pack);
`test_pattern_group_ranks_first_with_bundled_pack` checks retrieval.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from conftest import MAX_FRAMES, VIDEOS
from dnsvr.client import InvalidVideo, NotFound
from dnsvr.client.aio_client import AsyncVideoSearchClient
from dnsvr.export.manifest import changed_weights
from dnsvr.export.repository import ensure_exported
from dnsvr.serving.cli import main as cli
from dnsvr.serving.local.processes import descendants, still_same_process
from tritonclient.utils import InferenceServerException

PATTERN = ["pattern-hd-no-bar", "pattern-longer-no-bar", "pattern-sd-grey-bar", "pattern-sd-with-large-logo-bar",
           "pattern-sd-with-small-logo-bar"]
DISTRACTORS = ["doorknob-hd-no-bar", "test-padded-dimensions"]
WEIGHTS = ["bundled"]


def test_health_and_stats(client, indexed):
    health = client.health()
    assert health.ok, health
    stats = client.stats()
    assert stats["videos"] == len(indexed) and stats["milvus_version"].startswith("milvus_lite")
    assert "fine_similarity_bin" in stats["models"]["served"]
    assert stats["index_views"] == stats["views"] == 9 and stats["index_segments"] == stats["segments"] == 0
    assert stats["view_rows"] == (1 + 9) * len(indexed)  # the pack's grid, no frame windows
    assert stats["view_codes"] is False  # the default export keeps no crop views' codes


def test_text_search_with_the_bundled_student(client, indexed):
    """The bundled pack's offline student through the production image's export: the fabric clips first."""
    result = client.search_text("a knitted fabric", top_k=3)
    assert all(hit.video_id.startswith("pattern") for hit in result), result.ids
    stats = client.stats()
    assert client.health().models["dnsvr_search_text"] and stats["text_search"] and stats["text_rows"] == len(indexed)


def test_search_mechanics(client, indexed):
    result = client.search(VIDEOS / "pattern-hd-no-bar.mp4", top_k=5, rerank="count:3")
    assert len(result) == 5 and set(result.ids) <= set(indexed) and len(set(result.ids)) == 5
    scores = [hit.score for hit in result]
    assert scores == sorted(scores, reverse=True)
    assert sum(hit.reranked for hit in result) <= 3 and all(0.0 <= h.score <= 1.0 + 1e-5 for h in result)
    assert all(hit.selector_score is not None for hit in result)
    assert {"embed", "coarse_search", "selector", "fetch_codes", "fine_similarity", "total",
            "round_trip"} <= set(result.timings_ms)
    coarse_only = client.search(VIDEOS / "pattern-hd-no-bar.mp4", top_k=7, rerank=0)
    assert not any(hit.reranked for hit in coarse_only) and len(coarse_only) == len(indexed)
    assert coarse_only[0].video_id == "pattern-hd-no-bar" and coarse_only[0].score == pytest.approx(1.0, abs=1e-4)


def test_search_by_id_and_frames(client, indexed):
    from dnsvr.training.data.video import decode_video

    by_id = client.search(video_id="doorknob-hd-no-bar", top_k=10, rerank=1.0)
    assert "doorknob-hd-no-bar" not in by_id.ids and len(by_id) == len(indexed) - 1
    assert all(hit.reranked for hit in by_id)
    frames = decode_video(VIDEOS / "doorknob-hd-no-bar.mp4", max_frames=int(MAX_FRAMES))
    by_frames = client.search(frames, top_k=1, rerank=0)
    assert by_frames[0].video_id == "doorknob-hd-no-bar" and by_frames[0].score == pytest.approx(1.0, abs=1e-4)


def test_indexed_videos_have_thumbnails(client, indexed):
    """dnsvr_embed's thumbnail (the middle sampled frame) is stored at indexing and served by dnsvr_thumbnails."""
    import io

    from PIL import Image

    found = client.thumbnails([*indexed, "never-indexed", indexed[0]])
    assert sorted(found) == sorted(indexed)
    for jpeg in found.values():
        assert Image.open(io.BytesIO(jpeg)).size == (112, 112)
    with pytest.raises(InvalidVideo, match="1 to 1000"):
        client.thumbnails([])


def test_reindex_replaces_without_duplicates(client, indexed):
    before = client.stats()["videos"]
    frames = np.random.default_rng(0).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    assert client.index("reindexed", frames).frame_count == 5
    assert client.index("reindexed", frames[:4]).frame_count == 4
    assert client.stats()["videos"] == before + 1
    result = client.search(frames[:4], top_k=20, rerank=0)
    assert result.ids.count("reindexed") == 1 and result[0].video_id == "reindexed"
    assert client.delete("reindexed") is True and client.delete("reindexed") is False
    assert client.stats()["videos"] == before


def test_index_skips_and_reports_near_duplicates(client, service, indexed):
    """A brighter copy of an indexed video: skip reports the original and stores nothing, report stores it and
    reports the original (sync and asyncio clients); a bad policy sent past the client's check is refused."""
    from dnsvr.client import protocol
    from dnsvr.training.data.video import decode_video
    from dnsvr.training.packs.model_pack import ModelPack

    frames = decode_video(VIDEOS / "doorknob-hd-no-bar.mp4", max_frames=int(MAX_FRAMES))
    brighter = np.clip(frames.astype(np.int16) + 12, 0, 255).astype(np.uint8)
    before = client.stats()["videos"]
    skipped = client.index("doorknob-brighter", brighter, on_duplicate="skip")
    assert not skipped.stored and skipped.duplicates[0].video_id == "doorknob-hd-no-bar"
    threshold = ModelPack.bundled().duplicate_threshold  # the pack's, which the server uses when none is named
    assert client.stats()["duplicate_threshold"] == threshold
    assert all(d.score >= threshold for d in skipped.duplicates)
    assert client.stats()["videos"] == before
    with pytest.raises(NotFound):
        client.search(video_id="doorknob-brighter")

    async def report():
        async with AsyncVideoSearchClient(service.grpc_url) as aio:
            return await aio.index("doorknob-brighter", brighter, on_duplicate="report")

    reported = asyncio.run(report())
    assert reported.stored and reported.duplicates[0].video_id == "doorknob-hd-no-bar"
    assert reported.duplicates[0].score == pytest.approx(skipped.duplicates[0].score, abs=1e-5)
    assert client.stats()["videos"] == before + 1
    strict = client.index("doorknob-brighter-2", brighter, on_duplicate="skip", duplicate_threshold=0.999)
    assert strict.duplicates[0].video_id == "doorknob-brighter" and not strict.stored  # the same frames first
    assert all(d.score >= 0.999 for d in strict.duplicates)
    inputs = protocol.index_request("bad", brighter).inputs
    with pytest.raises(InvalidVideo, match="on_duplicate must be one of"):
        client._infer(protocol.Request(protocol.INDEX, {**inputs, "on_duplicate": np.array([b"drop"], object)},
                                       protocol.index_request("bad", b"x").outputs), idempotent=False)
    assert client.delete("doorknob-brighter") and client.stats()["videos"] == before


def test_bad_input_is_rejected_and_store_unchanged(client, indexed, tmp_path, service):
    before = client.stats()["videos"]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes((VIDEOS / "doorknob-hd-no-bar.mp4").read_bytes()[:4000])
    for bad in (b"definitely not a video", corrupt, tmp_path / "missing.mp4"):
        with pytest.raises(InvalidVideo):
            client.index("bad", bad)
    with pytest.raises(InvalidVideo, match="video_id"):
        client.index("bad\nid", VIDEOS / "doorknob-hd-no-bar.mp4")
    with pytest.raises(NotFound, match="not indexed"):
        client.search(video_id="no-such-video")
    with pytest.raises(InvalidVideo, match="re-rank"):
        client.search(b"x", rerank="sometimes")
    with pytest.raises(InvalidVideo, match="filter"):
        client.search(video_id="doorknob-hd-no-bar", filter="no_such_field >>> 3")
    filtered = client.search(video_id="doorknob-hd-no-bar", filter='video_id like "pattern%"', rerank=0)
    assert filtered.ids and all(v.startswith("pattern") for v in filtered.ids)
    assert client.delete("no-such-video") is False
    raw = grpcclient.InferenceServerClient(service.grpc_url)  # what a client without our checks could send
    for name, array, datatype in [("video", np.array([b""], object), "BYTES"),
                                  ("frames", np.zeros((2, 224, 224, 3), np.float32), "FP32"),
                                  ("frames", np.zeros((224, 224, 3), np.uint8), "UINT8")]:
        inputs = [grpcclient.InferInput("video_id", [1], "BYTES"), grpcclient.InferInput(name, list(array.shape),
                                                                                           datatype)]
        inputs[0].set_data_from_numpy(np.array([b"raw"], object))
        inputs[1].set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as caught:
            raw.infer("dnsvr_index", inputs)
        assert "INVALID_ARG" in str(caught.value.status())
    raw.close()
    assert client.stats()["videos"] == before


def test_async_client(service, indexed):
    async def run():
        async with AsyncVideoSearchClient(service.grpc_url) as aio:
            results = await asyncio.gather(*[aio.search(video_id=v, top_k=3, rerank=0) for v in PATTERN[:2]])
            return results, await aio.stats()

    results, stats = asyncio.run(run())
    assert [len(r) for r in results] == [3, 3] and stats["videos"] >= len(indexed)


def test_cli_index_and_search(service, indexed, tmp_path, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "doorknob-copy.mp4").write_bytes((VIDEOS / "doorknob-hd-no-bar.mp4").read_bytes())
    assert cli.main(["index", str(tmp_path), "--url", service.grpc_url]) == 1
    output = capsys.readouterr().out
    assert "skipped broken" in output and "indexed 1 videos" in output and "1 skipped" in output
    assert cli.main(["search", str(VIDEOS / "doorknob-hd-no-bar.mp4"), "--top-k", "2", "--rerank", "none",
                     "--url", service.grpc_url]) == 0
    output = capsys.readouterr().out
    assert "doorknob" in output and "timings (ms)" in output
    assert cli.main(["delete", "doorknob-copy", "--url", service.grpc_url]) == 0


def test_reranked_hits_say_where_the_copy_is(service, client, indexed, capsys, monkeypatch):
    """Copy localisation through the served system: searching by an indexed video (8 s, 8 frames at 1 fps) finds
    the whole video on both sides; by its last 5 frames, query 0-5 s in the hit at 3-8 s.  Hits the fine
    student did not re-rank carry no segments; `dnsvr search` prints them."""
    from dnsvr.training.data.video import decode_video

    video = VIDEOS / "pattern-longer-no-bar.mp4"
    whole = client.search(video, top_k=3, rerank=1.0)
    itself = whole[whole.ids.index(video.stem)]
    assert itself.reranked and itself.segments, itself
    best = itself.segments[0]
    assert (best.query_start_s, best.query_end_s, best.target_start_s, best.target_end_s) == (0.0, 8.0, 0.0, 8.0)
    assert 0.9 <= best.confidence <= 1.0
    frames = decode_video(video, max_frames=int(MAX_FRAMES))
    partial = client.search(frames[3:], top_k=3, rerank=1.0)
    best = partial[partial.ids.index(video.stem)].segments[0]
    # neighbouring frames of this slow pan are alike (f2f > 0.85): the path may take one (1, 2) step at its start
    assert (best.query_start_s, best.query_end_s, best.target_end_s) == (0.0, 5.0, 8.0)
    assert 2.0 <= best.target_start_s <= 3.0
    coarse_only = client.search(video, top_k=3, rerank=0)
    assert all(hit.segments == () for hit in coarse_only)
    monkeypatch.setenv("COLUMNS", "200")  # the table's width: the segments column unwrapped
    assert cli.main(["search", str(video), "--top-k", "1", "--rerank", "1.0", "--url", service.grpc_url]) == 0
    assert "q 0.0-8.0s ↔ t 0.0-8.0s" in capsys.readouterr().out


def test_a_zoomed_crop_of_an_indexed_video_meets_its_crop_view(client, indexed):
    """The bundled pack indexes every video by its crop grid too (video_views): a query that shows the centre
    quarter of an indexed video zoomed to the whole frame (as a cropped copy does) meets that video's centre
    view, so it comes first with a coarse score of ~1."""
    from dnsvr.training.data.crop_regions import CropLayout
    from dnsvr.training.data.video import decode_video

    frames = decode_video(VIDEOS / "doorknob-hd-no-bar.mp4", max_frames=int(MAX_FRAMES))
    grid = CropLayout(0.5, 0.25)
    centre = grid.boxes.index((0.25, 0.25))
    zoomed = grid.zoomed(frames)[centre * len(frames):(centre + 1) * len(frames)]  # [T, 224, 224, 3]
    result = client.search(zoomed, top_k=3, rerank=0)
    assert result[0].video_id == "doorknob-hd-no-bar" and result[0].score == pytest.approx(1.0, abs=1e-3)


def test_pattern_group_ranks_first_with_bundled_pack(client, indexed):
    """Coarse only, the selector re-ranking 10% (the CLI default) and half of the candidates, and fully
    re-ranked by S^f_B."""
    for query in (PATTERN[0], PATTERN[4]):
        for rerank in (0, 0.1, 0.5, 1.0):
            result = client.search(video_id=query, top_k=len(indexed) - 1, rerank=rerank)
            members = [v for v in PATTERN if v != query]
            assert set(result.ids[: len(members)]) == set(members), (query, rerank, result.ids)


def test_a_repository_whose_weights_changed_is_exported_again(exported_repository, tmp_path):
    repository = tmp_path / "model_repository"
    shutil.copytree(exported_repository, repository, symlinks=True)
    assert changed_weights(repository) == [] and not ensure_exported(repository, WEIGHTS)
    manifest_file = repository / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    role, entry = next(iter(manifest["weights"].items()))
    stale = {**manifest, "weights": {**manifest["weights"], role: {**entry, "sha256": "0" * 64}}}
    manifest_file.write_text(json.dumps({**stale, "source": "model pack /elsewhere"}))
    assert changed_weights(repository) == [entry["path"]]
    with pytest.raises(ValueError, match="exported from model pack /elsewhere and needs a new export"):
        ensure_exported(repository, WEIGHTS)
    manifest_file.write_text(json.dumps(stale))
    assert ensure_exported(repository, WEIGHTS)
    assert changed_weights(repository) == []
    assert json.loads(manifest_file.read_text())["weights"][role]["sha256"] == entry["sha256"]


def test_serve_command_starts_and_stops_cleanly(exported_repository, tmp_path):
    env = {**os.environ, "DNSVR_STATE": str(tmp_path / "serve.json"), "DNSVR_MAX_FRAMES": MAX_FRAMES}
    command = [sys.executable, "-m", "dnsvr.serving.cli.main", "serve", "--repository", str(exported_repository),
               "--store", str(tmp_path / "milvus.db"), "--log-dir", str(tmp_path)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            lines.append(line)
            if "ready" in line or not line:
                break
        assert "ready" in lines[-1], "".join(lines)
        stats = subprocess.run([sys.executable, "-m", "dnsvr.serving.cli.main", "stats"], env=env, text=True,
                               capture_output=True, timeout=120)
        assert stats.returncode == 0 and '"videos": 0' in stats.stdout, stats.stdout + stats.stderr
        children = descendants(server.pid)
        assert len(children) >= 2  # milvus-lite server and tritonserver (+ python stubs)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        assert "stopped" in server.stdout.read()
        assert not (tmp_path / "serve.json").exists()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert [pid for pid, started in children.items() if still_same_process(pid, started)] == []
