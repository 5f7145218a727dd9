"""The text-video student exported: ONNX graphs against the golden TeachCLIP arrays (both AFA modes, padded batch
and batch of one), parity cases, dynamic axes, and where the student comes from (pack role, official folder,
checkpoint files, --text-weights) into a repository with the text path and its manifest settings."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from dnsvr.client import spec
from dnsvr.export.manifest import FORMAT, text_settings
from dnsvr.export.onnx_export import export_onnx
from dnsvr.export.onnx_runner import OnnxRunner
from dnsvr.export.parity import check_parity
from dnsvr.export.repository import build_repository, repository_files
from dnsvr.export.text_graphs import TextEncoderGraph, VideoTextEmbedGraph, example_feeds
from dnsvr.export.weights import WeightsError, resolve_weights
from dnsvr.training.data.clip_frames import resize_and_crop, select_frame_indices
from dnsvr.training.networks.checkpoints import load_checkpoint
from dnsvr.training.packs.model_pack import BUNDLED_DIR

ATOL, RTOL = 1e-5, 1e-5  # the golden README's atol for text_embed_normed / video_embed_normed


@pytest.fixture(scope="module")
def z(golden_t2v):
    return np.load(golden_t2v / "teachclip_student.npz")


@pytest.fixture(scope="module")
def student(golden_t2v):
    return load_checkpoint(golden_t2v / "teachclip_student.bin")


@pytest.fixture(scope="module")
def runners(student, tmp_path_factory) -> dict[str, OnnxRunner]:
    folder = tmp_path_factory.mktemp("text_graphs")
    graphs = {"text": (TextEncoderGraph(student), spec.TEXT_ENCODER),
              "official": (VideoTextEmbedGraph(student, "official"), spec.VIDEO_TEXT_EMBED),
              "real_frames": (VideoTextEmbedGraph(student, "real_frames"), spec.VIDEO_TEXT_EMBED)}
    found = {}
    for key, (graph, model) in graphs.items():
        example = example_feeds(model.name, student, [5, 3], frames=5)
        found[key] = OnnxRunner(export_onnx(graph, model, folder / f"{key}.onnx", example=example))
    return found


def golden_crops(z) -> tuple[np.ndarray, np.ndarray]:
    """The golden videos' crops as the server makes them (uint8 [4, 12, 96, 96, 3], zero-padded) and mask."""
    crops = np.zeros((4, 12, 96, 96, 3), np.uint8)
    mask = np.zeros((4, 12), bool)
    for b, (offset, count) in enumerate(zip(z["raw_frame_offsets"], z["raw_frame_counts"], strict=True)):
        frames = z["raw_frames_uint8"][offset:offset + count]
        chosen = select_frame_indices(count, 12)
        crops[b, :len(chosen)] = [resize_and_crop(frames[i], 96) for i in chosen]
        mask[b, :len(chosen)] = True
    np.testing.assert_array_equal(mask, z["video_mask"].astype(bool))
    return crops, mask


def test_text_encoder_graph_gives_the_golden_text_vectors(runners, z):
    got = runners["text"].run({"token_ids": z["input_ids"]})["embedding"]
    np.testing.assert_allclose(got, z["text_embed_normed"], rtol=RTOL, atol=ATOL)
    shorter = runners["text"].run({"token_ids": np.ascontiguousarray(z["input_ids"][:, :20])})["embedding"]
    eot_within = z["attention_mask"].sum(axis=1) <= 20  # captions whose EOT survives the cut: same vector
    np.testing.assert_allclose(shorter[eot_within], got[eot_within], atol=1e-6)


@pytest.mark.parametrize("mode, golden", [("official", "video_embed_normed"),
                                          ("real_frames", "alone_video_embed_normed")])
