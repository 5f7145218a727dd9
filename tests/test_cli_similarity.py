"""`dnsvr similarity` and the model-pack format, on a pack made of the golden checkpoints.

The golden checkpoints have random weights, so these tests check the mechanics (the scores equal the networks'
own outputs, videos and stored features agree, errors are clear), not retrieval quality.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from dnsvr.serving.cli.main import main
from dnsvr.training.data.features_io import write_features
from dnsvr.training.packs.model_pack import ModelPack, ModelPackError

GOLDEN_FILES = {"fine": "fg_bin_student.pth", "coarse": "cg_student.pth", "selector": "selector.pth"}


@pytest.fixture(scope="module")
def golden_pack(golden_dir: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pack")
    for name in GOLDEN_FILES.values():
        shutil.copy(golden_dir / name, root / name)
    manifest = {"name": "golden-random", "extractor": "efficientnet_lite0", "fine": "bin",
                "teacher": "none (random weights)", "files": GOLDEN_FILES}
    (root / "pack.json").write_text(json.dumps(manifest))
    return root


def test_pack_loads_its_networks(golden_pack: Path):
    pack = ModelPack.from_dir(golden_pack)
    assert pack.version.startswith("golden-random@") and pack.version == ModelPack.from_dir(golden_pack).version
    assert pack.load("fine").binarization is not None
    assert type(pack.load("coarse")).__name__ == "CoarseGrainedStudent"
    assert type(pack.load("selector")).__name__ == "SelectorNetwork"


def test_pack_errors(golden_pack: Path, tmp_path: Path):
    with pytest.raises(ModelPackError, match="does not exist"):
        ModelPack.from_dir(tmp_path / "nowhere")
    with pytest.raises(ModelPackError, match="no pack.json"):
        ModelPack.from_dir(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(golden_pack, broken)
    (broken / "selector.pth").unlink()
    with pytest.raises(ModelPackError, match="selector file selector.pth is missing"):
        ModelPack.from_dir(broken)
    (broken / "pack.json").write_text("{not json")
    with pytest.raises(ModelPackError, match="not a valid pack manifest"):
        ModelPack.from_dir(broken)


def test_official_folder_is_recognised(golden_dir: Path, tmp_path: Path):
    for official, golden in [("dns_fg_att_student.pth", "fg_att_student.pth"), ("dns_cg_student.pth",
                             "cg_student.pth"), ("dns_selector_cg-fg_att.pth", "selector.pth"),
                             ("pca_resnet50_vcdb_1M.pth", "selector.pth"), ("resnet50-0676ba61.pth",
                             "selector.pth")]:
        shutil.copy(golden_dir / golden, tmp_path / official)
    pack = ModelPack.from_dir(tmp_path)
    assert (pack.extractor, pack.fine, pack.files["backbone"]) == ("resnet50", "att", "resnet50-0676ba61.pth")
    assert pack.load("fine").attention is not None


def test_similarity_of_stored_features_matches_the_networks(golden_pack, efficientnet_features, tmp_path, capsys):
    features = {name: efficientnet_features[name].numpy() for name in ("pattern-hd-no-bar", "doorknob-hd-no-bar")}
    h5 = tmp_path / "features.h5"
    write_features(h5, features)
    argv = ["similarity", f"{h5}:pattern-hd-no-bar", f"{h5}:doorknob-hd-no-bar", "--pack", str(golden_pack),
            "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)

    pack = ModelPack.from_dir(golden_pack)
    a, b = (torch.from_numpy(f) for f in features.values())
    with torch.inference_mode():
        coarse_net, fine_net = pack.load("coarse"), pack.load("fine")
        coarse = float(coarse_net.index_video(a) @ coarse_net.index_video(b).T)
        fine = float(fine_net.calculate_video_similarity(fine_net.index_video(a), fine_net.index_video(b)))
    np.testing.assert_allclose([out["coarse"], out["fine"]], [coarse, fine], rtol=1e-5, atol=1e-6)
    assert out["fine_01"] == pytest.approx(fine / 2 + 0.5)
    assert 0.0 <= out["selector"] <= 1.0
    assert out["pack"] == pack.version


def test_similarity_of_videos_prints_a_table(golden_pack, videos_dir, capsys):
    video = str(videos_dir / "test-padded-dimensions.mp4")
    assert main(["similarity", video, video, "--pack", str(golden_pack), "--max-frames", "5"]) == 0
    out = capsys.readouterr().out
    for label in ("coarse", "fine", "selector", "frames"):
        assert label in out
    assert "+1.0000" in out.splitlines()[2]


def test_similarity_errors_are_clear(golden_pack, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    assert main(["similarity", str(bad), str(bad), "--pack", str(golden_pack)]) == 2
    assert "bad.mp4" in capsys.readouterr().err
    h5 = tmp_path / "two.h5"
    write_features(h5, {"x": np.ones((4, 9, 512), np.float32), "y": np.ones((4, 9, 512), np.float32)})
    assert main(["similarity", str(h5), f"{h5}:x", "--pack", str(golden_pack)]) == 2
    assert "holds 2 videos" in capsys.readouterr().err
    assert main(["similarity", f"{h5}:x", f"{h5}:zzz", "--pack", str(golden_pack)]) == 2
    assert "zzz" in capsys.readouterr().err
    assert main(["similarity", f"{h5}:x", f"{h5}:y", "--pack", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
