"""TensorRT: profiles from the spec, clear errors without TensorRT, engine parity where a GPU + TensorRT exist."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from dnsvr.client import spec
from dnsvr.export.tensorrt import ProfileConfig, TensorRTUnavailable, import_tensorrt
from dnsvr.serving.cli.main import main

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def test_profile_shapes_follow_the_spec() -> None:
    profile = ProfileConfig(frames=(1, 60, 600), batch=(1, 8, 32), candidates=(1, 64, 512))
    shapes = profile.shapes(spec.FINE_SIMILARITY_BIN)
    assert shapes["query"] == ((1, 9, 64), (60, 9, 64), (600, 9, 64))
    assert shapes["candidates"] == ((1, 1, 9, 64), (64, 60, 9, 64), (512, 600, 9, 64))
    assert shapes["candidate_mask"] == ((1, 1), (64, 60), (512, 600))
    coarse = profile.shapes(spec.COARSE_EMBED)["features"]
    assert coarse[2] == (spec.COARSE_EMBED.max_batch_size, 600, 9, 512)  # batch capped by max_batch_size
    assert profile.shapes(spec.FEATURE_EXTRACTOR)["frames"][2] == (64, 224, 224, 3)


def test_profile_config_file_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"frames": [4, 30, 300]}))
    assert ProfileConfig.from_json(path).frames == (4, 30, 300)
    path.write_text(json.dumps({"frame": [4, 30, 300]}))
    with pytest.raises(ValueError, match="unknown profile keys"):
        ProfileConfig.from_json(path)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ProfileConfig(frames=(10, 5, 100))


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_missing_tensorrt_is_a_clear_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(TensorRTUnavailable, match="pip install tensorrt"):
        import_tensorrt()
    assert main(["export", "--weights", "bundled", "--tensorrt", "--out", str(tmp_path / "r")]) == 1
    assert "tensorrt" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TENSORRT or not has_gpu(), reason="needs the tensorrt package and a CUDA GPU")
@pytest.mark.parametrize("name", ["fine_similarity_bin", "coarse_embed", "selector_index"])
def test_engine_matches_onnx_runtime(name, golden_dir: Path, tmp_path: Path) -> None:
    from dnsvr.export.graphs import GRAPH_CLASSES
    from dnsvr.export.onnx_export import example_feeds, export_onnx
    from dnsvr.export.onnx_runner import OnnxRunner
    from dnsvr.export.tensorrt import build_engine, run_engine
    from dnsvr.training import load_checkpoint

    stem = {"fine_similarity_bin": "fg_bin_student", "coarse_embed": "cg_student", "selector_index": "selector"}
    model = spec.NETWORKS[name]
    network = load_checkpoint(golden_dir / f"{stem[name]}.pth")
    onnx_path = export_onnx(GRAPH_CLASSES[name](network), model, tmp_path / "model.onnx")
    plan = build_engine(onnx_path, tmp_path / "model.plan", model, ProfileConfig(frames=(1, 16, 64)))
    for lengths, frames in (([1, 3, 9], 12), ([16], 16)):
        feeds = example_feeds(model, lengths, frames, query_length=5, query_frames=7, seed=frames)
        got = run_engine(plan, model, feeds)
        want = OnnxRunner(onnx_path).run(feeds)
        for output in model.output_names:
            np.testing.assert_allclose(got[output], want[output], rtol=1e-4, atol=1e-4)


def test_text_profiles_fix_size_frames_and_tokens() -> None:
    text = {"kind": "teachclip", "afa": "official", "max_frames": 12, "image_size": 224, "embed_dim": 512,
            "max_words": 32}
    video = ProfileConfig().shapes(spec.VIDEO_TEXT_EMBED, text)
    assert video["frames"] == ((1, 1, 224, 224, 3), (8, 12, 224, 224, 3), (16, 12, 224, 224, 3))
    assert video["mask"] == ((1, 1), (8, 12), (16, 12))
    assert ProfileConfig().shapes(spec.TEXT_ENCODER, text)["token_ids"] == ((1, 2), (8, 32), (64, 32))
    offline = {"kind": "offline_minilm_effnet", "afa": "real_frames", "max_frames": 12, "embed_dim": 256,
               "max_words": 32}
    video = ProfileConfig().shapes(spec.VIDEO_TEXT_EMBED_EFFNET, offline)
    assert video["frame_features"] == ((1, 1, 1280), (8, 12, 1280), (16, 12, 1280))
    assert video["mask"] == ((1, 1), (8, 12), (16, 12))
    tokens = ProfileConfig().shapes(spec.TEXT_ENCODER_MINILM, offline)
    assert tokens["input_ids"] == tokens["attention_mask"] == ((1, 2), (8, 32), (64, 32))
    assert ProfileConfig().shapes(spec.FEATURE_EXTRACTOR_POOLED)["frames"][2] == (64, 224, 224, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TENSORRT or not has_gpu(), reason="needs the tensorrt package and a CUDA GPU")
@pytest.mark.parametrize("name", ["text_encoder", "video_text_embed"])
def test_text_engines_match_onnx_runtime(name, golden_t2v: Path, tmp_path: Path) -> None:
    from dnsvr.export.graphs import build_graph
    from dnsvr.export.onnx_export import export_onnx
    from dnsvr.export.onnx_runner import OnnxRunner
    from dnsvr.export.tensorrt import build_engine, run_engine
    from dnsvr.export.text_graphs import example_feeds
    from dnsvr.training import load_checkpoint

    student = load_checkpoint(golden_t2v / "teachclip_student.bin")
    model = spec.NETWORKS[name]
    text = {"kind": "teachclip", "afa": "official", "max_frames": 12, "image_size": 96, "embed_dim": 64,
            "max_words": 32}
    onnx_path = export_onnx(build_graph(name, student), model, tmp_path / "model.onnx",
                            example=example_feeds(name, student, [5, 3], frames=5))
    plan = build_engine(onnx_path, tmp_path / "model.plan", model, ProfileConfig(), text=text)
    cases = [[1, 3, 9], [12], [30]] if name == "text_encoder" else [[1, 3, 9], [12], [2] * 16]
    for lengths in cases:  # tokens per caption / frames per video (padded to 12 slots)
        feeds = example_feeds(name, student, lengths, 12 if name == "video_text_embed" else None, seed=len(lengths))
        got, want = run_engine(plan, model, feeds), OnnxRunner(onnx_path).run(feeds)
        np.testing.assert_allclose(got["embedding"], want["embedding"], rtol=1e-4, atol=1e-4)
