"""Every network against the golden vectors of ../shared/golden (the numeric contract in its README.md).

Tolerances (README "Numerical tolerance"): main outputs rtol = atol = 1e-5, intermediates atol = 5e-5,
binary codes and masks exact.  Intermediates of the padded batch that the reference computes with its
straddling masked pools are compared under `reference_padding=True`; the default mode must give each pair
its unpadded score (`similarity_unpadded`, `single_video_index`).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from dnsvr.training import (
    CoarseGrainedStudent,
    FeatureExtractor,
    FineGrainedStudent,
    PCAWhitening,
    SelectorNetwork,
    ViSiLHead,
    load_checkpoint,
)
from dnsvr.training.networks.resnet50 import ResNet50

MAIN = {"rtol": 1e-5, "atol": 1e-5}
INTERMEDIATE = {"rtol": 1e-5, "atol": 5e-5}


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def close(ours: torch.Tensor, golden: np.ndarray, tol: dict) -> None:
    ours = ours.detach().cpu().numpy()
    assert ours.shape == golden.shape
    keep = ~np.isnan(golden)
    np.testing.assert_allclose(ours[keep], golden[keep], **tol)


def exact(ours: torch.Tensor, golden: np.ndarray) -> None:
    ours = ours.detach().cpu().numpy()
    assert ours.shape == golden.shape
    np.testing.assert_array_equal(ours.astype(golden.dtype), golden)


def arrays(golden_dir: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(golden_dir / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", ["fg_att_student", "fg_bin_student"])
def test_fine_grained_student(golden_dir: Path, name: str) -> None:
    z = arrays(golden_dir, name)
    t = {k: torch.from_numpy(v) for k, v in z.items()}
    model = load_checkpoint(golden_dir / f"{name}.pth")
    assert isinstance(model, FineGrainedStudent) and not model.training
    codes = name == "fg_bin_student"
    check_indexed = exact if codes else (lambda a, b: close(a, b, MAIN))

    check_indexed(model.index_video(t["query"]), z["query_indexed"])
    qi = model.index_video(t["queries"], t["queries_mask"])
    ti = model.index_video(t["targets"], t["targets_mask"].float())
    check_indexed(qi, z["queries_indexed"])
    check_indexed(ti, z["targets_indexed"])
    qm, tm = t["queries_mask"], t["targets_mask"]

    f2f, f2f_mask = model.frame_to_frame_similarity(qi, ti, qm, tm)
    close(f2f, z["f2f_similarity"], INTERMEDIATE)
    exact(f2f_mask, z["f2f_mask"])
    out, out_mask = model.visil_head(t["f2f_similarity"], t["f2f_mask"], reference_padding=True)
    close(out, z["comparator_output"], INTERMEDIATE)
    exact(out_mask, z["comparator_mask"])
    matrix, _ = model.similarity_matrix(qi, ti, qm, tm, reference_padding=True)
    close(matrix, z["similarity_matrix"], INTERMEDIATE)

    close(model.calculate_video_similarity(qi, ti, qm.float(), tm.float(), reference_padding=True),
          z["similarity"], MAIN)
    close(model.calculate_video_similarity(qi, ti), z["similarity_nomask"], MAIN)
    batched = model.calculate_video_similarity(qi, ti, qm, tm)
    close(batched, z["similarity_unpadded"], MAIN)
    close(batched, z["similarity_repeat"], MAIN)

    for i, lq in enumerate(z["queries_lengths"]):
        for j, lt in enumerate(z["targets_lengths"]):
            alone = model.calculate_video_similarity(qi[i, :lq], ti[j, :lt])
            assert alone.shape == (1, 1)
            close(alone[0], z["similarity_repeat"][i, j:j + 1], MAIN)


def test_coarse_grained_student(golden_dir: Path) -> None:
    z = arrays(golden_dir, "cg_student")
    t = {k: torch.from_numpy(v) for k, v in z.items()}
    model = load_checkpoint(golden_dir / "cg_student.pth")
    assert isinstance(model, CoarseGrainedStudent)
    assert (model.netvlad.num_clusters, model.netvlad.outdims) == (16, 256)

    stages = model.index_video_intermediates(t["videos"], t["videos_mask"])
    close(stages["indexed"], z["indexed"], MAIN)
    for key in ("attention_weights", "frame_vectors", "transformer_output", "netvlad_output"):
        close(stages[key], z[key], INTERMEDIATE)
    indexed2 = model.index_video(t["videos2"], t["videos2_mask"].float())
    close(indexed2, z["indexed2"], MAIN)
    close(model.calculate_video_similarity(stages["indexed"], indexed2), z["similarity"], MAIN)
    close(model.index_video(t["single_video"]), z["single_indexed"], MAIN)


def test_selector(golden_dir: Path) -> None:
    z = arrays(golden_dir, "selector")
    t = {k: torch.from_numpy(v) for k, v in z.items()}
    model = load_checkpoint(golden_dir / "selector.pth")
    assert isinstance(model, SelectorNetwork)
    videos, mask = t["videos"], t["videos_mask"]

    _, weights = model.attention(videos)
    close(weights[..., 0] * mask[..., None], z["attention_weights"], INTERMEDIATE)
    f2f, f2f_mask = model.frame_to_frame_similarity(videos, mask)
    close(f2f, z["f2f_similarity"], INTERMEDIATE)
    out, out_mask = model.visil_head(f2f, f2f_mask, reference_padding=True)
    close(out, z["comparator_output"], INTERMEDIATE)
    exact(out_mask, z["comparator_mask"])
    close(model.index_video(videos, mask.float(), reference_padding=True), z["index"], MAIN)

    single = model.index_video(t["single_video"])
    close(single, z["single_video_index"], MAIN)
    row = int(z["single_row"])
    close(model.index_video(videos, mask)[row:row + 1], z["single_video_index"], MAIN)
    close(model(t["mlp_input"]), z["mlp_output"], MAIN)


def test_teacher(golden_dir: Path) -> None:
    z = arrays(golden_dir, "teacher")
    t = {k: torch.from_numpy(v) for k, v in z.items()}
    model = load_checkpoint(golden_dir / "teacher.pth")
    assert isinstance(model, ViSiLHead)

    close(model.attention_weights(t["query_features"]), z["query_attention_weights"], INTERMEDIATE)
    close(model.attention_weights(t["target_features"]), z["target_attention_weights"], INTERMEDIATE)
    query, target = model.index_video(t["query_features"]), model.index_video(t["target_features"])
    f2f, f2f_mask = model.frame_to_frame_similarity(query, target)
    close(f2f, z["f2f_similarity"], INTERMEDIATE)
    close(model.visil_output(f2f, f2f_mask)[0], z["comparator_output"], INTERMEDIATE)
    close(model(query, target), z["similarity"], MAIN)
    close(model(t["query_features"], t["target_features"]), z["similarity_no_attention"], MAIN)


# --- feature extractor: weights regenerated as feature_extractor.README.txt specifies -----------------------

SEED = 1234


def _generator(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(name.encode()) ^ SEED)


def _backbone_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    g = _generator(key)
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0, dtype=torch.long)
    if key.endswith("running_var"):
        return torch.rand(shape, generator=g) + 0.5
    if key.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=g)
    if key.endswith("bias"):
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 1:
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    return torch.randn(shape, generator=g) * math.sqrt(2.0 / math.prod(shape[1:]))


@pytest.fixture(scope="module")
def regenerated() -> dict[str, torch.Tensor]:
    """Backbone state_dict (torchvision names) plus the PCA file's mean/d/V."""
    tensors = {k: _backbone_tensor(k, tuple(v.shape)) for k, v in ResNet50().state_dict().items()}
    tensors["pca.mean"] = 0.01 * torch.randn(3840, generator=_generator("pca.mean"))
    tensors["pca.d"] = torch.rand(3840, generator=_generator("pca.d")) + 0.1
    tensors["pca.V"] = torch.randn(3840, 3840, generator=_generator("pca.V")) / math.sqrt(3840)
    return tensors


