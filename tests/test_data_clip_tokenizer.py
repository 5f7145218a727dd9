"""The CLIP tokenizer (dnsvr.training.data.clip_tokenizer) against the golden ids of TeachCLIP's tokenizer
(golden_t2v/tokenizer.json, teachclip_student.*)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from dnsvr.training.data.clip_tokenizer import (
    EOT_ID,
    SOT_ID,
    VOCAB_SHA256,
    CLIPTokenizer,
    VocabularyError,
    clean_caption,
    default_tokenizer,
    encode,
    find_vocabulary_file,
)


@pytest.fixture(scope="module")
def golden(golden_t2v):
    return json.loads((golden_t2v / "tokenizer.json").read_text())


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return default_tokenizer()


def test_vocabulary_is_the_open_clip_file_with_the_expected_sha256(golden):
    path = find_vocabulary_file()
    assert path.name == "bpe_simple_vocab_16e6.txt.gz"
    assert golden["meta"]["bpe_vocab_sha256"] == VOCAB_SHA256


def test_vocabulary_size_and_special_ids(tokenizer, golden):
    assert len(tokenizer.vocabulary) == golden["meta"]["vocab_size"] == 49408
    assert tokenizer.vocabulary["<|startoftext|>"] == SOT_ID == golden["meta"]["sot_id"]
    assert tokenizer.vocabulary["<|endoftext|>"] == EOT_ID == golden["meta"]["eot_id"]


def test_clean_up_matches_every_golden_caption(golden):
    for caption in golden["captions"]:
        assert clean_caption(caption["text"]) == caption["normalized"], caption["index"]


def test_bpe_ids_and_tokens_match_every_golden_caption(tokenizer, golden):
    captions = golden["captions"]
    all_ids = tokenizer.bpe_ids([c["text"] for c in captions])
    for caption, ids in zip(captions, all_ids, strict=True):
        assert ids == caption["bpe_ids"], caption["index"]
        assert [tokenizer.id_to_token[i] for i in ids] == caption["bpe_tokens"], caption["index"]
        assert len(ids) == caption["n_bpe"]


@pytest.mark.parametrize("max_words", [32, 64])
def test_input_ids_masks_and_eot_index_match_every_golden_caption(tokenizer, golden, max_words):
    captions = golden["captions"]
    input_ids, attention_mask = tokenizer.encode([c["text"] for c in captions], max_words=max_words)
    assert input_ids.dtype == attention_mask.dtype == np.int64
    assert input_ids.shape == attention_mask.shape == (len(captions), max_words)
    for row, caption in enumerate(captions):
        assert input_ids[row].tolist() == caption[f"input_ids_{max_words}"], caption["index"]
        assert attention_mask[row].tolist() == caption[f"attention_mask_{max_words}"], caption["index"]
        assert int(input_ids[row].argmax()) == caption[f"eot_index_{max_words}"], caption["index"]
        assert (caption["n_bpe"] > max_words - 2) == caption[f"truncated_{max_words}"]


def test_student_captions_give_the_student_input_ids(golden_t2v):
    captions = json.loads((golden_t2v / "teachclip_student.json").read_text())["captions"]
    z = np.load(golden_t2v / "teachclip_student.npz")
    input_ids, attention_mask = encode(captions, max_words=32)
    np.testing.assert_array_equal(input_ids, z["input_ids"])
    np.testing.assert_array_equal(attention_mask, z["attention_mask"])


def test_a_single_string_is_a_batch_of_one(tokenizer):
    input_ids, attention_mask = tokenizer.encode("a dog", max_words=8)
    assert input_ids.shape == (1, 8)
    batch_ids, _ = tokenizer.encode(["a dog", "a cat"], max_words=8)
    np.testing.assert_array_equal(input_ids[0], batch_ids[0])
    assert attention_mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("bad", [None, 3, [b"bytes"], ["ok", 1], [None]])
def test_non_str_captions_are_a_type_error(tokenizer, bad):
    with pytest.raises(TypeError):
        tokenizer.encode(bad)


@pytest.mark.parametrize("max_words", [0, 1, 2.5, True])
def test_max_words_must_leave_room_for_sot_and_eot(tokenizer, max_words):
    with pytest.raises(ValueError, match="max_words"):
        tokenizer.encode(["a dog"], max_words=max_words)


def test_a_vocabulary_file_with_another_hash_is_refused(tmp_path):
    fake = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    fake.write_bytes(gzip.compress(b"#version: 0.2\na b\n"))
    with pytest.raises(VocabularyError, match="sha256"):
        CLIPTokenizer(fake)
