"""dnsvr.training.networks.teachclip against the official TeachCLIP student (golden_t2v/teachclip_student.*).

Tolerances: the README's table (atol; rtol 1e-5); arrays missing from the table use those of their closest
counterpart (alone_* like the padded arrays, temporal_transformer_out like temporal_out).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from dnsvr.training.networks.checkpoints import load_checkpoint
from dnsvr.training.networks.clip import build_clip
from dnsvr.training.networks.teachclip import TeachCLIPStudent

ATOL = {
    "frame_features": 5e-5,
    "temporal_transformer_out": 2e-4,
    "temporal_out": 2e-4,
    "temporal_out_normed": 1e-5,
    "afa_logits": 2e-5,
    "afa_weights_t01": 2e-5,
    "afa_weights_t1": 1e-5,
    "video_embed": 1e-5,
    "video_embed_normed": 1e-5,
    "text_embed": 2e-5,
    "text_embed_normed": 1e-5,
    "sim": 1e-5,
    "logits_train": 1e-4,
    "logits_meanP": 1e-4,
    "logit_scale_exp": 1e-5,
}
RTOL = 1e-5


def atol_for(name: str) -> float:
    return ATOL[name.removeprefix("alone_")]


def assert_close(actual: torch.Tensor, golden: np.ndarray, name: str) -> None:
    np.testing.assert_allclose(actual.detach().numpy(), golden, rtol=RTOL, atol=atol_for(name), err_msg=name)


@pytest.fixture(scope="module")
def z(golden_t2v):
    return np.load(golden_t2v / "teachclip_student.npz")


@pytest.fixture(scope="module")
def student(golden_t2v) -> TeachCLIPStudent:
    return load_checkpoint(golden_t2v / "teachclip_student.bin")


@pytest.fixture(scope="module")
def inputs(z):
    return torch.from_numpy(z["pixels"]), torch.from_numpy(z["video_mask"]), torch.from_numpy(z["input_ids"])


@pytest.fixture(scope="module")
def official(student, inputs):
    pixels, mask, _ = inputs
    with torch.no_grad():
        return student.video_intermediates(pixels, mask)


@pytest.fixture(scope="module")
def alone(student, inputs):
    pixels, mask, _ = inputs
    with torch.no_grad():
        return student.video_intermediates(pixels, mask, afa="real_frames")


@pytest.fixture(scope="module")
def text(student, inputs):
    with torch.no_grad():
        return student.encode_text(inputs[2], normalize=False)


def test_architecture_is_inferred_from_the_checkpoint(student, golden_t2v):
    arch = json.loads((golden_t2v / "teachclip_student.json").read_text())["architecture"]
    config = student.clip.config
    for name in ("embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size",
                 "vision_heads", "context_length", "vocab_size", "transformer_width", "transformer_heads",
                 "transformer_layers"):
        assert getattr(config, name) == arch[name], name
    assert student.temporal_layers == arch["temporal_layers"]
    assert student.transformerClip.heads == arch["temporal_heads"]
    assert student.frame_position_embeddings.num_embeddings == arch["frame_position_embeddings_rows"]
    assert student.max_frames == 12
    assert all(p.dtype == torch.float32 for p in student.state_dict().values())
    assert not student.training


def test_frame_features(student, inputs, z):
    with torch.no_grad():
        assert_close(student.encode_frames(inputs[0]), z["frame_features"], "frame_features")


@pytest.mark.parametrize("name", ["frame_features", "temporal_transformer_out", "temporal_out", "temporal_out_normed",
                                  "afa_logits", "afa_weights_t01", "afa_weights_t1", "video_embed"])
def test_official_padded_batch_intermediates(official, z, name):
    assert_close(getattr(official, name), z[name], name)


@pytest.mark.parametrize("name", ["temporal_out", "afa_logits", "afa_weights_t01", "video_embed"])
def test_real_frames_mode_reproduces_the_alone_arrays(alone, z, name):
    assert_close(getattr(alone, name), z[f"alone_{name}"], f"alone_{name}")


def test_real_frames_mode_zeroes_padded_slots(alone, z):
    padded = ~torch.from_numpy(z["video_mask"]).bool()
    for name in ("temporal_transformer_out", "temporal_out", "temporal_out_normed", "afa_logits",
                 "afa_weights_t01", "afa_weights_t1"):
        assert not getattr(alone, name)[padded].any(), name


def test_text_embeddings(student, inputs, text, z):
    assert_close(text, z["text_embed"], "text_embed")
    with torch.no_grad():
        normed = student.encode_text(inputs[2], mask=torch.from_numpy(z["attention_mask"]))
    assert_close(normed, z["text_embed_normed"], "text_embed_normed")


def test_text_embedding_does_not_depend_on_padding_length(student, inputs):
    ids = inputs[2]
    padded = torch.cat([ids, torch.zeros(ids.shape[0], 77 - ids.shape[1], dtype=torch.int64)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(student.encode_text(padded), student.encode_text(ids), rtol=0, atol=1e-6)


def test_encode_video_returns_the_normalised_or_raw_golden_vectors(student, inputs, z):
    pixels, mask, _ = inputs
    with torch.no_grad():
        assert_close(student.encode_video(pixels, mask), z["video_embed_normed"], "video_embed_normed")
        assert_close(student.encode_video(pixels, mask, normalize=False), z["video_embed"], "video_embed")
        assert_close(student.encode_video(pixels, mask, afa="real_frames"), z["alone_video_embed_normed"],
                     "alone_video_embed_normed")
        assert_close(student.encode_video(pixels, mask, afa="real_frames", normalize=False), z["alone_video_embed"],
                     "alone_video_embed")


def test_similarity_and_logits(student, text, official, alone, z):
    assert_close(student.logit_scale_exp(), z["logit_scale_exp"], "logit_scale_exp")
    assert_close(student.similarity(text, official.video_embed), z["sim"], "sim")
    assert_close(student.logits(text, official.video_embed), z["logits_train"], "logits_train")
    assert_close(student.logits(text, official.mean_pooled_embed), z["logits_meanP"], "logits_meanP")
    assert_close(student.similarity(text, alone.video_embed), z["alone_sim"], "alone_sim")
    assert_close(student.logits(text, alone.video_embed), z["alone_logits_train"], "alone_logits_train")


def test_video_from_precomputed_frame_features(student, z):
    features, mask = torch.from_numpy(z["frame_features"]), torch.from_numpy(z["video_mask"])
    with torch.no_grad():
        assert_close(student.encode_video(features, mask, normalize=False), z["video_embed"], "video_embed")
        assert_close(student.encode_video(features, mask, afa="real_frames", normalize=False),
                     z["alone_video_embed"], "alone_video_embed")


@pytest.mark.parametrize("afa", ["official", "real_frames"])
def test_a_video_alone_equals_its_row_in_the_padded_batch(student, inputs, z, afa):
    pixels, mask, _ = inputs
    expected_name = "video_embed" if afa == "official" else "alone_video_embed"
    with torch.no_grad():
        batch = student.encode_video(pixels, mask, afa=afa, normalize=False)
        for b, length in enumerate(z["video_lengths"]):
            one = student.encode_video(pixels[b, :length], afa=afa, normalize=False)  # [T, 3, S, S], no mask
            assert one.shape == (1, student.embed_dim)
            torch.testing.assert_close(one[0], batch[b], rtol=0, atol=1e-6)
            assert_close(one[0], z[expected_name][b], expected_name)


def test_batch_composition_and_extra_padded_slots_do_not_change_a_vector(student, inputs):
    pixels, mask, _ = inputs
    wide_pixels = torch.cat([pixels, torch.randn(4, 4, *pixels.shape[2:])], dim=1)  # 16 slots, garbage padding
    wide_mask = torch.cat([mask, torch.zeros(4, 4, dtype=mask.dtype)], dim=1)
    garbage = pixels.clone()
    garbage[~mask.bool()] = 5.0  # padded slots hold something else than zeros
    with torch.no_grad():
        reference = student.encode_video(pixels, mask)
        torch.testing.assert_close(student.encode_video(wide_pixels, wide_mask), reference, rtol=0, atol=1e-6)
        torch.testing.assert_close(student.encode_video(garbage, mask), reference, rtol=0, atol=1e-6)
        reordered = student.encode_video(pixels[[2, 0]], mask[[2, 0]])
        torch.testing.assert_close(reordered, reference[[2, 0]], rtol=0, atol=1e-6)


def test_bad_video_inputs_are_refused(student, inputs):
    pixels, mask, _ = inputs
    with torch.no_grad():
        with pytest.raises(ValueError, match="max_frames"):
            student.encode_video(torch.zeros(13, 3, 96, 96))
        with pytest.raises(ValueError, match="prefix"):
            student.encode_video(pixels[:1], torch.tensor([[0] + [1] * 11]))
        with pytest.raises(ValueError, match="at least one real frame"):
            student.encode_video(pixels[:1], torch.zeros(1, 12))
        with pytest.raises(ValueError, match="pixels"):
            student.encode_video(torch.zeros(1, 12, 3, 64, 64))
        with pytest.raises(TypeError, match="float32"):
            student.encode_video(torch.zeros(1, 12, 3, 96, 96, dtype=torch.uint8))
        with pytest.raises(ValueError, match="afa"):
            student.encode_video(pixels, mask, afa="mean")
        with pytest.raises(ValueError, match="context length"):
            student.encode_text(torch.zeros(1, 78, dtype=torch.int64))


def test_bare_clip_gives_the_student_clip_features(student, inputs, golden_t2v):
    sd = torch.load(golden_t2v / "clip_tiny.pt", map_location="cpu", weights_only=True)
    clip = build_clip(sd)
    pixels, mask, ids = inputs
    real = pixels[mask.bool()]
    with torch.no_grad():
        assert torch.equal(clip.encode_image(real), student.clip.encode_image(real))
        assert torch.equal(clip.encode_text(ids), student.clip.encode_text(ids))
        from_file = load_checkpoint(golden_t2v / "clip_tiny.pt")
        assert torch.equal(from_file.encode_text(ids), student.encode_text(ids))
        assert torch.equal(from_file.encode_frames(pixels), student.encode_frames(pixels))
