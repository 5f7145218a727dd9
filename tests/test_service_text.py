"""Text search end to end: real Triton (cpu_local) serving the bundled DnS pack plus the golden TeachCLIP student
(`--text-weights`), over Milvus Lite and over the Milvus 2.3.5 server, through the client over gRPC.

The sample videos are indexed (frames capped at 8); each caption's served ranking must equal the ranking that
the PyTorch student gives the same videos (the same decoded crops, encode_video / encode_text, cosine), with the
same scores.  The random-weight golden student ranks arbitrarily: what is checked is faithfulness, not quality.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from conftest import VIDEOS, check_pattern_filter, check_served_text_ranking
from dnsvr.client import InvalidVideo, VideoSearchClient
from dnsvr.export.repository import build_repository
from dnsvr.export.weights import resolve_weights
from dnsvr.serving.local.service import LocalService
from dnsvr.training.data.clip_frames import normalize_frames
from dnsvr.training.data.clip_tokenizer import encode
from dnsvr.training.data.video import decode_video_with_crops
from dnsvr.training.networks.checkpoints import load_checkpoint
from tritonclient.utils import InferenceServerException

MAX_FRAMES = 8
CAPTIONS = ["a man is playing a guitar on stage", "a test pattern with colour bars", "someone opens a door",
            "a person talking on a phone in a car"]


@pytest.fixture(scope="module")
def text_repository(tmp_path_factory, golden_t2v):
    repository = tmp_path_factory.mktemp("text_repo") / "models"
    build_repository(resolve_weights(["bundled"], text_weights=golden_t2v / "teachclip_student.bin"), repository)
    return repository


@pytest.fixture(scope="module", params=["lite", "server"])
def client(request, text_repository, tmp_path_factory):
    if request.param == "lite":
        store, prefix = tmp_path_factory.mktemp("text_store") / "milvus.db", None
    else:
        store, prefix = request.getfixturevalue("milvus_server").uri, "t" + uuid.uuid4().hex[:10]
    environment = {"DNSVR_MAX_FRAMES": str(MAX_FRAMES)}
    with LocalService(text_repository, store=store, prefix=prefix, env=environment) as service:
        with VideoSearchClient(service.grpc_url, timeout_s=300) as opened:
            items = [(path.stem, path) for path in sorted(VIDEOS.glob("*.mp4"))]
            outcomes = opened.index_many(items, concurrency=2)
            assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok]
            yield opened


@pytest.fixture(scope="module")
def reference(golden_t2v):
    """The PyTorch student on the same crops: {video id: unit vector [64]} and a text -> unit vector function."""
    student = load_checkpoint(golden_t2v / "teachclip_student.bin")
    vectors = {}
    with torch.no_grad():
        for path in sorted(VIDEOS.glob("*.mp4")):
            _, crops = decode_video_with_crops(path, clip_size=96, clip_max_frames=student.max_frames,
                                               max_frames=MAX_FRAMES)
            vectors[path.stem] = student.encode_video(normalize_frames(crops))[0].numpy()

    def text_vector(caption: str) -> np.ndarray:
        with torch.no_grad():
            return student.encode_text(torch.from_numpy(encode(caption)[0]))[0].numpy()

    return vectors, text_vector


def test_served_text_ranking_equals_the_pytorch_ranking(client, reference):
    vectors, text_vector = reference
    for caption in CAPTIONS:
        result = check_served_text_ranking(client, vectors, text_vector, caption)
        assert not any(hit.reranked for hit in result) and {"embed", "search", "round_trip"} <= set(result.timings_ms)
    check_pattern_filter(client, CAPTIONS[1])


def test_reindexing_keeps_one_vector_and_health_lists_text_search(client, reference):
    vectors, text_vector = reference
    client.index("doorknob-hd-no-bar", VIDEOS / "doorknob-hd-no-bar.mp4")
    result = client.search_text(CAPTIONS[2], top_k=20)
    assert result.ids.count("doorknob-hd-no-bar") == 1 and len(result) == len(vectors)
    stats = client.stats()
    assert stats["text_search"] and stats["text_dim"] == 64 and stats["text_rows"] == len(vectors)
    assert client.health().models["dnsvr_search_text"]


def test_bad_text_queries_are_invalid_on_both_sides(client):
    for bad in ("", "   ", "x" * 5000):
        with pytest.raises(InvalidVideo):
            client.search_text(bad)
    raw = grpcclient.InferenceServerClient(client.url)  # no client-side checks: the server's hold
    for bad in (b"", b" \n ", "é".encode() * 1100):
        text = grpcclient.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array([bad], object))
        top_k = grpcclient.InferInput("top_k", [1], "INT32")
        top_k.set_data_from_numpy(np.array([3], np.int32))
        with pytest.raises(InferenceServerException, match="invalid_video"):
            raw.infer("dnsvr_search_text", [text, top_k])
