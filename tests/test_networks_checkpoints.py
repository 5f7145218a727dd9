"""load_checkpoint: kind inference, constructor arguments from shapes, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dnsvr.training import (
    OFFICIAL_URLS,
    CheckpointError,
    CoarseGrainedStudent,
    FineGrainedStudent,
    SelectorNetwork,
    ViSiLHead,
    download_official,
    load_checkpoint,
)
from dnsvr.training.networks.checkpoints import infer_kind, read_state_dict

GOLDEN_KINDS = {
    "fg_att_student": (FineGrainedStudent, "fg_att_student"),
    "fg_bin_student": (FineGrainedStudent, "fg_bin_student"),
    "cg_student": (CoarseGrainedStudent, "cg_student"),
    "selector": (SelectorNetwork, "selector"),
    "teacher": (ViSiLHead, "teacher"),
}


def keys_file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Random tensors with the names, shapes and dtypes listed in a golden *.keys.txt file."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
        if dtype == "int64":
            sd[key] = torch.zeros(dims, dtype=torch.long)
        else:
            sd[key] = torch.randn(dims, generator=g) * 0.02
    return sd


@pytest.mark.parametrize("name", sorted(GOLDEN_KINDS))
def test_kind_inferred_from_keys(golden_dir: Path, name: str) -> None:
    cls, kind = GOLDEN_KINDS[name]
    path = golden_dir / f"{name}.pth"
    assert infer_kind(read_state_dict(path)) == kind
    model = load_checkpoint(path)
    assert type(model) is cls and not model.training
    assert type(load_checkpoint(path, kind=kind)) is cls
    keys = [line.split("\t")[0] for line in (golden_dir / f"{name}.keys.txt").read_text().splitlines()]
    assert list(model.state_dict()) == keys


def test_kind_mismatch(golden_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="fg_att_student.*not fg_bin_student"):
        load_checkpoint(golden_dir / "fg_att_student.pth", kind="fg_bin_student")
    with pytest.raises(CheckpointError, match="unknown checkpoint kind"):
        load_checkpoint(golden_dir / "fg_att_student.pth", kind="resnet18")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "dns_cg_student.pth")


def test_corrupt_and_truncated_files(golden_dir: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 100)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((golden_dir / "selector.pth").read_bytes()[:50_000])
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path in (garbage, truncated, empty):
        with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
            load_checkpoint(path)


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    """weights_only=True refuses arbitrary pickles such as a whole nn.Module."""
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_unknown_and_malformed_state_dicts(golden_dir: Path, tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(3)}}, unknown)
    with pytest.raises(CheckpointError, match="match no DnS/ViSiL network"):
        load_checkpoint(unknown)
    not_tensors = tmp_path / "not_tensors.pth"
    torch.save({"epoch": 3, "lr": 0.1}, not_tensors)
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        load_checkpoint(not_tensors)
    wrong_shape = tmp_path / "wrong_shape.pth"
    sd = read_state_dict(golden_dir / "fg_att_student.pth")
    sd["visil_head.conv2.weight"] = torch.zeros(64, 16, 3, 3)
    torch.save({"model": sd}, wrong_shape)
    with pytest.raises(CheckpointError, match="do not fit a fg_att_student"):
        load_checkpoint(wrong_shape)
    missing_key = tmp_path / "missing_key.pth"
    del sd["visil_head.conv2.weight"]
    torch.save({"model": sd}, missing_key)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(missing_key)


def test_wrapped_and_bare_state_dicts_load_the_same(golden_dir: Path, tmp_path: Path) -> None:
    sd = read_state_dict(golden_dir / "fg_bin_student.pth")
    bare, wrapped = tmp_path / "bare.pth", tmp_path / "wrapped.pth"
    torch.save(sd, bare)
    torch.save({"model": sd}, wrapped)
    a, b = load_checkpoint(bare), load_checkpoint(wrapped)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    teacher = torch.load(golden_dir / "teacher.pth", weights_only=True)
    assert "model" not in teacher  # the official visil.pth layout: a bare state_dict
    assert isinstance(load_checkpoint(golden_dir / "teacher.pth", kind="teacher"), ViSiLHead)


def test_official_coarse_student_configuration(golden_dir: Path, tmp_path: Path) -> None:
    """An official-style dns_cg_student.pth (64 clusters, 1024 outdims) from cg_student_official.keys.txt."""
    path = tmp_path / "dns_cg_student.pth"
    torch.save({"model": keys_file_state_dict(golden_dir / "cg_student_official.keys.txt")}, path)
    model = load_checkpoint(path)
    assert isinstance(model, CoarseGrainedStudent)
    assert (model.netvlad.num_clusters, model.netvlad.outdims, model.dims) == (64, 1024, 512)
    video = torch.nn.functional.normalize(torch.randn(2, 6, 9, 512), dim=-1)
    with torch.no_grad():
        out = model.index_video(video, torch.tensor([[1] * 6, [1] * 3 + [0] * 3]))
    assert out.shape == (2, 1024)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_reduced_coarse_student_needs_no_arguments(golden_dir: Path) -> None:
    model = load_checkpoint(golden_dir / "cg_student.pth")
    assert (model.netvlad.num_clusters, model.netvlad.outdims) == (16, 256)


def test_pca_file_components(tmp_path: Path) -> None:
    path = tmp_path / "pca.pth"
    d = torch.tensor([0.5, 3.0, 1.0, 2.0])
    torch.save({"mean": torch.zeros(4), "d": d, "V": torch.eye(4)}, path)
    pca = load_checkpoint(path, kind="pca", pca_components=2)
    assert pca.DVt.shape == (4, 2)
    expected = torch.zeros(4, 2)
    expected[1, 0], expected[3, 1] = 3.0 ** -0.5, 2.0 ** -0.5
    assert torch.allclose(pca.DVt, expected, atol=1e-6)


def test_official_urls_and_download_guard(tmp_path: Path) -> None:
    for name in ("dns_fg_att_student.pth", "dns_fg_bin_student.pth", "dns_cg_student.pth",
                 "dns_selector_cg-fg_att.pth", "dns_selector_cg-fg_bin.pth", "pca_resnet50_vcdb_1M.pth",
                 "visil.pth"):
        assert OFFICIAL_URLS[name].endswith("/" + name)
    with pytest.raises(ValueError, match="unknown official file"):
        download_official(tmp_path, names=["resnet18.pth"])


def test_constructor_overrides(golden_dir: Path) -> None:
    teacher = load_checkpoint(golden_dir / "teacher.pth", symmetric=True)
    assert teacher.symmetric
    student = load_checkpoint(golden_dir / "fg_att_student.pth", reference_padding=True)
    assert student.reference_padding
    with pytest.raises(CheckpointError, match="bad constructor arguments"):
        load_checkpoint(golden_dir / "selector.pth", netvlad_clusters=8)
    with pytest.raises(CheckpointError, match="bad constructor arguments"):
        load_checkpoint(golden_dir / "cg_student.pth", transformer_heads=7)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(golden_dir / "cg_student.pth", netvlad_clusters=8)
