"""`dnsvr features`: real videos in, an HDF5 features file out; bad files reported with a non-zero exit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from dnsvr.serving.cli.main import main
from dnsvr.training.data.features_io import list_ids, read_features
from dnsvr.training.networks.resnet50 import ResNet50


def test_valid_videos_written_and_corrupt_one_reported(
    tmp_path: Path, videos_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes((videos_dir / "pattern-hd-no-bar.mp4").read_bytes()[:3000])
    out = tmp_path / "features.h5"
    videos = [videos_dir / "doorknob-hd-no-bar.mp4", videos_dir / "pattern-sd-grey-bar.mp4"]
    code = main(["features", *map(str, videos), str(corrupt), "--out", str(out), "--batch-size", "4"])
    assert code == 1
    output = capsys.readouterr()
    assert "broken.mp4: the video stream has no decodable frame" in output.err
    assert "wrote 2 video(s)" in output.out and "1 failed" in output.out
    stored = read_features(out)
    assert sorted(stored) == ["doorknob-hd-no-bar", "pattern-sd-grey-bar"]
    assert stored["doorknob-hd-no-bar"].shape == (4, 9, 512)
    assert stored["pattern-sd-grey-bar"].shape == (7, 9, 512)
    np.testing.assert_allclose(np.linalg.norm(stored["pattern-sd-grey-bar"], axis=-1), 1.0, atol=1e-5)

    assert main(["features", *map(str, videos), "--out", str(out)]) == 0
    assert "skipped 2 already stored" in capsys.readouterr().out


def test_folders_ids_and_argument_errors(
    tmp_path: Path, videos_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    for folder in ("a", "b/c"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        shutil.copy(videos_dir / "doorknob-hd-no-bar.mp4", tmp_path / "in" / folder / "clip.MP4")
    (tmp_path / "in" / "readme.txt").write_text("not a video")
    out = tmp_path / "features.h5"
    assert main(["features", str(tmp_path / "in"), "--out", str(out)]) == 2
    assert "two videos get the id 'clip'" in capsys.readouterr().err
    by_path = ["features", str(tmp_path / "in"), "--id-from", "path", "--out", str(out)]
    assert main([*by_path, "--max-frames", "2"]) == 0
    assert list_ids(out) == ["a/clip", "b/c/clip"]
    assert main(["features", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert main([*by_path, "--extractor", "resnet50"]) == 2
    assert "--resnet-weights" in capsys.readouterr().err


def test_resnet50_extractor_with_whitening(tmp_path: Path, videos_dir: Path) -> None:
    """The paper's extractor: a torchvision-format ResNet50 state_dict plus an official-format PCA file."""
    weights, pca = tmp_path / "resnet50.pth", tmp_path / "pca.pth"
    torch.manual_seed(0)
    torch.save(ResNet50().state_dict(), weights)
    torch.save({"mean": torch.zeros(3840), "d": torch.rand(3840) + 0.1, "V": torch.eye(3840)}, pca)
    out = tmp_path / "features.h5"
    video = videos_dir / "test-padded-dimensions.mp4"
    argv = ["features", str(video), "--resnet-weights", str(weights), "--pca", str(pca), "--max-frames", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    assert read_features(out)["test-padded-dimensions"].shape == (2, 9, 512)