@pytest.fixture(scope="module")
def extractor(regenerated, tmp_path_factory) -> FeatureExtractor:
    """Built through load_checkpoint: the official-format PCA file, then a whole FeatureExtractor file."""
    folder = tmp_path_factory.mktemp("fe")
    pca_file = folder / "pca_resnet50_vcdb_1M.pth"
    torch.save({k: regenerated[f"pca.{k}"] for k in ("mean", "d", "V")}, pca_file)
    pca = load_checkpoint(pca_file)
    assert isinstance(pca, PCAWhitening)
    model = FeatureExtractor(dims=512)
    model.cnn.load_state_dict({k: v for k, v in regenerated.items() if not k.startswith("pca.")}, strict=True)
    model.pca = pca
    full_file = folder / "feature_extractor.pth"
    torch.save({"model": model.state_dict()}, full_file)
    loaded = load_checkpoint(full_file)
    assert isinstance(loaded, FeatureExtractor)
    return loaded


def test_feature_extractor_keys(golden_dir: Path, extractor: FeatureExtractor) -> None:
    lines = (golden_dir / "feature_extractor.keys.txt").read_text().splitlines()
    expected = [line.split("\t")[:2] for line in lines]
    ours = [[k, str(list(v.shape))] for k, v in extractor.state_dict().items()]
    assert sorted(ours) == sorted(expected)


