"""TeachCLIP checkpoint loading (dnsvr.training.networks.teachclip): TeachCLIP students, bare OpenAI CLIP
state dicts, and files it must refuse."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import GOLDEN
from dnsvr.training.networks.checkpoints import CheckpointError, load_checkpoint, read_state_dict
from dnsvr.training.networks.clip import CLIPConfig, build_clip
from dnsvr.training.networks.teachclip import TeachCLIPStudent, checkpoint_kind

DNS_CHECKPOINT = GOLDEN / "fg_bin_student.pth"


@pytest.fixture(scope="module")
def student_sd(golden_t2v) -> dict[str, torch.Tensor]:
    return torch.load(golden_t2v / "teachclip_student.bin", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def clip_sd(golden_t2v) -> dict[str, torch.Tensor]:
    return torch.load(golden_t2v / "clip_tiny.pt", map_location="cpu", weights_only=True)


def test_kinds_are_recognised(student_sd, clip_sd):
    assert checkpoint_kind(student_sd) == "teachclip"
    assert checkpoint_kind(clip_sd) == "clip"


def test_teachclip_checkpoint_widens_fp16_and_keeps_float32_exactly(student_sd):
    assert {v.dtype for v in student_sd.values()} == {torch.float16, torch.float32}
    student = TeachCLIPStudent.from_state_dict(student_sd)
    loaded = student.state_dict()
    assert set(loaded) == set(student_sd)
    for key, value in student_sd.items():
        assert loaded[key].dtype == torch.float32, key
        assert torch.equal(loaded[key], value.float()), key  # fp16 widened exactly, float32 untouched
        assert loaded[key].data_ptr() != value.data_ptr(), key  # no aliasing of the caller's tensors


def test_student_state_dict_round_trips(student_sd, tmp_path):
    student = TeachCLIPStudent.from_state_dict(student_sd)
    path = tmp_path / "student.bin"
    torch.save(student.state_dict(), path)
    reloaded = load_checkpoint(path)
    ids = torch.tensor([[49406, 320, 1929, 49407, 0]])
    with torch.no_grad():
        assert torch.equal(reloaded.encode_text(ids), student.encode_text(ids))
        features = torch.randn(2, 5, student.embed_dim)
        assert torch.equal(reloaded.encode_video(features), student.encode_video(features))


def test_bare_clip_gets_a_deterministic_clip4clip_head(clip_sd):
    student = TeachCLIPStudent.from_state_dict(clip_sd)
    again = TeachCLIPStudent.from_state_dict(clip_sd)
    sd, other = student.state_dict(), again.state_dict()
    assert all(torch.equal(sd[k], other[k]) for k in sd)
    assert student.temporal_layers == 4 and student.max_frames == 12
    assert torch.equal(sd["frame_position_embeddings.weight"], clip_sd["positional_embedding"].float())
    for i in range(2):  # clip_tiny has 2 text blocks: temporal blocks 0, 1 are copies
        for name, value in clip_sd.items():
            if name.startswith(f"transformer.resblocks.{i}."):
                assert torch.equal(sd[name.replace("transformer.", "transformerClip.")], value.float()), name
    for i in range(2, 4):  # the others are fresh: LayerNorms 1/0, biases 0, N(0, 0.02) weights
        block = f"transformerClip.resblocks.{i}."
        assert torch.equal(sd[block + "ln_1.weight"], torch.ones(64))
        assert not sd[block + "attn.in_proj_bias"].any()
        assert 0.01 < float(sd[block + "mlp.c_fc.weight"].std()) < 0.03
    assert not sd["frameLinear.bias"].any() and 0.01 < float(sd["frameLinear.weight"].std()) < 0.03
    with torch.no_grad():
        video = student.encode_video(torch.zeros(2, 3, 96, 96))
    assert video.shape == (1, 64) and torch.isfinite(video).all()


def test_bare_clip_temporal_depth_is_an_option(clip_sd):
    assert TeachCLIPStudent.from_state_dict(clip_sd, temporal_layers=2).temporal_layers == 2


def test_bare_clip_with_jit_scalars_builds(clip_sd):
    with_scalars = {**clip_sd, "input_resolution": torch.tensor(96), "context_length": torch.tensor(77),
                    "vocab_size": torch.tensor(49408)}
    assert build_clip(with_scalars).config == CLIPConfig.from_state_dict(clip_sd)
    assert TeachCLIPStudent.from_state_dict(with_scalars).clip.config.image_resolution == 96


def test_logit_scale_clamp(student_sd):
    student = TeachCLIPStudent.from_state_dict(student_sd)
    with torch.no_grad():
        student.clip.logit_scale.fill_(10.0)
    student.clamp_logit_scale_()
    assert math.isclose(float(student.logit_scale_exp().detach()), 100.0, rel_tol=1e-5)


@pytest.mark.skipif(not DNS_CHECKPOINT.is_file(), reason="no DnS golden checkpoint")
def test_a_dns_checkpoint_is_refused_by_name():
    with pytest.raises(CheckpointError, match="holds a fg_bin_student checkpoint, not teachclip_student"):
        load_checkpoint(DNS_CHECKPOINT, kind="teachclip_student")
    with pytest.raises(CheckpointError, match="DnS"):
        TeachCLIPStudent.from_state_dict(read_state_dict(DNS_CHECKPOINT))


def test_truncated_and_garbage_files_are_refused(golden_t2v, tmp_path):
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes((golden_t2v / "teachclip_student.bin").read_bytes()[:100_000])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 64)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
            load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "absent.bin")


def test_files_that_are_not_state_dicts_are_refused(tmp_path):
    for name, obj in {"list": [torch.zeros(1)], "tensor": torch.zeros(3), "empty": {},
                      "mixed": {"visual.proj": torch.zeros(1), "step": 3}}.items():
        path = tmp_path / f"{name}.pt"
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match="state.dict"):
            read_state_dict(path)


def test_unknown_layout_is_refused():
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        TeachCLIPStudent.from_state_dict({"encoder.weight": torch.zeros(2, 2)})


def test_missing_head_key_is_named(student_sd):
    damaged = {k: v for k, v in student_sd.items() if k != "frameLinear2.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys: frameLinear2\.bias"):
        TeachCLIPStudent.from_state_dict(damaged)


def test_missing_clip_key_is_named(student_sd):
    damaged = {k: v for k, v in student_sd.items() if k != "clip.text_projection"}
    with pytest.raises(CheckpointError, match="text_projection"):
        TeachCLIPStudent.from_state_dict(damaged)


def test_unexpected_key_is_named(student_sd):
    with pytest.raises(CheckpointError, match=r"unexpected keys: cross\.pooler\.dense\.weight"):
        TeachCLIPStudent.from_state_dict({**student_sd, "cross.pooler.dense.weight": torch.zeros(64, 64)})


def test_wrong_shape_is_named(student_sd):
    with pytest.raises(CheckpointError, match=r"wrong shapes: frameLinear\.weight"):
        TeachCLIPStudent.from_state_dict({**student_sd, "frameLinear.weight": torch.zeros(64, 32)})


def test_temporal_depth_mismatch_and_non_seqtransf_are_refused(student_sd):
    with pytest.raises(CheckpointError, match="4 temporal blocks"):
        TeachCLIPStudent.from_state_dict(student_sd, temporal_layers=2)
    mean_pooling = {k: v for k, v in student_sd.items() if not k.startswith("transformerClip.")}
    with pytest.raises(CheckpointError, match="seqTransf"):
        TeachCLIPStudent.from_state_dict(mean_pooling)


def test_resnet_clip_is_refused():
    with pytest.raises(CheckpointError, match="ResNet"):
        TeachCLIPStudent.from_state_dict({"visual.layer1.0.conv1.weight": torch.zeros(1),
                                          "text_projection": torch.zeros(1, 1)})
