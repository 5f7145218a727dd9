"""The bundled model pack (training/packs/bundled, made by `dnsvr train pack`) and the `dnsvr train` CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO
from dnsvr.serving.cli.main import main
from dnsvr.training.data.crop_regions import CropLayout
from dnsvr.training.distill.fusion_choice import INDEX_VIEWS_FUSION
from dnsvr.training.packs.model_pack import ModelPack

BUNDLED = REPO / "training" / "packs" / "bundled"
needs_bundled = pytest.mark.skipif(not (BUNDLED / "pack.json").is_file(),
                                   reason="no bundled pack in this checkout (made by `dnsvr train pack`)")
PATTERN = ("pattern-longer-no-bar", "pattern-sd-grey-bar", "pattern-sd-with-large-logo-bar",
           "pattern-sd-with-small-logo-bar")
DISTRACTORS = ("doorknob-hd-no-bar", "test-padded-dimensions")


@needs_bundled
def test_bundled_pack_describes_itself_and_its_networks_load():
    pack = ModelPack.bundled()
    assert pack.extractor == "efficientnet_lite0" and pack.fine == "bin"
    assert pack.teacher.startswith("chamfer/efficientnet_lite0")
    assert {"corpus", "seed", "training"} <= set(pack.info)
    for role in pack.files:
        assert pack.path(role).stat().st_size < 10_000_000, f"{role} file too big to commit"
    assert pack.load("fine").fg_type == "bin"
    assert pack.load("coarse").get_network_name() == "cg_student"
    assert pack.load("selector").get_network_name() == "selector_network"
    calibration = pack.calibration  # fine similarities onto the coarse scale: rising, within [0, 1]
    assert calibration is not None and np.all(np.diff(calibration.coarse) >= 0)
    assert 0.0 <= calibration.coarse[0] and calibration.coarse[-1] <= 1.0
    choice = pack.info["fusion_choice"]  # the default fusion, chosen by its teacher on its corpus (train fusion)
    assert choice["measured_choice"] == max(choice["mean"], key=choice["mean"].get)
    assert pack.index_views == CropLayout(0.5, 0.25)  # indexed by crop views: the cascade (INDEX_VIEWS_RULE)
    assert pack.default_fusion == choice["fusion"] == INDEX_VIEWS_FUSION


@needs_bundled
@pytest.mark.parametrize("role", ["fine", "fine_att"])
def test_bundled_fine_students_rank_the_pattern_copies_above_the_distractors(role, efficientnet_features):
    pack = ModelPack.bundled()
    if role not in pack.files:
        pytest.skip(f"the bundled pack has no {role} student")
    student = pack.load(role) if role == "fine" else _load(pack.path(role))
    with torch.inference_mode():
        query = student.index_video(efficientnet_features["pattern-hd-no-bar"])
        scores = {name: float(student.calculate_video_similarity(
            query, student.index_video(efficientnet_features[name]))) for name in PATTERN + DISTRACTORS}
    assert min(scores[n] for n in PATTERN) > max(scores[n] for n in DISTRACTORS), scores


@needs_bundled
def test_packs_sharing_an_extractor_share_its_version_whatever_their_students(tmp_path):
    import shutil

    pack = ModelPack.bundled()
    copy = shutil.copytree(pack.root, tmp_path / "other")
    (copy / pack.files["fine"]).write_bytes((copy / pack.files["fine"]).read_bytes() + b"\0")  # other students
    other = ModelPack.from_dir(copy)
    assert other.version != pack.version and other.extractor_version == pack.extractor_version
    meta = json.loads((copy / "pack.json").read_text())
    (copy / "pack.json").write_text(json.dumps({**meta, "taps": [7]}))  # other features
    assert ModelPack.from_dir(copy).extractor_version != pack.extractor_version


@needs_bundled
def test_bundled_coarse_student_and_selector_work_on_real_videos(efficientnet_features):
    pack = ModelPack.bundled()
    coarse, selector = pack.load("coarse"), pack.load("selector")
    names = ("pattern-hd-no-bar",) + PATTERN + DISTRACTORS
    with torch.inference_mode():
        vectors = torch.cat([coarse.index_video(efficientnet_features[n]) for n in names])
        sims = coarse.calculate_video_similarity(vectors[:1], vectors)[0]
        self_sims = torch.cat([selector.index_video(efficientnet_features[n]) for n in names])
        rows = torch.stack([self_sims[0, 0].expand(len(names)), self_sims[:, 0], sims], dim=1)
        probabilities = selector(rows)[:, 0]
    pattern_mean = float(sims[1:1 + len(PATTERN)].mean())
    assert pattern_mean > float(sims[-len(DISTRACTORS):].max()), sims
    assert bool(((probabilities >= 0) & (probabilities <= 1)).all())


def _load(path):
    from dnsvr.training.networks.checkpoints import load_checkpoint

    return load_checkpoint(path)


def test_train_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for stage in ("features", "pairs", "student", "selector", "calibrate", "fusion", "pack"):
        assert stage in text


def test_train_stages_report_bad_input_clearly(tmp_path, capsys):
    code = main(["train", "student", "--kind", "cg", "--features", str(tmp_path / "missing.h5"),
                 "--pairs", str(tmp_path / "missing.json"), "--out-dir", str(tmp_path), "--quiet"])
    assert code == 2
    assert "missing.json: no such pairs file" in capsys.readouterr().err
    code = main(["train", "pairs", "--features", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "p.json"),
                 "--teacher", "visil", "--quiet"])
    assert code == 2 and "needs a checkpoint" in capsys.readouterr().err
    code = main(["train", "calibrate", "--pack", str(tmp_path), "--features", str(tmp_path / "missing.h5"),
                 "--pairs", str(tmp_path / "missing.json"), "--quiet"])
    assert code == 2 and "no pack.json" in capsys.readouterr().err


def test_train_pairs_command_writes_a_pairs_file(tmp_path):
    from dnsvr.training.data.features_io import write_features

    rng = np.random.default_rng(0)
    videos = {f"v{i}": rng.random((4, 9, 16), dtype=np.float32) for i in range(5)}
    write_features(tmp_path / "f.h5", videos, dims=None)
    out = tmp_path / "pairs.json"
    assert main(["train", "pairs", "--features", str(tmp_path / "f.h5"), "--out", str(out), "--positives", "2",
                 "--negatives", "2", "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert data["index"] == [f"v{i}" for i in range(5)] and len(data["pairs"]) == 5
