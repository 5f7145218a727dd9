"""The offline text-video student's parts: MiniLM (real weights), its tokenizer, the ImageNet class names, the
EfficientNet-Lite0 pooled features / classifier, and `OfflineTextVideoStudent` (shapes, padding invariance,
head round trip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dnsvr.training.data.imagenet_classes import ClassNamesError, imagenet_class_names, parse_class_names
from dnsvr.training.data.minilm_tokenizer import MiniLMTokenizer
from dnsvr.training.networks.checkpoints import CheckpointError
from dnsvr.training.networks.efficientnet import FRAME_FEATURE_DIM, load_efficientnet_lite0, normalize_frames
from dnsvr.training.networks.minilm import minilm_files
from dnsvr.training.networks.offline_t2v import OfflineTextVideoStudent

# sentence-transformers' documented example: the first values of all-MiniLM-L6-v2's vector of this sentence.
EXAMPLE_SENTENCE = "This is an example sentence"
EXAMPLE_VECTOR_START = [0.0676569, 0.0634960, 0.0487132, 0.0793050, 0.0374480]


@pytest.fixture(scope="module")
def tokenizer() -> MiniLMTokenizer:
    return MiniLMTokenizer()


def embed(minilm, tokenizer: MiniLMTokenizer, texts: list[str]) -> torch.Tensor:
    ids, mask = tokenizer.encode(texts)
    with torch.no_grad():
        return minilm(torch.from_numpy(ids), torch.from_numpy(mask))


@pytest.fixture(scope="module")
def student(minilm) -> OfflineTextVideoStudent:
    torch.manual_seed(0)
    return OfflineTextVideoStudent(dim=128, depth=2, max_frames=6, minilm=minilm).eval()


def test_minilm_reproduces_the_published_vector(minilm, tokenizer):
    vector = embed(minilm, tokenizer, [EXAMPLE_SENTENCE])
    assert vector.shape == (1, 384) and vector.dtype == torch.float32
    assert torch.allclose(vector.norm(dim=-1), torch.ones(1), atol=1e-6)
    np.testing.assert_allclose(vector[0, :5].numpy(), EXAMPLE_VECTOR_START, atol=2e-5)


def test_minilm_sentence_similarity_is_sensible(minilm, tokenizer):
    cat, kitten, rocket = embed(minilm, tokenizer, ["a cat", "a kitten", "a rocket launch"])
    assert float(cat @ kitten) > float(cat @ rocket) + 0.3


def test_minilm_padding_does_not_change_the_vector(minilm, tokenizer):
    ids, mask = tokenizer.encode(["a dog running on a beach"], max_len=32)
    length = int(mask.sum())
    with torch.no_grad():
        padded = minilm(torch.from_numpy(ids), torch.from_numpy(mask))
        tight = minilm(torch.from_numpy(ids[:, :length]), torch.from_numpy(mask[:, :length]))
        states = minilm.token_states(torch.from_numpy(ids), torch.from_numpy(mask))
    assert states.shape == (1, 32, 384)
    torch.testing.assert_close(padded, tight, atol=1e-6, rtol=0)


def test_minilm_files_names_the_package_and_the_weights():
    files = minilm_files()
    assert files.version == "0.1.2" and len(files.weights_sha256) == 64


def test_tokenizer_round_trip_truncation_and_errors(tokenizer):
    ids, mask = tokenizer.encode(["A man riding a bike", "word " * 100], max_len=16)
    assert ids.dtype == np.int64 and mask.dtype == np.int64 and ids.shape == mask.shape == (2, 16)
    assert ids[0, 0] == 101 and mask[0].sum() == 7 and ids[0, 6] == 102 and (ids[0, 7:] == 0).all()
    decoded = tokenizer._tokenizer.decode(ids[0, : mask[0].sum()].tolist())
    assert decoded == "a man riding a bike"
    assert mask[1].all() and ids[1, -1] == 102
    for bad in ([""], ["   "], [], "a string", [3]):
        with pytest.raises(ValueError):
            tokenizer.encode(bad)


def test_imagenet_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 998  # "missile" and "sunglasses" appear twice
    assert names[0] == "tench" and names[1] == "goldfish" and names[281] == "tabby cat" and names[999] == "toilet paper"
    with pytest.raises(ClassNamesError):
        parse_class_names("IMAGENET_CLASSNAMES = ('a', 'b')")


def test_efficientnet_pooled_features_and_classifier_compose_to_forward():
    from dnsvr.training.data.synthetic import load_photo, resize_frames

    model = load_efficientnet_lite0()
    frames = resize_frames(load_photo("chelsea")[None].copy(), 224, 224)
    x = normalize_frames(torch.from_numpy(frames))
    with torch.no_grad():
        pooled = model.pooled_features(x)
        logits = model.classify(pooled)
        torch.testing.assert_close(logits, model(x))
    assert pooled.shape == (1, FRAME_FEATURE_DIM) and logits.shape == (1, 1000)
    assert imagenet_class_names()[int(logits.argmax())] in ("tabby cat", "tiger cat", "Egyptian Mau")


def test_student_shapes(student, tokenizer):
    ids, mask = tokenizer.encode(["a cat", "a rocket launch", "people on a street"])
    text = student.encode_text(torch.from_numpy(ids), torch.from_numpy(mask))
    video = student.encode_video(torch.randn(2, 4, FRAME_FEATURE_DIM), torch.ones(2, 4))
    assert text.shape == (3, 128) and video.shape == (2, 128)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(video.norm(dim=-1), torch.ones(2))
    logits = student.logits(text, video)
    assert logits.shape == (3, 2) and float(logits.detach().abs().max()) <= 100.0
    parts = student.video_intermediates(torch.randn(2, 4, FRAME_FEATURE_DIM), torch.tensor([[1, 1, 0, 0]] * 2))
    assert parts.afa_weights_t1.shape == (2, 2) and parts.temporal_out.shape == (2, 2, 128)
    torch.testing.assert_close(parts.afa_weights_t1.sum(dim=1), torch.ones(2))


def test_student_vector_ignores_padding_and_batch(student):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(3, 5, FRAME_FEATURE_DIM, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float32)
    with torch.no_grad():
        vectors = student.encode_video(features, mask)
        garbage = torch.randn(3, 1, FRAME_FEATURE_DIM, generator=generator) * 100
        longer = student.encode_video(torch.cat([features, garbage], dim=1), torch.cat([mask, torch.zeros(3, 1)], 1))
        alone = student.encode_video(features[:1, :3])
    torch.testing.assert_close(longer, vectors, atol=1e-6, rtol=0)
    torch.testing.assert_close(alone, vectors[:1], atol=1e-6, rtol=0)


def test_student_rejects_bad_input(student):
    with pytest.raises(ValueError, match="1280"):
        student.encode_video(torch.randn(1, 3, 512))
    with pytest.raises(ValueError, match="prefix"):
        student.encode_video(torch.randn(1, 3, FRAME_FEATURE_DIM), torch.tensor([[0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="max_frames"):
        student.encode_video(torch.randn(1, 7, FRAME_FEATURE_DIM))
    with pytest.raises(ValueError, match="at least one"):
        student.encode_video(torch.randn(1, 3, FRAME_FEATURE_DIM), torch.zeros(1, 3))


def test_head_state_dict_round_trip(student, minilm):
    head = student.head_state_dict()
    assert not any(k.startswith("text.") for k in head)
    assert sum(v.numel() for v in head.values()) < 1_000_000
    rebuilt = OfflineTextVideoStudent.from_head_state_dict(head, minilm=minilm)
    assert (rebuilt.dim, rebuilt.depth, rebuilt.max_frames) == (128, 2, 6)
    features = torch.randn(2, 3, FRAME_FEATURE_DIM)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode_video(features), student.encode_video(features))
    with pytest.raises(CheckpointError):
        OfflineTextVideoStudent.from_head_state_dict({"foo": torch.zeros(1)}, minilm=minilm)


def test_fine_tuned_text_layers_travel_with_the_head(minilm):
    torch.manual_seed(0)
    student = OfflineTextVideoStudent(dim=64, depth=1, max_frames=4, minilm=minilm, trainable_text_layers=1)
    head = student.head_state_dict()
    assert any(k.startswith("text.encoder.layer.5.") for k in head)
    assert not any(k.startswith("text.encoder.layer.4.") for k in head)
    assert not any(k.startswith("text.") for k, p in student.named_parameters() if p.requires_grad
                   and not k.startswith("text.encoder.layer.5."))
