"""Text search with the offline student end to end: real Triton (cpu_local) serving the bundled DnS pack plus an
offline MiniLM + EfficientNet-Lite0 student (random head), over Milvus Lite, through the client over gRPC.

Four sample videos are indexed (frames capped at 6; the student reads 4 of them, chosen by the server); each
caption's served ranking must equal the ranking the PyTorch student gives the same videos (the frames chosen as
the training chooses them, their `pooled_features`, encode_video / encode_text, cosine), with the same scores.
The random head ranks arbitrarily: what is checked is faithfulness, not quality.  The tokenizer model answers
bad text with typed errors, as the CLIP one does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from conftest import VIDEOS, check_pattern_filter, check_served_text_ranking
from dnsvr.client import InvalidVideo, VideoSearchClient
from dnsvr.serving.local.service import LocalService
from dnsvr.training.data.clip_frames import select_frame_indices
from dnsvr.training.data.minilm_tokenizer import MiniLMTokenizer
from dnsvr.training.data.video import decode_video
from dnsvr.training.networks.efficientnet import load_efficientnet_lite0, normalize_frames
from tritonclient.utils import InferenceServerException

MAX_FRAMES = 6
VIDEO_IDS = ("doorknob-hd-no-bar", "pattern-longer-no-bar", "pattern-sd-grey-bar", "test-padded-dimensions")
CAPTIONS = ["a cat", "people riding bicycles", "a cup of coffee", "a test pattern with colour bars"]


@pytest.fixture(scope="module")
def client(offline_repository, tmp_path_factory):
    store = tmp_path_factory.mktemp("offline_store") / "milvus.db"
    with LocalService(offline_repository, store=store, env={"DNSVR_MAX_FRAMES": str(MAX_FRAMES)}) as service:
        with VideoSearchClient(service.grpc_url, timeout_s=300) as opened:
            items = [(video_id, VIDEOS / f"{video_id}.mp4") for video_id in VIDEO_IDS]
            outcomes = opened.index_many(items, concurrency=2)
            assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok]
            yield opened


@pytest.fixture(scope="module")
def reference(offline_student):
    """The PyTorch student on the frames the server keeps for it: {video id: unit vector}, text -> unit vector."""
    cnn = load_efficientnet_lite0()
    vectors = {}
    with torch.no_grad():
        for video_id in VIDEO_IDS:
            frames = decode_video(VIDEOS / f"{video_id}.mp4", max_frames=MAX_FRAMES, min_frames=0)  # not repeated
            chosen = torch.from_numpy(frames[select_frame_indices(len(frames), offline_student.max_frames)])
            pooled = cnn.pooled_features(normalize_frames(chosen))  # [n, 1280]
            vectors[video_id] = offline_student.encode_video(pooled[None])[0].numpy()
    tokenizer = MiniLMTokenizer()

    def text_vector(caption: str) -> np.ndarray:
        ids, mask = tokenizer.encode([caption])
        with torch.no_grad():
            return offline_student.encode_text(torch.from_numpy(ids), torch.from_numpy(mask))[0].numpy()

    return vectors, text_vector


def test_served_text_ranking_equals_the_pytorch_ranking(client, reference):
    vectors, text_vector = reference
    for caption in CAPTIONS:
        check_served_text_ranking(client, vectors, text_vector, caption)
    check_pattern_filter(client, CAPTIONS[3])
    stats = client.stats()
    assert stats["text_search"] and stats["text_dim"] == 256 and stats["text_rows"] == len(vectors)


def test_the_tokenizer_model_answers_bad_text_with_typed_errors(client):
    for bad in ("", "   ", "x" * 5000):
        with pytest.raises(InvalidVideo):
            client.search_text(bad)
    raw = grpcclient.InferenceServerClient(client.url)  # no client-side checks: the server's hold
    for bad in (b"", b" \n ", "é".encode() * 1100):
        text = grpcclient.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array([bad], object))
        with pytest.raises(InferenceServerException, match="invalid_video"):
            raw.infer("text_tokenize", [text])
    text = grpcclient.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"people riding bicycles"], object))
    tokens = raw.infer("text_tokenize", [text])
    ids, mask = MiniLMTokenizer().encode(["people riding bicycles"])
    np.testing.assert_array_equal(tokens.as_numpy("input_ids"), ids)
    np.testing.assert_array_equal(tokens.as_numpy("attention_mask"), mask)
