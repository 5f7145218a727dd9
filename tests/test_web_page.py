"""The search page without a browser: upload checks and limits, thumbnails, the segments-to-timeline geometry,
and the JSON API over a stand-in client (statuses and messages of bad uploads, text search without a student)."""

from __future__ import annotations

import asyncio
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from conftest import VIDEOS
from dnsvr.client import SearchHit, Segment
from dnsvr.serving.cli.main import main
from dnsvr.serving.web.thumbnails import ThumbnailStore
from dnsvr.serving.web.timeline import MIN_WIDTH_PCT, bars, hit_timeline
from dnsvr.serving.web.uploads import UploadLimit, UploadRejected, checked_video, read_upload
from web_page_server import StandInClient, running_page

SAMPLE = VIDEOS / "doorknob-hd-no-bar.mp4"  # the smallest sample with several seconds


async def chunks_of(*parts: bytes):
    for part in parts:
        yield part


def read(chunks, limit: UploadLimit) -> bytes:
    return asyncio.run(read_upload(chunks, limit))


def test_upload_limits():
    limit = UploadLimit.from_megabytes(1)
    assert limit.max_bytes == 1 << 20 and limit.describe() == "1 MB"
    assert read(chunks_of(b"ab", b"cd"), limit) == b"abcd"
    with pytest.raises(UploadRejected) as empty:
        read(chunks_of(), limit)
    assert empty.value.status == 400 and "empty" in empty.value.message
    with pytest.raises(UploadRejected) as big:
        read(chunks_of(b"x" * (1 << 19), b"x" * (1 << 19), b"x"), limit)
    assert big.value.status == 413 and "1 MB limit" in big.value.message
    with pytest.raises(UploadRejected) as declared:
        limit.check_declared(str(2 << 20))
    assert declared.value.status == 413
    limit.check_declared(None)
    limit.check_declared("12")
    with pytest.raises(ValueError):
        UploadLimit.from_megabytes(0)


def test_checked_video_takes_spread_thumbnails_and_refuses_other_files():
    video = checked_video(SAMPLE.read_bytes(), thumbnails=4, thumbnail_size=64)
    assert video.duration_s and video.duration_s > 0
    assert 1 <= len(video.frames) <= 4 and min(video.frames[0].shape[:2]) == 64
    with pytest.raises(UploadRejected) as text:
        checked_video(b"just some text, not a video\n" * 50)
    assert text.value.status == 415 and "not a video" in text.value.message


def test_thumbnail_store_keeps_only_recent_queries():
    store = ThumbnailStore(max_queries=2)
    frame = np.zeros((8, 12, 3), np.uint8)
    keys = [store.add([frame, frame]) for _ in range(3)]
    assert len(store) == 2 and store.get(keys[0], 0) is None
    assert store.get(keys[2], 1)[:2] == b"\xff\xd8"  # JPEG
    assert store.get(keys[2], 2) is None and store.get("../../etc/passwd", 0) is None


def test_bars_geometry():
    placed = bars([(2.0, 4.0, 0.8), (9.5, 12.0, 0.5), (20.0, 30.0, 0.1), (5.0, 5.0, 1.0)], scale_s=10.0)
    assert [(bar.left_pct, bar.width_pct) for bar in placed] == [(20.0, 20.0), (95.0, 5.0), (50.0, MIN_WIDTH_PCT)]
    assert placed[1].end_s == 10.0  # clipped to the timeline
    assert bars([(0.0, 1.0, 1.0)], scale_s=0.0) == []
    assert bars([(9.99, 10.0, 1.0)], scale_s=10.0)[0].width_pct == pytest.approx(0.1)  # not past the end


def test_hit_timeline_scales_and_missing_segments():
    hit = SearchHit("a", 0.9, True, 0.8, 0.6, (Segment(1.0, 2.0, 4.0, 8.0, 0.9),))
    drawn = hit_timeline(hit, query_duration_s=4.0)
    assert drawn["query_scale_s"] == 4.0 and drawn["target_scale_s"] == 8.0
    assert drawn["query_bars"][0]["left_pct"] == 25.0 and drawn["target_bars"][0]["width_pct"] == 50.0
    assert hit_timeline(hit, None)["query_scale_s"] == 2.0  # unknown duration: up to the last match
    unranked = hit_timeline(SearchHit("b", 0.5, False, 0.5, None), 4.0)
    assert unranked["segments"] == [] and unranked["query_bars"] == [] and unranked["target_scale_s"] == 0.0


def call(url: str, data: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def declare_only(url: str, length: int) -> tuple[int, dict]:
    """POST headers declaring a `length`-byte body and no body: the page refuses an over-limit upload from its
    Content-Length alone (a client still writing the body when the refusal closes the connection could see a
    reset instead of the answer; the streamed-body limit is `test_upload_limits`'s)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.putrequest("POST", parts.path)
        connection.putheader("Content-Type", "application/octet-stream")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_api_over_a_stand_in_client():
    client = StandInClient()
    with running_page(client, UploadLimit.from_megabytes(2)) as page:
        status, body = call(f"{page}/api/search/upload?top_k=5&rerank=count:3", SAMPLE.read_bytes())
        assert status == 200 and [hit["video_id"] for hit in body["hits"]] == ["near", "far"]
        assert isinstance(client.searched[-1], bytes)  # the bytes, never a path, go to the client
        assert body["hits"][0]["query_bars"] and body["hits"][1]["segments"] == []
        near, far = (hit["thumbnail"] for hit in body["hits"])  # the service's stored thumbnail, or none
        assert near.startswith("data:image/jpeg;base64,/9j/") and far is None
        with urllib.request.urlopen(page + body["query"]["thumbnails"][0], timeout=10) as thumbnail:
            assert thumbnail.headers["Content-Type"] == "image/jpeg"
        assert call(f"{page}/api/search/upload", b"")[0] == 400
        status, body = declare_only(f"{page}/api/search/upload", (2 << 20) + 1)
        assert status == 413 and "limit" in body["error"]
        status, body = call(f"{page}/api/search/upload", b"hello" * 100)
        assert status == 415 and "not a video" in body["error"]
        status, body = call(f"{page}/api/search/upload?top_k=0", SAMPLE.read_bytes())
        assert status == 422 and "top_k" in body["error"]
        assert call(f"{page}/api/search/id?video_id=missing")[0] == 404
        status, body = call(f"{page}/api/search/text?text=a+cat")
        assert status == 409 and "no text-video student" in body["error"]
        status, body = call(f"{page}/api/stats")
        assert status == 200 and body["stats"]["videos"] == 2 and body["max_upload"] == "2 MB"
        with urllib.request.urlopen(page + "/", timeout=10) as html:
            assert b"/static/app.js" in html.read()


def test_cli_refuses_a_non_positive_upload_limit():
    with pytest.raises(SystemExit, match="upload limit must be positive"):
        main(["web", "--grpc-url", "127.0.0.1:1", "--max-upload-mb", "0"])
