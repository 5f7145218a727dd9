"""The DnS accuracy / time / storage trade-off, measured on our near-duplicate benchmark.

Methods: the teacher (Chamfer over the pack's region features), the fine students S^f_A and S^f_B, the
coarse student S^c, and DnS at re-rank fractions `FRACTIONS`: S^c scores every pair, the selector scores
every pair and the top `ranking.fraction_count(fraction, N)` targets of each query (ties by id, as
`protocols.rerank_selected`) are re-scored by the pack's fine student (`ranking.merge_fine`).  An "oracle"
selector picks the pairs whose fine and coarse scores differ most (the selector's training target, known
exactly).  A baseline without a selector, the classic cascade (`ranking.cascade_fine`): the top targets by S^c
are re-ordered by the fine student in place (they keep the block of ranks they held, so no fine/coarse score
scales are mixed).  The other fusions (`ranking.fuse`) on the same picks: DnS's selector picks merged by the
in-place cascade, and (packs with a calibration) by the calibrated mix, for the selector and the top-k picks.

Time per query is measured, not modelled: the wall time of the query's retrieval computation against the
indexed database (coarse dot products, selector MLP, fine similarities of the picked pairs; the query's and
the database's indexing are excluded).  Storage per video is the index size in bytes: S^c 4*C, S^f_B 576 B
per frame (9 regions x 64 packed bytes), S^f_A and the teacher 9*512*4 B per frame, the selector 4 B.

Crop views (`run_tradeoff(index_crops=...)`, `dnsvr eval benchmark --index-crops`): every video is also indexed as
a target by the zoomed crops of some grids (`CropLayout`), the pack's networks unchanged: S^c one vector per view,
a target scored by its best view; the teacher and the fine students over every view's regions.  A query keeps its
full frame.

mAP per edit (`Benchmark.evaluate_edits`) is kept for the methods without a fraction and for those at
`EDIT_FRACTION` (context['map_by_edit']); `write_edit_table` writes it.

Entry points: `index_videos` / `score_query` (also used by `dnsvr eval official`), `run_tradeoff`,
`write_table`, `edit_table` / `write_edit_table`, `write_plot`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dnsvr.client.spec import CODE_BYTES, FEATURE_DIMS, REGIONS
from dnsvr.training.data.crop_regions import CropLayout, crop_views
from dnsvr.training.data.segments import SegmentLayout
from dnsvr.training.distill.augment import pad_batch
from dnsvr.training.files import atomic_path, atomic_write_text
from dnsvr.training.networks.codes import pack_codes
from dnsvr.training.networks.similarity import chamfer_similarity
from dnsvr.training.ranking import (
    RerankPolicy,
    ScoreCalibration,
    disagreement,
    fraction_count,
    fuse,
    selector_rows,
)
from torch import Tensor, nn
from tqdm import tqdm

FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
TOPK_METHOD = "S^c top-k re-ordered by S^f_B"
CASCADE_LABEL = "in-place cascade"  # fusion 'cascade': the picked pairs re-ordered among the ranks they held
CALIBRATED_LABEL = "calibrated mix"  # fusion 'calibrated': the pack's fine-to-coarse map, then replaced
DNS_ROWS = {"mix": "DnS (selector)", "cascade": f"DnS (selector), {CASCADE_LABEL}",
            "calibrated": f"DnS (selector), {CALIBRATED_LABEL}"}  # fusion -> the report's DnS rows merged by it
EDIT_FRACTION = 0.05  # the re-rank fraction whose methods get a per-edit mAP column
FLOAT_REGION_BYTES = REGIONS * FEATURE_DIMS * 4
CODE_REGION_BYTES = REGIONS * CODE_BYTES
FINE_VIEWS = ("all", "best")  # what a fine scorer compares of a target indexed with crop views (VideoIndex)
SELECTOR_BYTES = 4
CHUNK = 64  # targets scored per fine-similarity batch
TIMING_REPEATS = 5  # each query is timed this many times; the fastest run counts (least disturbed)


class FineScorer:
    """One fine-grained similarity: `index` a video `[T, R, D]` float32 into what is stored, `score` a stored
    query against stored targets -> `[K]` float32; `bytes_per_frame` of the stored form."""

    name = "fine"
    bytes_per_frame = FLOAT_REGION_BYTES

    def index(self, features: Tensor) -> object:
        raise NotImplementedError

    def _score(self, query: object, targets: Sequence[object]) -> Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def score(self, query: object, targets: Sequence[object]) -> np.ndarray:
        """Stored query vs stored targets -> `[K]` float32 in [-1, 1], `CHUNK` targets per batch."""
        chunks = [
            self._score(query, targets[i : i + CHUNK]).reshape(-1) for i in range(0, len(targets), CHUNK)
        ]
        return torch.cat(chunks).numpy().astype(np.float32) if chunks else np.zeros(0, np.float32)


class ChamferScorer(FineScorer):
    """The teacher of the bundled pack: region then frame Chamfer of the raw region features."""

    name = "chamfer"

    def index(self, features: Tensor) -> Tensor:
        return features

    def _score(self, query: Tensor, targets: Sequence[Tensor]) -> Tensor:
        batch, mask = pad_batch(list(targets))
        return chamfer_similarity(query, batch, target_mask=mask)


class AttentionScorer(FineScorer):
    """S^f_A: attention-weighted region features stored as float32."""

    def __init__(self, network: nn.Module):
        self.network = network.eval()
        self.name = network.get_network_name()

    @torch.inference_mode()
    def index(self, features: Tensor) -> Tensor:
        return self.network.index_video(features)

    def _score(self, query: Tensor, targets: Sequence[Tensor]) -> Tensor:
        batch, mask = pad_batch(list(targets))
        return self.network.calculate_video_similarity(query, batch, None, mask)


class BinaryScorer(FineScorer):
    """S^f_B: ±1 region codes stored packed (`codes.pack_codes`, 64 bytes per region)."""

    bytes_per_frame = CODE_REGION_BYTES

    def __init__(self, network: nn.Module):
        self.network = network.eval()
        self.name = network.get_network_name()

    @torch.inference_mode()
    def index(self, features: Tensor) -> np.ndarray:
        return pack_codes(self.network.index_video(features).numpy())

    def _score(self, query: np.ndarray, targets: Sequence[np.ndarray]) -> Tensor:
        longest = max(t.shape[0] for t in targets)
        batch = np.zeros((len(targets), longest, *targets[0].shape[1:]), np.uint8)
        mask = np.zeros((len(targets), longest), bool)
        for i, codes in enumerate(targets):
            batch[i, : codes.shape[0]] = codes
            mask[i, : codes.shape[0]] = True
        return self.network.similarity_from_codes(query, batch, target_mask=mask)


def fine_scorer(network: nn.Module) -> FineScorer:
    """A fine student -> its scorer (binary codes for S^f_B, float features for S^f_A)."""
    return BinaryScorer(network) if network.fg_type == "bin" else AttentionScorer(network)


@dataclass
class VideoIndex:
    """The indexed database: ids sorted, frame counts `[N]`, S^c vectors `[N, C]`, selector self-similarity
    `[N]`, and one stored list (length N) per fine scorer name: each video as a query sees it (its full frame).

    Indexed with crop views (`index_videos(crops=...)`), each video as a target also holds `coarse_views`
    `[N, V, C]` (S^c of its full frame, then of each zoomed crop, one vector a view) and `fine_targets` (per
    scorer, its stored form of all V views' regions, `[T, 9 * V, ...]`); a query scores a target by its best
    view (S^c) and, by `fine_view`, by region Chamfer over every view's regions ("all") or over the 9 regions
    of the one view S^c ranks best for that query ("best": the fine student's cost of a full frame).  Indexed
    with segment views (`index_videos(segments=...)`), `coarse_views` also holds the S^c vectors of each video's
    frame windows after its crops' (`SegmentLayout`); where one wins, "best" compares the full frame's regions."""

    ids: list[str]
    frames: np.ndarray
    coarse: Tensor
    selector: Tensor
    fine: dict[str, list[object]] = field(default_factory=dict)
    coarse_views: Tensor | None = None
    fine_targets: dict[str, list[object]] | None = None
    fine_view: str = "all"  # with fine_targets: "all" views' regions, or the query's "best" view by S^c

    def __post_init__(self) -> None:
        if self.fine_view not in FINE_VIEWS:
            raise ValueError(f"fine_view must be one of {FINE_VIEWS}, got {self.fine_view!r}")

    def position(self) -> dict[str, int]:
        return {video_id: i for i, video_id in enumerate(self.ids)}

    @property
    def views(self) -> int:
        """S^c views a target is indexed with: 1, or 1 + its crop views + its segment views."""
        return 1 if self.coarse_views is None else int(self.coarse_views.shape[1])

    def coarse_scores(self, query: int, targets: np.ndarray) -> np.ndarray:
        """S^c of row `query` (its full frame) against rows `targets` `[K]` -> `[K]` float32; with crop views,
        each target's best view."""
        if self.coarse_views is None:
            return (self.coarse[targets] @ self.coarse[query]).numpy().astype(np.float32)
        return self.view_scores(query, targets).amax(dim=1).numpy().astype(np.float32)

    def view_scores(self, query: int, targets: np.ndarray) -> Tensor:
        """S^c of row `query` against each view of rows `targets` `[K]` -> `[K, V]` (indexed with crop views)."""
        return self.coarse_views[targets] @ self.coarse[query]

    def stored_targets(self, name: str) -> list[object]:
        """Scorer `name`'s stored form of every video as a target (all its views' regions with crop views)."""
        return (self.fine_targets or self.fine)[name]

    def fine_inputs(self, name: str, query: int, targets: np.ndarray) -> list[object]:
        """Scorer `name`'s stored form of rows `targets` `[K]` as row `query` compares them: every view's
        regions `[T, 9 * V, ...]`, or with `fine_view` "best" the 9 regions of the view whose S^c vector is
        nearest the query's (`[T, 9, ...]`, the full frame's where it wins)."""
        stored = self.stored_targets(name)
        if self.fine_targets is None or self.fine_view == "all":
            return [stored[t] for t in targets]
        best = self.view_scores(query, targets).argmax(dim=1).tolist()  # [K] view indices
        fine_views = stored[0].shape[1] // REGIONS  # 1 + B: a segment view's codes are the full frame's
        return [stored[t][:, REGIONS * view:REGIONS * (view + 1)] if view < fine_views else stored[t][:, :REGIONS]
                for t, view in zip(targets, best, strict=True)]


def embed_windows(coarse: nn.Module, windows: Sequence[np.ndarray]) -> np.ndarray:
    """S^c of each window `[t, 9, D]` float32, one at a time (no padding) -> `[n, C]` float32 unit vectors."""
    return torch.cat([coarse.index_video(torch.from_numpy(np.ascontiguousarray(w, np.float32))) for w in windows]
                     ).numpy()


@torch.inference_mode()
def index_videos(
    features: Mapping[str, np.ndarray] | Sequence[tuple[str, np.ndarray]],
    coarse: nn.Module,
    selector: nn.Module,
    scorers: Sequence[FineScorer],
    progress: bool = True,
    total: int | None = None,
    crops: Mapping[str, np.ndarray] | None = None,
    segments: SegmentLayout | None = None,
) -> VideoIndex:
    """{video_id: `[T, 9, D]` float32} (or an iterable of pairs, read lazily) -> VideoIndex, ids sorted.

    `crops`: {video_id: `[T, 9 * B, D]`} the regions of B zoomed crops of each frame (`CropLayout.crop_regions`):
    every video is then also indexed as a target with crop views (`VideoIndex.coarse_views`, `fine_targets`).
    `segments`: every video is also indexed as a target by the S^c vectors of its frame windows (W of them,
    `SegmentLayout`), views after the crops' in `coarse_views`; their fine codes are the full frame's."""
    items = features.items() if isinstance(features, Mapping) else features
    rows: dict[str, tuple[int, Tensor, Tensor, list[object], Tensor | None, list[object] | None]] = {}
    for video_id, array in tqdm(
        items,
        desc="indexing videos",
        unit="video",
        disable=not progress,
        total=total if total is not None else getattr(features, "__len__", lambda: None)(),
    ):
        x = torch.as_tensor(np.asarray(array, np.float32))
        full_view = coarse.index_video(x)[0]  # [C]: the video as a query, and its first view as a target
        views, targets = None, None
        if crops is not None:
            crop_regions = np.asarray(crops[video_id], np.float32)  # [T, 9 * B, D]
            crop_vectors = coarse.index_video(torch.from_numpy(crop_views(crop_regions)))  # [B, C]
            views = torch.cat([full_view[None], crop_vectors])  # [V, C], V = 1 + B
            regions = np.concatenate([x.numpy(), crop_regions], axis=1)  # [T, 9 * V, D]
            targets = [scorer.index(torch.from_numpy(regions)) for scorer in scorers]
        if segments is not None:
            windows = torch.from_numpy(segments.vectors(x.numpy(), partial(embed_windows, coarse)))  # [W, C]
            views = torch.cat([full_view[None] if views is None else views, windows])  # [V + W, C]
        rows[video_id] = (
            x.shape[0],
            full_view,
            selector.index_video(x)[0, 0],
            [scorer.index(x) for scorer in scorers],
            views,
            targets,
        )
    if not rows:
        raise ValueError("no videos to index")
    ids = sorted(rows)
    return VideoIndex(
        ids=ids,
        frames=np.array([rows[i][0] for i in ids]),
        coarse=torch.stack([rows[i][1] for i in ids]),
        selector=torch.stack([rows[i][2] for i in ids]),
        fine={s.name: [rows[i][3][k] for i in ids] for k, s in enumerate(scorers)},
        coarse_views=None if crops is None and segments is None else torch.stack([rows[i][4] for i in ids]),
        fine_targets=None if crops is None else {s.name: [rows[i][5][k] for i in ids] for k, s in enumerate(scorers)},
    )


@torch.inference_mode()
def score_query(
    index: VideoIndex,
    query: int,
    targets: np.ndarray,
    method: str,
    selector: nn.Module | None = None,
    scorer: FineScorer | None = None,
    fraction: float = 0.0,
    oracle_gap: np.ndarray | None = None,
    fusion: str | None = None,
    calibration: ScoreCalibration | None = None,
) -> tuple[np.ndarray, int]:
    """Scores of database row `query` against rows `targets` `[K]` -> (`[K]` float32, fine-similarity calls).

    method: 'coarse' (S^c dot products), 'fine' (`scorer` on every target), 'dns' (S^c, then the top
    `fraction_count(fraction, K)` targets by selector score, or by `oracle_gap` `[K]` when given, re-scored by
    `scorer`) or 'topk' (the top targets by S^c re-scored by `scorer`).  `fusion` (`ranking.fuse`; default
    'mix' for dns, 'cascade' for topk) merges the fine similarities, 'calibrated' with `calibration`.
    Targets are in id order, so ties fall to the smaller id.
    """
    if method == "fine":
        stored = index.fine_inputs(scorer.name, query, targets)
        return scorer.score(index.fine[scorer.name][query], stored), len(targets)
    coarse = index.coarse_scores(query, targets)
    if method == "coarse":
        return coarse, 0
    if method not in ("dns", "topk"):
        raise ValueError(f"method must be coarse, fine, dns or topk, got {method!r}")
    policy = RerankPolicy("fraction", fraction)
    if fraction_count(fraction, len(targets)) == 0:
        return coarse, 0
    if method == "topk":
        priority = coarse
    elif oracle_gap is None:
        priority = selector(selector_rows(index.selector[query], index.selector[targets], coarse))[:, 0].numpy()
    else:
        priority = oracle_gap
    picked = policy.choose(priority)
    fine = scorer.score(index.fine[scorer.name][query], index.fine_inputs(scorer.name, query, targets[picked]))
    fusion = fusion or ("cascade" if method == "topk" else "mix")
    return fuse(fusion, coarse, picked, fine, calibration), len(picked)


@dataclass
class TradeoffRow:
    """One line of the table: mAP overall and on `hard` copies, measured ms per query, fine-similarity
    calls per query, index bytes per video."""

    method: str
    fraction: float | None
    map_overall: float
    map_hard: float
    ms_per_query: float
    fine_calls_per_query: float
    bytes_per_video: float


def extract_features(
    benchmark, extractor: nn.Module, cache: Path | None, progress: bool = True
) -> dict[str, np.ndarray]:
    """Every benchmark video -> `[T, 9, 512]` float32 via `extractor`, cached in the HDF5 file `cache`."""
    from dnsvr.training.data.features_io import list_ids, read_features, write_features

    if cache is not None and cache.is_file() and set(list_ids(cache)) == set(benchmark.videos):
        return read_features(cache)
    with torch.inference_mode():
        features = {
            vid: extractor(frames).numpy() for vid, frames in benchmark.iter_frames(progress=progress)
        }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_features(cache, features, append=False)
    return features


def benchmark_features(benchmark, pack, cache_root: Path, progress: bool = True) -> dict[str, np.ndarray]:
    """Every benchmark video's features with `pack`'s extractor, cached per (benchmark, extractor version: packs
    with the same extractor share them) under `cache_root` -> {video_id: `[T, 9, 512]` float32}."""
    cache = cache_root / f"tradeoff-{_benchmark_key(benchmark, pack)}.h5"
    return extract_features(benchmark, pack.load_extractor(), cache, progress)


def _benchmark_key(benchmark, pack) -> str:
    """What a benchmark's cached features depend on: its videos (ground truth) and the pack's extractor."""
    return hashlib.sha256(
        json.dumps([benchmark.ground_truth(), pack.extractor_version], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


def benchmark_crop_features(benchmark, pack, layout: CropLayout, cache_root: Path,
                            progress: bool = True) -> dict[str, np.ndarray]:
    """Every benchmark video's zoomed crops of `layout` through `pack`'s extractor, cached like
    `benchmark_features` (an .npz: the features files hold 9 regions a frame) -> {video_id: `[T, 9 * B, 512]`}
    float32, crop after crop (`CropLayout.crop_regions`)."""
    cache = cache_root / f"crops-{_benchmark_key(benchmark, pack)}-c{layout.crop:g}-s{layout.stride:g}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if set(stored.files) == set(benchmark.videos):
                return {video_id: stored[video_id] for video_id in stored.files}
    extractor = pack.load_extractor()
    features = {video_id: layout.crop_regions(frames, extractor)
                for video_id, frames in tqdm(benchmark.iter_frames(progress=False), total=len(benchmark.videos),
                                             desc=f"crop features {layout.crop:g}:{layout.stride:g}",
                                             unit="video", disable=not progress)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as partial, open(partial, "wb") as handle:
        np.savez(handle, **features)
    return features


def _timed_retrieval(
    benchmark, index: VideoIndex, method: str, progress: bool, **kwargs
) -> tuple[dict[str, dict[str, float]], float, float]:
    """Run `score_query` for every benchmark query (fastest of `TIMING_REPEATS` timed runs, after one untimed
    warm-up) -> (similarities, mean ms per query, fine calls per query)."""
    position = index.position()
    similarities, seconds, calls = {}, 0.0, 0
    gaps = kwargs.pop("oracle_gaps", None)
    first = position[benchmark.queries[0]]
    warm_targets = np.array([i for i in range(len(index.ids)) if i != first][:CHUNK])
    score_query(
        index,
        first,
        warm_targets,
        method,
        kwargs.get("selector"),
        kwargs.get("scorer"),
        1.0,
        None if gaps is None else gaps[benchmark.queries[0]][:CHUNK],
    )  # untimed warm-up
    for query in tqdm(
        benchmark.queries, desc=kwargs.get("label", method), unit="query", disable=not progress
    ):
        q = position[query]
        targets = np.array([i for i in range(len(index.ids)) if i != q])
        runs = []
        for _ in range(TIMING_REPEATS):
            start = time.perf_counter()
            scores, fine_calls = score_query(
                index,
                q,
                targets,
                method,
                kwargs.get("selector"),
                kwargs.get("scorer"),
                kwargs.get("fraction", 0.0),
                None if gaps is None else gaps[query],
                kwargs.get("fusion"),
                kwargs.get("calibration"),
            )
            runs.append(time.perf_counter() - start)
        seconds += min(runs)
        calls += fine_calls
        similarities[query] = {index.ids[t]: float(s) for t, s in zip(targets, scores, strict=True)}
    n = len(benchmark.queries)
    return similarities, 1000.0 * seconds / n, calls / n


def benchmark_with_features(preset: str = "small", seed: int = 0, pack_dir: str | Path | None = None,
                            cache_dir: str | Path | None = None, progress: bool = True,
                            **config_overrides: object) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """The pack of `pack_dir` (None: the bundled one), the near-duplicate benchmark
    (`BenchmarkConfig.preset(preset, seed=seed, **config_overrides)`) and its features with the pack's extractor
    (`benchmark_features`), rendered frames and features cached under `cache_dir` (None: the benchmark's default
    cache) -> (pack, benchmark, {video_id: `[T, 9, 512]` float32})."""
    from dnsvr.training.evaluation.nd_benchmark import BenchmarkConfig, build_benchmark
    from dnsvr.training.packs.model_pack import ModelPack

    pack = ModelPack.from_dir(pack_dir) if pack_dir is not None else ModelPack.bundled()
    if cache_dir is not None:
        config_overrides["cache_dir"] = Path(cache_dir)
    benchmark = build_benchmark(BenchmarkConfig.preset(preset, seed=seed, **config_overrides), progress=progress)
    return pack, benchmark, benchmark_features(benchmark, pack, _cache_root(cache_dir), progress)


def _cache_root(cache_dir: str | Path | None) -> Path:
    """Where the benchmark's features are cached: `cache_dir`, or the benchmark's default cache."""
    from dnsvr.training.evaluation.nd_benchmark import default_cache_dir

    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def run_tradeoff(
    preset: str = "small",
    seed: int = 0,
    pack_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    index_crops: Sequence[CropLayout] = (),
    **config_overrides: object,
) -> tuple[list[TradeoffRow], dict]:
    """Build the benchmark (`BenchmarkConfig.preset(preset, seed=seed, **config_overrides)`), extract its
    features (cached), index with the pack, run every method.  `index_crops`: crop grids every video is also
    indexed with as a target (crop views, `index_videos(crops=...)`; teacher, students and DnS all see them).

    -> (rows, context) with context = {'preset', 'seed', 'pack', 'videos', 'queries', 'mean_frames',
    'coarse_dims', 'torch_threads', 'map_by_edit': {method label: {edit: {'mAP', 'queries', 'positives'}}}}.
    The pack needs `fine_att` (S^f_A) for the S^f_A line; without it that
    line is left out.
    """
    from dnsvr.training.networks.checkpoints import load_checkpoint

    pack, benchmark, features = benchmark_with_features(preset, seed, pack_dir, cache_dir, progress,
                                                        **config_overrides)

    fine = pack.load("fine")
    coarse, selector = pack.load("coarse"), pack.load("selector").eval()
    teacher = ChamferScorer()
    student_b = fine_scorer(fine)
    scorers: list[FineScorer] = [teacher, student_b]
    student_a = None
    if "fine_att" in pack.files:
        student_a = fine_scorer(load_checkpoint(pack.path("fine_att"), kind="fg_att_student"))
        scorers.append(student_a)
    crops = None
    if index_crops:
        grids = [benchmark_crop_features(benchmark, pack, layout, _cache_root(cache_dir), progress)
                 for layout in index_crops]
        crops = {video_id: np.concatenate([grid[video_id] for grid in grids], axis=1) for video_id in features}
    index = index_videos(features, coarse, selector, scorers, progress=progress, crops=crops)

    mean_frames = float(index.frames.mean())
    stored_frames = mean_frames * index.views  # frames of 9 regions stored per video: every view's
    coarse_bytes = 4 * index.coarse.shape[1] * index.views
    rows: list[TradeoffRow] = []
    map_by_edit: dict[str, dict[str, dict[str, float]]] = {}

    def add(name: str, fraction: float | None, sims: dict, ms: float, calls: float, size: float) -> None:
        result = benchmark.evaluate(sims)
        if fraction is None or fraction == EDIT_FRACTION:
            map_by_edit[name if fraction is None else f"{name} {fraction:g}"] = benchmark.evaluate_edits(sims)
        rows.append(
            TradeoffRow(
                name,
                fraction,
                result["overall"]["mAP"],
                result.get("hard", {}).get("mAP", np.nan),
                ms,
                calls,
                size,
            )
        )

    fine_sims: dict[str, dict[str, float]] = {}
    for label, scorer in (("Teacher (Chamfer)", teacher), ("S^f_A", student_a), ("S^f_B", student_b)):
        if scorer is None:
            continue
        sims, ms, calls = _timed_retrieval(benchmark, index, "fine", progress, scorer=scorer, label=label)
        add(label, None, sims, ms, calls, scorer.bytes_per_frame * stored_frames)
        if scorer is student_b:
            fine_sims = sims
    sims, ms, calls = _timed_retrieval(benchmark, index, "coarse", progress, label="S^c")
    add("S^c", None, sims, ms, calls, coarse_bytes)
    coarse_sims = sims

    def sweep(name: str, method: str, fractions: Sequence[float], size: float, label: str, **kwargs) -> None:
        for fraction in fractions:
            sims, ms, calls = _timed_retrieval(
                benchmark, index, method, progress, scorer=student_b, fraction=fraction,
                label=f"{label} {fraction:g}", **kwargs
            )
            add(name, fraction, sims, ms, calls, size)

    dns_bytes = coarse_bytes + student_b.bytes_per_frame * stored_frames + SELECTOR_BYTES
    sweep(DNS_ROWS["mix"], "dns", FRACTIONS, dns_bytes, "DnS", selector=selector)
    sweep(DNS_ROWS["cascade"], "dns", FRACTIONS[1:-1], dns_bytes, "DnS cascade",
          selector=selector, fusion="cascade")
    calibration = pack.calibration
    if calibration is not None:
        sweep(DNS_ROWS["calibrated"], "dns", FRACTIONS[1:-1], dns_bytes, "DnS calibrated",
              selector=selector, fusion="calibrated", calibration=calibration)
    position = index.position()
    gaps = {}
    for query in benchmark.queries:
        others = [index.ids[i] for i in range(len(index.ids)) if i != position[query]]
        gaps[query] = np.array(
            [
                disagreement(fine_sims[query][t], coarse_sims[query][t])
                for t in others
            ]
        )
    sweep("DnS (oracle selector)", "dns", FRACTIONS[1:-1], dns_bytes, "oracle", oracle_gaps=gaps)
    sweep(TOPK_METHOD, "topk", FRACTIONS[1:-1], dns_bytes - SELECTOR_BYTES, "top-k")
    if calibration is not None:
        sweep(f"S^c top-k, {CALIBRATED_LABEL}", "topk", FRACTIONS[1:-1], dns_bytes - SELECTOR_BYTES,
              "top-k calibrated", fusion="calibrated", calibration=calibration)

    context = {
        "preset": preset,
        "seed": seed,
        "pack": pack.version,
        "default_fusion": pack.default_fusion,
        "videos": len(index.ids),
        "queries": len(benchmark.queries),
        "mean_frames": mean_frames,
        "coarse_dims": int(index.coarse.shape[1]),
        "index_crops": [f"{layout.crop:g}:{layout.stride:g}" for layout in index_crops],
        "views": index.views,
        "torch_threads": torch.get_num_threads(),
        "map_by_edit": map_by_edit,
    }
    return rows, context


def summary(rows: Sequence[TradeoffRow]) -> list[str]:
    """Markdown bullet lines checking the paper's claims on these rows: do the fine students beat S^c, and
    how much of S^f_B's mAP do DnS and the top-k cascade keep at re-rank fractions <= 0.1, at what share of
    its time."""
    by_name = {r.method: r for r in rows if r.fraction is None}
    dns = [
        r for r in rows if r.method == "DnS (selector)" and r.fraction is not None and 0 < r.fraction <= 0.1
    ]
    if "S^f_B" not in by_name or "S^c" not in by_name or not dns:
        return []
    fine, coarse = by_name["S^f_B"], by_name["S^c"]
    lines = ["## Summary (computed from the table)", ""]
    for name in ("S^f_A", "S^f_B"):
        if name in by_name:
            verdict = "beats" if by_name[name].map_overall > coarse.map_overall else "does NOT beat"
            lines.append(
                f"- {name} ({by_name[name].map_overall:.4f} mAP) {verdict} S^c ({coarse.map_overall:.4f})."
            )
    topk = [r for r in rows if r.method == TOPK_METHOD and r.fraction is not None and r.fraction <= 0.1]
    for label, group in (("DnS", dns), ("S^c top-k", topk)):
        for row in group:
            lines.append(
                f"- {label} at {row.fraction:g}: {row.map_overall / fine.map_overall:.1%} of S^f_B's mAP, "
                f"{row.ms_per_query / fine.ms_per_query:.1%} of its time per query "
                f"({row.map_overall - coarse.map_overall:+.4f} mAP vs S^c)."
            )
    return lines


def write_table(rows: Sequence[TradeoffRow], context: Mapping, path: str | Path) -> Path:
    """Markdown table of `rows` (with the run's context) -> `path`, written atomically."""
    path = Path(path)
    lines = [
        "# DnS trade-off on the near-duplicate benchmark",
        "",
        f"Benchmark preset `{context['preset']}` (seed {context['seed']}): {context['videos']} videos, "
        f"{context['queries']} queries, {context['mean_frames']:.1f} frames per video on average (1 fps). "
        f"Pack `{context['pack']}`, whose default fusion is `{context['default_fusion']}`: the served search is "
        f"the `{DNS_ROWS[context['default_fusion']]}` rows. Generated by `dnsvr eval benchmark`.",
        "",
        f"Time per query: measured wall time (fastest of {TIMING_REPEATS} runs, mean over queries) of one "
        f"query's retrieval against the indexed database on CPU "
        f"({context['torch_threads']} torch threads): coarse dot products + selector + fine similarity of "
        "the picked pairs; indexing excluded. Storage per video: S^c "
        f"{4 * context['coarse_dims']} B, S^f_B 576 B/frame, S^f_A and teacher 18432 B/frame, selector 4 B. "
        "The oracle selector re-ranks the pairs whose fine and coarse scores differ most, the selector's "
        "training target known exactly (it needs the fine score of every pair: a reference, not a method). "
        f"`{TOPK_METHOD}`: no selector; the top fraction by S^c re-ordered by S^f_B within the ranks it held.",
        "",
        *_views_note(context),
        "| method | re-rank fraction | mAP | mAP (hard) | ms / query | fine calls / query | bytes / video |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        fraction = "—" if row.fraction is None else f"{row.fraction:g}"
        lines.append(
            f"| {row.method} | {fraction} | {row.map_overall:.4f} | {row.map_hard:.4f} | "
            f"{row.ms_per_query:.2f} | {row.fine_calls_per_query:.1f} | {row.bytes_per_video:,.0f} |"
        )
    lines += ["", *summary(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _views_note(context: Mapping) -> list[str]:
    """The report's paragraph on crop views (`index_crops`), or nothing for a plain index."""
    if not context.get("index_crops"):
        return []
    return [f"Indexed with crop views (`--index-crops {' '.join(context['index_crops'])}`): every video is also "
            f"stored as a target by the zoomed crops of those grids, {context['views']} views in all (its full frame "
            "first). S^c scores a target by its best view (one vector a view); the teacher and the fine students "
            "by region Chamfer over all its views' regions (9 a view and frame). A query keeps its full frame. "
            f"Storage counts every view.", ""]


def edit_table(by_method: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
    """Markdown lines of a table of mAP per edit (rows, sorted) and method (columns) from {method:
    `Benchmark.evaluate_edits` result}; "—" where a method has no copy with that edit."""
    methods = list(by_method)
    edits = sorted({edit for results in by_method.values() for edit in results})
    lines = ["| edit | positives | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for edit in edits:
        positives = next(r[edit]["positives"] for r in by_method.values() if edit in r)
        cells = [f"{by_method[m][edit]['mAP']:.4f}" if edit in by_method[m] else "—" for m in methods]
        lines.append(f"| {edit} | {positives} | " + " | ".join(cells) + " |")
    return lines


def difficulty_columns() -> tuple[str, str]:
    """The mAP columns of a table by difficulty: (header cells "mAP | mAP easy | ...", the separator's cells)."""
    from dnsvr.training.evaluation.nd_benchmark import DIFFICULTIES

    return "mAP | " + " | ".join(f"mAP {d}" for d in DIFFICULTIES), "---|" * (1 + len(DIFFICULTIES))


def difficulty_cells(result: Mapping[str, Mapping[str, float]]) -> str:
    """`Benchmark.evaluate`'s result -> the cells of `difficulty_columns`: overall mAP, then each difficulty's
    ("-" where no query has copies of it)."""
    from dnsvr.training.evaluation.nd_benchmark import DIFFICULTIES

    return " | ".join([f"{result['overall']['mAP']:.4f}",
                       *(f"{result[d]['mAP']:.4f}" if d in result else "-" for d in DIFFICULTIES)])


def finish_report(lines: list[str], by_edit: Mapping[str, Mapping[str, Mapping[str, float]]],
                  out: Path | None) -> None:
    """Append the mAP-per-edit table (`edit_table`) to a benchmark's report `lines`, print it, and write it to
    `out` when given."""
    text = "\n".join([*lines, "", "mAP per edit (copies carrying it):", "", *edit_table(by_edit)])
    print(text)
    if out:
        out.write_text(text + "\n")


def write_edit_table(context: Mapping, path: str | Path) -> Path:
    """Markdown table of mAP per edit (rows) and method (columns) from `context['map_by_edit']` -> `path`,
    written atomically."""
    lines = [
        "# mAP per edit on the near-duplicate benchmark",
        "",
        f"Benchmark preset `{context['preset']}` (seed {context['seed']}), pack `{context['pack']}`. For each edit, "
        "the queries' rankings where only the copies carrying that edit count as positives and the query's other "
        f"positives are left out (`Benchmark.evaluate_edits`). DnS and top-k at re-rank fraction {EDIT_FRACTION:g}. "
        "Generated by `dnsvr eval benchmark`.",
        "",
        *edit_table(context["map_by_edit"]),
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_plot(rows: Sequence[TradeoffRow], path: str | Path) -> Path:
    """Two panels, mAP vs ms/query and mAP vs bytes/video (log x) -> PNG at `path`.

    Raises ImportError with an install hint when matplotlib (the `plot` extra) is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the trade-off plot needs matplotlib: pip install 'dnsvr[plot]'") from exc
    path = Path(path)
    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    for axis, attribute, label in (
        (axes[0], "ms_per_query", "time per query (ms, measured)"),
        (axes[1], "bytes_per_video", "storage per video (bytes)"),
    ):
        for method in dict.fromkeys(r.method for r in rows):
            group = [r for r in rows if r.method == method]
            xs = [getattr(r, attribute) for r in group]
            ys = [r.map_overall for r in group]
            axis.plot(xs, ys, marker="o", linestyle="-" if len(group) > 1 else "none", label=method)
            for r, x, y in zip(group, xs, ys, strict=True):
                if r.fraction is not None and attribute == "ms_per_query" and method == "DnS (selector)":
                    axis.annotate(
                        f"{r.fraction:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7
                    )
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("mAP")
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    with atomic_path(path, suffix=".png") as partial:
        figure.savefig(partial, dpi=120)
    plt.close(figure)
    return path