def test_feature_extractor_weight_checksums(
    golden_dir: Path, regenerated, extractor: FeatureExtractor
) -> None:
    tensors = dict(regenerated)
    derived = "derived:pca.DVt (FeatureExtractor state_dict)"
    tensors[derived] = extractor.pca.DVt.detach()
    lines = (golden_dir / "feature_extractor_weight_checksums.txt").read_text().splitlines()
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert {r[0] for r in rows} == set(tensors)
    for key, shape, dtype, total, total_abs, first in rows:
        x = tensors[key]
        assert str(list(x.shape)) == shape and str(x.dtype).removeprefix("torch.") == dtype, key
        # Generated tensors are bit-identical; the derived DVt may differ by float32 rounding (1-2 ulp).
        rel = 1e-6 if key == derived else 1e-9
        assert math.isclose(float(x.double().sum()), float(total), rel_tol=rel, abs_tol=1e-9), key
        assert math.isclose(float(x.double().abs().sum()), float(total_abs), rel_tol=rel, abs_tol=1e-9), key
        np.testing.assert_allclose(x.flatten()[:4].double().numpy(), [float(v) for v in first.split()],
                                   rtol=max(rel, 1e-8), err_msg=key)


@pytest.mark.parametrize("index", [0, 1])
def test_feature_extractor(golden_dir: Path, extractor: FeatureExtractor, index: int) -> None:
    z = arrays(golden_dir, "feature_extractor")
    video = torch.from_numpy(z[f"video_{index}"])
    close(extractor.extract_region_vectors(extractor.normalizer(video)), z[f"region_vectors_{index}"], MAIN)
    close(extractor(video, batch_size=3), z[f"features_{index}"], MAIN)


def test_feature_extractor_rejects_bad_input(extractor: FeatureExtractor) -> None:
    with pytest.raises(TypeError, match="uint8"):
        extractor(torch.zeros(2, 224, 224, 3))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        extractor(torch.zeros(224, 224, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="no frames"):
        extractor(torch.zeros(0, 224, 224, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="too small"):
        extractor(torch.zeros(1, 100, 224, 3, dtype=torch.uint8))
    assert extractor(torch.zeros(1, 109, 109, 3, dtype=torch.uint8)).shape == (1, 1, 512)
