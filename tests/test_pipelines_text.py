"""The text-search pipelines between model calls (dnsvr.serving.pipelines.text_search, video decode for the
text-video student) on a real embedded Milvus Lite store: the text embedder is a stand-in with known vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dnsvr.serving.pipelines.index import index_request
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs
from dnsvr.serving.pipelines.search import Embedding, ModelCalls
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.serving.pipelines.text_search import (
    NoTextStudent,
    checked_query,
    search_text_request,
    tokenize_request,
    tokenizer,
)
from dnsvr.serving.store.video_store import NoTextVectors
from dnsvr.training.data.clip_tokenizer import encode
from dnsvr.training.data.minilm_tokenizer import MiniLMTokenizer
from dnsvr.training.networks.codes import pack_codes
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

DIM, TEXT_DIM = 16, 8
TEXT = {"kind": "teachclip", "afa": "official", "max_frames": 12, "image_size": 96, "embed_dim": TEXT_DIM,
        "max_words": 32}


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def text(value: str) -> np.ndarray:
    return np.array([value.encode()], dtype=object)


def request(**inputs) -> RequestInputs:
    return RequestInputs({name: text(v) if isinstance(v, str) else v for name, v in inputs.items()})


def service_store(tmp_path, text_settings: dict | None) -> ServiceStore:
    repository = tmp_path / "repository"
    repository.mkdir(parents=True, exist_ok=True)
    manifest = {"pack_version": "test@1", "fine": ["bin"], "served": [], "source": "tests", "text": text_settings}
    (repository / "manifest.json").write_text(json.dumps(manifest))
    return ServiceStore(repository, {"store_uri": str(tmp_path / "service.db"), "store_prefix": ""})


VECTORS = {name: unit(np.random.default_rng(i).normal(size=TEXT_DIM)) for i, name in enumerate("abcdef")}
QUERIES = {"like c": VECTORS["c"], "unlike c": -VECTORS["c"]}


def embed_text(query: str) -> np.ndarray:
    return QUERIES.get(query, VECTORS["a"])


@pytest.fixture()
def stores(tmp_path):
    opened = service_store(tmp_path, TEXT)
    rng = np.random.default_rng(9)
    for index, (name, vector) in enumerate(VECTORS.items()):  # the default on_duplicate (keep) calls only embed
        embedding = Embedding(unit(rng.normal(size=DIM)), pack_codes(rng.choice([-1.0, 1.0], (4, 9, 512))), 0.3,
                              text=vector)
        index_request(request(video_id=name, video=np.array([b"x"], object),
                              metadata=json.dumps({"even": index % 2 == 0})), opened,
                      ModelCalls(lambda video, e=embedding: e, selector_score=np.asarray, fine_similarity=np.asarray))
    yield opened
    opened.close()


def test_search_text_ranks_by_the_cosine_and_filters(stores):
    found = search_text_request(request(text="like c", top_k=np.array([3], np.int32)), stores, embed_text)
    expected = sorted(VECTORS, key=lambda name: -float(VECTORS[name] @ VECTORS["c"]))[:3]
    assert [v.decode() for v in found["video_ids"]] == expected
    np.testing.assert_allclose(found["scores"], [VECTORS[n] @ VECTORS["c"] for n in expected], atol=1e-5)
    assert {"embed", "search", "total"} <= set(json.loads(found["timings"][0]))
    even = search_text_request(request(text="unlike c", top_k=np.array([6], np.int32),
                                       filter='metadata["even"] == true'), stores, embed_text)
    assert sorted(v.decode() for v in even["video_ids"]) == ["a", "c", "e"]
    assert even["video_ids"][-1] == b"c"


@pytest.mark.parametrize("inputs, message", [
    (dict(text="", top_k=np.array([3], np.int32)), "text query is empty"),
    (dict(text=" \t\n", top_k=np.array([3], np.int32)), "text query is empty"),
    (dict(text="é" * 1025, top_k=np.array([3], np.int32)), "2050 bytes of UTF-8, the maximum is 2048"),
    (dict(top_k=np.array([3], np.int32)), "lacks input 'text'"),
    (dict(text="dog", top_k=np.array([0], np.int32)), "top_k must be in"),
    (dict(text="dog", top_k=np.array([3], np.int32), filter="x" * 5000), "filter is 5000 bytes"),
    (dict(text="dog", top_k=np.array([3], np.int32), filter="video_id == 'a') or (true"), "an unmatched"),
    (dict(text="dog", top_k=np.array([3], np.int32), filter="no_such_field > 3"), "rejected by the store"),
])
def test_bad_text_requests_name_the_problem(stores, inputs, message):
    with pytest.raises(ValueError, match=message):  # BadRequest / InvalidVideo: both reach the client as InvalidVideo
        search_text_request(request(**inputs), stores, embed_text)


def test_without_a_student_or_text_vectors_text_search_says_so(tmp_path):
    no_student = service_store(tmp_path / "one", None)
    with pytest.raises(NoTextStudent, match="no text-video student"):
        search_text_request(request(text="dog", top_k=np.array([3], np.int32)), no_student, None)
    assert NoTextStudent.tag == NoTextVectors.tag == "no_text_search"
    empty = service_store(tmp_path / "two", TEXT)  # nothing indexed yet: no hits, no error
    found = search_text_request(request(text="like c", top_k=np.array([3], np.int32)), empty, embed_text)
    assert found["video_ids"].size == 0
    no_student.close(), empty.close()


def test_tokenize_request_gives_the_official_ids():
    clip = tokenizer("teachclip", 32)
    out = tokenize_request(request(text="A man is playing a GUITAR"), clip)["token_ids"]
    assert out.dtype == np.int64 and out.shape == (1, 32)
    np.testing.assert_array_equal(out, encode("A man is playing a GUITAR", 32)[0])
    assert checked_query("  a dog ") == "  a dog "
    with pytest.raises(BadRequest, match="empty"):
        tokenize_request(request(text="   "), clip)


def test_the_minilm_tokenizer_model_gives_the_packages_wordpiece_ids():
    minilm = tokenizer("offline_minilm_effnet", 32)
    out = tokenize_request(request(text="People riding bicycles"), minilm)
    ids, mask = MiniLMTokenizer().encode(["People riding bicycles"], 32)
    assert set(out) == {"input_ids", "attention_mask"} and out["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(out["input_ids"], ids)
    np.testing.assert_array_equal(out["attention_mask"], mask)
    long = tokenize_request(request(text="a cat " * 300), minilm)  # 1800 bytes: cut to 32 tokens, [SEP] last
    assert long["attention_mask"].all() and long["input_ids"][0, -1] == MiniLMTokenizer().sep_id
    for bad, message in (("", "empty"), (" \t\n", "empty"), ("é" * 1025, "2050 bytes of UTF-8")):
        with pytest.raises(BadRequest, match=message):
            tokenize_request(request(text=bad), minilm)


FILTERS = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), max_size=60)
ESCAPES = st.sampled_from(['video_id == "a") or (video_id != ""', "1 == 1) or (1 == 1", 'video_id in ["a"]]',
                           '"a") or ("', 'metadata["even"] == true', "selector > 0.5", 'video_id like "%"'])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expression=FILTERS | ESCAPES)
@example(expression="DEADLINE")  # once reported as the store being unavailable (the answer echoes the filter)
def test_fuzz_a_filter_only_narrows_a_text_search(stores, expression):
    """Any filter: text search answers a subset of what it answers without one, or refuses it as bad input (an
    escape from its parentheses included); the store is never changed."""
    everything = search_text_request(request(text="like c", top_k=np.array([6], np.int32)), stores, embed_text)
    try:
        found = search_text_request(request(text="like c", top_k=np.array([6], np.int32), filter=expression),
                                    stores, embed_text)
        assert set(found["video_ids"].tolist()) <= set(everything["video_ids"].tolist())
    except ValueError:  # BadRequest / InvalidVideo
        pass
    assert stores.existing().count() == len(VECTORS)