def test_video_graph_gives_the_golden_vectors_padded_and_alone(runners, z, mode, golden):
    crops, mask = golden_crops(z)
    batch = runners[mode].run({"frames": crops, "mask": mask})["embedding"]
    np.testing.assert_allclose(batch, z[golden], rtol=RTOL, atol=ATOL)
    for b, length in enumerate(mask.sum(axis=1)):  # a video alone, unpadded: its vector in the batch
        alone = runners[mode].run({"frames": crops[b:b + 1, :length], "mask": mask[b:b + 1, :length]})["embedding"]
        np.testing.assert_allclose(alone[0], batch[b], atol=1e-6)
    sim = z["text_embed_normed"] @ batch.T
    np.testing.assert_allclose(sim, z["sim" if mode == "official" else "alone_sim"], atol=ATOL)


def test_parity_cases_hold_for_both_graphs_and_modes(student, tmp_path):
    for name, graph_class in ((spec.TEXT_ENCODER.name, TextEncoderGraph), (spec.VIDEO_TEXT_EMBED.name, None)):
        for afa in ("official", "real_frames"):
            graph = graph_class(student) if graph_class else VideoTextEmbedGraph(student, afa)
            path = export_onnx(graph, spec.NETWORKS[name], tmp_path / f"{name}-{afa}.onnx",
                               example=example_feeds(name, student, [4, 2], frames=4))
            assert check_parity(name, student, path, afa=afa) < 1e-5


def test_a_video_longer_than_max_frames_is_cut_by_the_graph(runners, student):
    feeds = example_feeds(spec.VIDEO_TEXT_EMBED.name, student, [14], frames=14, seed=3)
    cut = {"frames": feeds["frames"][:, :12], "mask": feeds["mask"][:, :12]}
    np.testing.assert_allclose(runners["official"].run(feeds)["embedding"], runners["official"].run(cut)["embedding"],
                               atol=1e-6)
    assert list(select_frame_indices(30, 12)) == list(np.linspace(0, 29, 12, dtype=int))


@pytest.fixture(scope="module")
def text_pack(tmp_path_factory, golden_t2v):
    """The bundled pack with the golden student in its `text_video` role, text_max_frames 6."""
    folder = tmp_path_factory.mktemp("pack") / "bundled_text"
    shutil.copytree(BUNDLED_DIR, folder)
    shutil.copy(golden_t2v / "teachclip_student.bin", folder / "teachclip.bin")
    meta = json.loads((folder / "pack.json").read_text())
    meta["files"]["text_video"] = "teachclip.bin"
    meta["text_max_frames"] = 6
    for key in ("text_kind", "text_encoder", "text_training"):  # the bundled offline student's entries
        meta.pop(key, None)
    (folder / "pack.json").write_text(json.dumps(meta))
    return folder


def test_the_student_comes_from_a_pack_role_a_folder_files_or_text_weights(text_pack, golden_t2v, tmp_path):
    from_pack = resolve_weights([str(text_pack)])
    assert from_pack.text_settings() == {"kind": "teachclip", "afa": "official", "max_frames": 6, "image_size": 96,
                                         "embed_dim": 64, "max_words": 32}
    run = tmp_path / "teachclip_run"  # a TeachCLIP output folder: the best / last epoch is taken
    run.mkdir()
    for name in ("pytorch_model.bin.0", "pytorch_model.bin.4", "pytorch_opt.bin.4"):
        shutil.copy(golden_t2v / "teachclip_student.bin", run / name)
    added = resolve_weights(["bundled"], text_weights=run, afa="real_frames")  # in place of the pack's own student
    assert added.files["text_video"] == added.text_weights == run / "pytorch_model.bin.4"
    assert added.text_settings()["afa"] == "real_frames" and added.text_settings()["max_frames"] == 12
    assert added.pack_version.startswith("bundled@") and "+text@" in added.pack_version
    assert spec.FEATURE_EXTRACTOR.name in added.networks and spec.TEXT_ENCODER_MINILM.name not in added.networks
    bare_clip = resolve_weights(["bundled"], text_weights=golden_t2v / "clip_tiny.pt", text_max_frames=8)
    assert bare_clip.text_settings()["max_frames"] == 8  # a bare CLIP: a student with a fresh head
    files = [str(BUNDLED_DIR / name) for name in ("dns_fg_bin_student.pth", "dns_cg_student.pth",
                                                  "dns_selector_cg-fg_bin.pth")]
    listed = resolve_weights([*files, str(golden_t2v / "teachclip_student.bin")])
    assert spec.TEXT_ENCODER.name in listed.networks and "text_video" in listed.files
    assert resolve_weights(["bundled"]).text_settings()["kind"] == "offline_minilm_effnet"  # the pack's own


