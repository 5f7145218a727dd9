"""The thin client without a server: input checks, request tensors, result parsing, error mapping."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from dnsvr.client import InvalidVideo, NotFound, Segment, ServerError, ServerUnavailable, VideoSearchClient, protocol
from dnsvr.client.errors import error_from_message, tagged
from dnsvr.client.video_input import video_tensor


def test_video_tensor_accepts_paths_bytes_and_frames(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x01data")
    for given in (path, str(path), b"\x00\x01data", bytearray(b"\x00\x01data")):
        name, array = video_tensor(given)
        assert name == "video" and array.dtype == object and array[0] == b"\x00\x01data"
    name, array = video_tensor(np.zeros((3, 224, 224, 3), np.uint8))
    assert name == "frames" and array.shape == (3, 224, 224, 3)


@pytest.mark.parametrize(
    ("video", "message"),
    [(b"", "empty"), ("/nonexistent/clip.mp4", "no such file"), (np.zeros((3, 224, 224, 3), np.float32), "uint8"),
     (np.zeros((224, 224, 3), np.uint8), "shape"), (np.zeros((2, 112, 112, 3), np.uint8), "shape"),
     (np.zeros((0, 224, 224, 3), np.uint8), "0 frames"), (42, "path, bytes")],
)
def test_video_tensor_rejects_bad_input(video, message):
    with pytest.raises(InvalidVideo, match=message):
        video_tensor(video)


def test_search_request_inputs():
    request = protocol.search_request(video_id="clip", top_k=5, rerank=0.2, candidates=50, filter="frame_count > 3")
    assert request.model == "dnsvr_search"
    assert request.inputs["top_k"].tolist() == [5] and request.inputs["top_k"].dtype == np.int32
    assert request.inputs["rerank"][0] == b"fraction:0.2" and request.inputs["candidates"].tolist() == [50]
    assert "video" not in request.inputs and request.inputs["video_id"][0] == b"clip"
    assert protocol.search_request(b"x", rerank="count:5").inputs["rerank"][0] == b"count:5"
    assert "rerank" not in protocol.search_request(b"x", rerank=None).inputs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({}, "exactly one"), ({"video": b"x", "video_id": "a"}, "exactly one"), ({"video": b"x", "top_k": 0}, "top_k"),
     ({"video": b"x", "top_k": 10_000}, "top_k"), ({"video": b"x", "rerank": 1.5}, "rerank"),
     ({"video_id": " "}, "video_id")],
)
def test_search_request_rejects(kwargs, message):
    with pytest.raises(InvalidVideo, match=message):
        protocol.search_request(**kwargs)


def test_thumbnails_request_and_parse():
    request = protocol.thumbnails_request(["a", "b", "a"])
    assert request.model == "dnsvr_thumbnails" and request.inputs["video_ids"].tolist() == [b"a", b"b"]
    outputs = {"thumbnails": np.array([b"\xff\xd8\xffA", b""], object)}
    assert protocol.parse_thumbnails(request, outputs) == {"a": b"\xff\xd8\xffA"}
    with pytest.raises(InvalidVideo, match="1 to 1000"):
        protocol.thumbnails_request([])
    with pytest.raises(InvalidVideo, match="1 to 1000"):
        protocol.thumbnails_request([f"v{i}" for i in range(1001)])
    with pytest.raises(InvalidVideo):
        protocol.thumbnails_request(['bad"id'])


def test_index_request_metadata():
    request = protocol.index_request("clip", b"x", source_uri="s3://b/clip.mp4", metadata={"channel": "news"})
    assert json.loads(request.inputs["metadata"][0]) == {"channel": "news"}
    with pytest.raises(InvalidVideo, match="JSON"):
        protocol.index_request("clip", b"x", metadata={"bad": object()})


def test_index_request_duplicate_policy():
    plain = protocol.index_request("clip", b"x")
    assert "on_duplicate" not in plain.inputs and "duplicate_threshold" not in plain.inputs  # the server's defaults
    request = protocol.index_request("clip", b"x", on_duplicate="skip", duplicate_threshold=0.8)
    assert request.inputs["on_duplicate"][0] == b"skip"
    threshold = request.inputs["duplicate_threshold"]
    assert threshold.dtype == np.float32 and threshold.tolist() == [np.float32(0.8)]
    for kwargs, message in [({"on_duplicate": "drop"}, "on_duplicate must be one of keep, report, skip"),
                            ({"duplicate_threshold": float("nan")}, "duplicate_threshold must be a number"),
                            ({"on_duplicate": "skip", "duplicate_threshold": 1.01}, "got 1.01")]:
        with pytest.raises(InvalidVideo, match=message):
            protocol.index_request("clip", b"x", **kwargs)


def test_parse_index_result_with_duplicates():
    outputs = {"frame_count": np.array([6], np.int64), "stored": np.array([False]),
               "duplicate_ids": np.array([b"a", b"b"], object), "duplicate_scores": np.array([0.97, 0.91], np.float32),
               "timings": np.array([json.dumps({"total": 5.0}).encode()], object)}
    result = protocol.parse_index("clip", outputs)
    assert result.frame_count == 6 and result.stored is False
    assert [(d.video_id, round(d.score, 2)) for d in result.duplicates] == [("a", 0.97), ("b", 0.91)]


def test_parse_search_result():
    outputs = {
        "video_ids": np.array([b"a", b"b"], object), "scores": np.array([0.9, 0.5], np.float32),
        "reranked": np.array([True, False]), "coarse_scores": np.array([0.7, 0.5], np.float32),
        "selector_scores": np.array([0.8, np.nan], np.float32),
        "timings": np.array([json.dumps({"embed": 12.5, "total": 20.0}).encode()], object),
    }
    result = protocol.parse_search({**outputs, **segment_outputs(((1, (0.0, 4.0, 10.0, 14.0), 0.5),
                                                                  (0, (0.0, 2.0, 1.0, 3.0), 0.25),
                                                                  (0, (2.0, 3.0, 5.0, 6.0), 1.0)))})
    assert result.ids == ["a", "b"] and result[0].reranked and not result[1].reranked
    assert result[1].selector_score is None and result.timings_ms == {"embed": 12.5, "total": 20.0}
    assert result[0].segments == (Segment(0.0, 2.0, 1.0, 3.0, 0.25), Segment(2.0, 3.0, 5.0, 6.0, 1.0))
    assert result[1].segments == (Segment(0.0, 4.0, 10.0, 14.0, 0.5),)
    with pytest.raises(FrozenInstanceError):
        result[0].segments[0].confidence = 0.0
    assert all(hit.segments == () for hit in protocol.parse_search({**outputs, **segment_outputs(())}))


def segment_outputs(segments) -> dict[str, np.ndarray]:
    """(hit position, (query start, query end, target start, target end), confidence) -> the segment tensors."""
    return {"segment_hits": np.array([hit for hit, _, _ in segments], np.int32),
            "segment_times": np.array([times for _, times, _ in segments], np.float32).reshape(-1, 4),
            "segment_confidences": np.array([confidence for _, _, confidence in segments], np.float32)}


def test_error_mapping():
    assert isinstance(error_from_message("in ensemble 'x': " + tagged("invalid_video", "bad")), InvalidVideo)
    assert str(error_from_message(tagged("not_found", "video 'a' is not indexed"))) == "video 'a' is not indexed"
    assert isinstance(error_from_message(tagged("not_found", "x")), NotFound)
    assert isinstance(error_from_message(tagged("unavailable", "x")), ServerUnavailable)
    assert isinstance(error_from_message("unexpected datatype", "StatusCode.INVALID_ARGUMENT"), InvalidVideo)
    assert isinstance(error_from_message("failed to connect", "StatusCode.UNAVAILABLE"), ServerUnavailable)
    assert isinstance(error_from_message("boom", "StatusCode.INTERNAL"), ServerError)


def test_server_down_is_server_unavailable():
    """A real fault: nothing listens on the port (the retries of an idempotent call run, then give up)."""
    from dnsvr.serving.local.processes import free_port

    with VideoSearchClient(f"127.0.0.1:{free_port()}", timeout_s=5, retries=1) as client:
        with pytest.raises(ServerUnavailable):
            client.search(b"x", top_k=1)
        with pytest.raises(ServerUnavailable):
            client.delete("clip")