def test_wrong_text_weights_are_clear_errors(text_pack, golden_t2v, tmp_path):
    with pytest.raises(WeightsError, match="not a text-video student"):
        resolve_weights(["bundled"], text_weights=BUNDLED_DIR / "dns_cg_student.pth")
    files = [str(BUNDLED_DIR / name) for name in ("dns_fg_bin_student.pth", "dns_cg_student.pth",
                                                  "dns_selector_cg-fg_bin.pth")]
    teachclip = golden_t2v / "teachclip_student.bin"
    with pytest.raises(WeightsError, match="already hold a text-video student"):
        resolve_weights([*files, str(teachclip)], text_weights=teachclip)
    with pytest.raises(WeightsError, match="no TeachCLIP / CLIP4Clip checkpoint"):
        resolve_weights(["bundled"], text_weights=tmp_path)
    with pytest.raises(WeightsError, match="afa must be one of"):
        resolve_weights(["bundled"], afa="softmax")
    with pytest.raises(WeightsError, match="text_max_frames"):
        resolve_weights(["bundled"], text_weights=golden_t2v / "teachclip_student.bin", text_max_frames=0)
    garbage = tmp_path / "pytorch_model.bin.1"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        resolve_weights(["bundled"], text_weights=tmp_path)


def test_a_repository_with_the_text_path(text_pack, tmp_path):
    manifest = build_repository(resolve_weights([str(text_pack)]), tmp_path / "repo")
    text = text_settings(manifest)
    assert text == {"kind": "teachclip", "afa": "official", "max_frames": 6, "image_size": 96, "embed_dim": 64,
                    "max_words": 32}
    assert set(spec.TEACHCLIP.networks) <= set(manifest["served"])
    assert {"text_tokenize", "dnsvr_text_embed", "dnsvr_search_text"} <= set(manifest["pipelines"])
    assert all(manifest["models"][name]["max_abs_error"] < 1e-5 for name in spec.TEACHCLIP.networks)
    for relative, content in repository_files(manifest["served"], "bin", text).items():
        assert (tmp_path / "repo" / relative).read_text() == content
    assert (tmp_path / "repo" / "dnsvr_text_embed" / "1").is_dir()
    assert 'key: "clip_size"' in (tmp_path / "repo" / "video_features" / "config.pbtxt").read_text()


def test_a_re_export_keeps_the_student_given_in_place_of_the_packs(golden_t2v, tmp_path, monkeypatch):
    """A repository exported with --text-weights over the bundled pack (whose own student is the offline one) is
    exported again with that TeachCLIP student when a weight file changed (the manifest's `text_weights`)."""
    from dnsvr.export import repository as repository_module

    teachclip = golden_t2v / "teachclip_student.bin"
    manifest = {"format": FORMAT, "source": f"model pack {BUNDLED_DIR}", "text_weights": str(teachclip),
                "text": {"kind": "teachclip", "afa": "real_frames", "max_frames": 5, "image_size": 96,
                         "embed_dim": 64, "max_words": 32},
                "weights": {"coarse": {"path": str(BUNDLED_DIR / "dns_cg_student.pth"), "sha256": "0" * 64}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    exported = []
    monkeypatch.setattr(repository_module, "build_repository", lambda source, *_, **__: exported.append(source))
    assert repository_module.ensure_exported(tmp_path, ["bundled"])
    (source,) = exported
    assert source.text_kind == "teachclip" and source.text_weights == teachclip and source.afa == "real_frames"
    assert source.text_settings()["max_frames"] == 5 and spec.TEXT_ENCODER_MINILM.name not in source.networks
