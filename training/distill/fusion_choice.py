"""The pack's default re-rank fusion, chosen by the teacher that taught it on the pack's own unlabelled corpus.

Which rule merges the re-ranked pairs' fine scores best (`ranking.FUSIONS`: the paper's mix, the in-place
cascade, the calibrated mix) depends on the pack: the paper's mix suits students whose fine scores sit on the
coarse scale; where copies get fine scores below their coarse ones (stop 26's fresh packs: mean 0.85 vs 0.95),
a mixed-in copy can fall below unpicked distractors, and the cascade or the calibration rank better
(`benchmarks/results/crop_teacher_pack/`; the choices this makes, checked against the benchmark:
`benchmarks/results/fusion_choice.md`).  `measure_fusions` measures each on the corpus the pack was
distilled on, with what a search would do and the teacher as the judge:

every corpus video queries all the others; S^c scores them; the selector picks `fraction_count(f, K)` of them
for each budget f of BUDGETS; the fine student re-scores the picks; each fusion makes a ranking.  The
teacher's similarities of the mined pairs (the pairs file: each video's nearest neighbours and random others)
grade it: nDCG@TOP over all candidates, a candidate of teacher similarity t gaining 2^(GAIN_SCALE * t) - 1
(t clipped to [0, 1]; a candidate the teacher did not score gains 0).  The fusion with the best mean over
queries and budgets becomes the default, the paper's mix unless another beats it by more than TIE.  No
benchmark video or label is read.  `choose_pack_fusion` writes the choice into pack.json: "fusion" (what
`ModelPack.default_fusion` reads, and serving uses for a search that names none) and "fusion_choice" (the
measurements: `FusionChoice.to_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dnsvr.training.data.features_io import iter_features
from dnsvr.training.distill.augment import pad_batch
from dnsvr.training.distill.pairs import PairSet
from dnsvr.training.files import update_json_keys
from dnsvr.training.ranking import (
    FUSIONS,
    RerankPolicy,
    ScoreCalibration,
    fuse,
    ranking_order,
    selector_rows,
    usable_fusions,
)
from torch import nn
from tqdm import tqdm

BUDGETS = (0.05, 0.1)  # the re-rank fractions measured: issue 15's 5 % and the served default 10 %
TOP = 10  # nDCG@TOP: the results a search returns by default
GAIN_SCALE = 10.0  # teacher similarity 0.95 gains ~4x what 0.75 does: the copies, not the near misses, count
TIE = 1e-3  # a fusion other than mix is chosen only when it beats mix's nDCG by more than this


@dataclass(frozen=True)
class FusionChoice:
    """fusion: the chosen default; ndcg: {fusion: {budget: mean nDCG}}; coarse / fine_all: S^c alone and the fine
    student re-ranking every candidate, for scale; picks_median_rank: {budget: the median S^c rank (1 = first)
    of the selector's picks, None where a budget picked none}; queries: how many corpus videos queried (those
    the teacher gave a gain)."""

    fusion: str
    ndcg: dict[str, dict[str, float]]
    coarse: float
    fine_all: float
    picks_median_rank: dict[str, float | None]
    queries: int

    def mean(self, fusion: str) -> float:
        return _budget_mean(self.ndcg[fusion])

    def to_dict(self) -> dict[str, Any]:
        return {"fusion": self.fusion, "metric": f"nDCG@{TOP}, gain 2^({GAIN_SCALE:g} * teacher similarity) - 1",
                "ndcg": self.ndcg, "mean": {f: round(self.mean(f), 6) for f in self.ndcg},
                "coarse": self.coarse, "fine_all": self.fine_all, "picks_median_rank": self.picks_median_rank,
                "queries": self.queries}

    def table(self) -> str:
        """A plain-text table of the measurements, the chosen fusion marked."""
        budgets = list(next(iter(self.ndcg.values())))
        lines = [f"nDCG@{TOP} against the teacher, {self.queries} corpus queries "
                 f"(S^c alone {self.coarse:.4f}, fine re-ranking all {self.fine_all:.4f})",
                 "fusion       " + "".join(f"{'at ' + b:>10}" for b in budgets) + f"{'mean':>10}"]
        for fusion, values in self.ndcg.items():
            mark = "  <- default" if fusion == self.fusion else ""
            lines.append(f"{fusion:<13}" + "".join(f"{values[b]:>10.4f}" for b in budgets)
                         + f"{self.mean(fusion):>10.4f}{mark}")
        lines.append("selector picks, median S^c rank: "
                     + ", ".join(f"{b}: {'none' if rank is None else f'{rank:g}'}"
                                for b, rank in self.picks_median_rank.items()))
        return "\n".join(lines)


def _budget_mean(by_budget: dict[str, float]) -> float:
    """A fusion's nDCG `{budget: mean over queries}` -> its mean over the budgets (what the choice compares)."""
    return float(np.mean(list(by_budget.values())))


def teacher_gains(pair_set: PairSet) -> np.ndarray:
    """`[N, N]` float64 gains of (query, candidate) over the pairs file's index: 2^(GAIN_SCALE * t) - 1 for the
    teacher similarity t of every mined pair (clipped to [0, 1]), 0 for pairs the teacher did not score and on
    the diagonal."""
    count = len(pair_set.index)
    gains = np.zeros((count, count), np.float64)
    for anchor, pools in pair_set.pairs.items():
        for pool in pools.values():
            for other, similarity in pool.items():
                gains[anchor, other] = 2.0 ** (GAIN_SCALE * min(max(similarity, 0.0), 1.0)) - 1.0
    np.fill_diagonal(gains, 0.0)
    return gains


def ndcg(scores: np.ndarray, gains: np.ndarray, top: int = TOP) -> float:
    """nDCG@top of the ranking by `scores` `[K]` (ties: input order) with graded `gains` `[K]`; 0 without gain."""
    discounts = 1.0 / np.log2(np.arange(2, top + 2))
    ideal = np.sort(gains)[::-1][:top]
    best = float(ideal @ discounts[: len(ideal)])
    if best <= 0.0:
        return 0.0
    shown = gains[ranking_order(scores)[:top]]
    return float(shown @ discounts[: len(shown)]) / best


@torch.inference_mode()
def _all_scores(features_path: Path, ids: list[str], fine: nn.Module, coarse: nn.Module, selector: nn.Module,
                max_frames: int, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ordered pair's (coarse `[N, N]`, selector `[N, N]`, fine `[N, N]`) scores, rows the queries."""
    videos = [torch.from_numpy(video[:max_frames]) for _, video in
              tqdm(iter_features(features_path, ids), total=len(ids), desc="reading the corpus", unit="video",
                   disable=not progress)]
    vectors = torch.cat([coarse.index_video(x) for x in videos])  # [N, C]
    selves = torch.cat([selector.index_video(x)[:, 0] for x in videos])  # [N]
    batch, mask = pad_batch(videos)  # [N, T, R, D], [N, T]
    targets = fine.index_video(batch, mask)
    coarse_scores = (vectors @ vectors.T).numpy().astype(np.float32)  # [N, N]
    selector_scores = np.zeros_like(coarse_scores)
    fine_scores = np.zeros_like(coarse_scores)
    for row, x in enumerate(tqdm(videos, desc="scoring the corpus", unit="query", disable=not progress)):
        rows = selector_rows(selves[row], selves, torch.from_numpy(coarse_scores[row]))
        selector_scores[row] = selector(rows)[:, 0].numpy()
        fine_scores[row] = fine.calculate_video_similarity(fine.index_video(x), targets, None, mask)[0].numpy()
    return coarse_scores, selector_scores, fine_scores


def query_ndcgs(coarse: np.ndarray, priority: np.ndarray, fine: np.ndarray, gains: np.ndarray,
                budgets: tuple[float, ...], fusions: tuple[str, ...],
                calibration: ScoreCalibration | None = None) -> tuple[dict[str, dict[float, float]], dict[float, list]]:
    """One query's candidates: coarse scores `[K]`, selector scores `[K]`, fine similarities `[K]` and teacher
    gains `[K]` -> ({fusion: {budget: nDCG of the fused ranking}}, {budget: the S^c ranks (1 = first) of the
    selector's picks}).  A budget that picks no candidate leaves the coarse ranking to every fusion."""
    rank = np.empty(len(coarse), np.int64)
    rank[ranking_order(coarse)] = np.arange(1, len(coarse) + 1)
    scores: dict[str, dict[float, float]] = {fusion: {} for fusion in fusions}
    picks: dict[float, list] = {}
    for budget in budgets:
        picked = RerankPolicy("fraction", budget).choose(priority)
        picks[budget] = rank[picked].tolist()
        for fusion in fusions:
            scores[fusion][budget] = ndcg(fuse(fusion, coarse, picked, fine[picked], calibration), gains)
    return scores, picks


def pick_fusion(means: dict[str, float]) -> str:
    """The default among measured fusions `{fusion: mean nDCG}`: the first of FUSIONS' order (mix first) within TIE
    of the best."""
    best = max(means.values())
    return next(fusion for fusion in FUSIONS if fusion in means and means[fusion] >= best - TIE)


def measure_fusions(features_path: str | Path, pairs: PairSet | str | Path, fine: nn.Module, coarse: nn.Module,
                    selector: nn.Module, calibration: ScoreCalibration | None = None,
                    budgets: tuple[float, ...] = BUDGETS, max_frames: int = 300,
                    progress: bool = True) -> FusionChoice:
    """Measure every fusion the pack can run (see the module docstring) -> the FusionChoice."""
    pair_set = PairSet.of(pairs)
    ids = pair_set.index
    if len(ids) < 3:
        raise ValueError(f"choosing a fusion needs a corpus of 3 videos or more, the pairs file has {len(ids)}")
    if not budgets or any(not 0.0 < b <= 1.0 for b in budgets):
        raise ValueError(f"re-rank budgets must be fractions in (0, 1], got {list(budgets)}")
    gains = teacher_gains(pair_set)
    coarse_scores, selector_scores, fine_scores = _all_scores(Path(features_path), ids, fine, coarse, selector,
                                                              max_frames, progress)
    fusions = usable_fusions(calibration)
    measured: dict[str, dict[float, list[float]]] = {f: {b: [] for b in budgets} for f in fusions}
    ranks: dict[float, list[int]] = {b: [] for b in budgets}
    coarse_only, fine_all = [], []
    for row in range(len(ids)):
        others = np.delete(np.arange(len(ids)), row)
        if gains[row, others].max() <= 0.0:
            continue
        coarse_row, fine_row, gain_row = coarse_scores[row, others], fine_scores[row, others], gains[row, others]
        coarse_only.append(ndcg(coarse_row, gain_row))
        fine_all.append(ndcg(fine_row, gain_row))
        scores, picks = query_ndcgs(coarse_row, selector_scores[row, others], fine_row, gain_row, budgets, fusions,
                                    calibration)
        for fusion, by_budget in scores.items():
            for budget, value in by_budget.items():
                measured[fusion][budget].append(value)
        for budget, picked_ranks in picks.items():
            ranks[budget].extend(picked_ranks)
    if not coarse_only:
        raise ValueError("the pairs file gives no query a teacher-scored candidate: nothing to measure")
    means = {f: {f"{b:g}": round(float(np.mean(v)), 6) for b, v in by_budget.items()}
             for f, by_budget in measured.items()}
    chosen = pick_fusion({f: _budget_mean(v) for f, v in means.items()})
    return FusionChoice(chosen, means, round(float(np.mean(coarse_only)), 6), round(float(np.mean(fine_all)), 6),
                        {f"{b:g}": float(np.median(r)) if r else None for b, r in ranks.items()}, len(coarse_only))


INDEX_VIEWS_FUSION = "cascade"
INDEX_VIEWS_RULE = ("the pack indexes by crop or segment views: a served coarse score is a target's best view, on "
                    "another scale than the full-frame scores measured here and the calibration was fitted on; the "
                    "cascade alone needs no common scale (it re-orders the picked block within the ranks it held)")


def choose_pack_fusion(pack_dir: str | Path, features_path: str | Path, pairs: PairSet | str | Path,
                       budgets: tuple[float, ...] = BUDGETS, write: bool = True,
                       progress: bool = True) -> FusionChoice:
    """Measure the fusions of the pack in `pack_dir` (its fine and coarse students, selector and calibration) on
    its corpus features and teacher pairs; with `write`, record "fusion" and "fusion_choice" in its pack.json
    (rewritten atomically, every other key kept; "fusion_choice" also names the teacher and the files) -> the
    FusionChoice.  A pack that indexes by views (`ModelPack.indexes_views`) gets INDEX_VIEWS_FUSION whatever
    the full-frame measurements say (INDEX_VIEWS_RULE, recorded with them beside their own choice)."""
    from dnsvr.training.packs.model_pack import ModelPack

    manifest_path = Path(pack_dir) / "pack.json"
    if write and not manifest_path.is_file():
        raise ValueError(f"{pack_dir}: a default fusion is stored in pack.json; this folder has none")
    pack = ModelPack.from_dir(pack_dir)
    pair_set = PairSet.of(pairs)
    choice = measure_fusions(features_path, pair_set, pack.load("fine"), pack.load("coarse"), pack.load("selector"),
                             pack.calibration, budgets, progress=progress)
    views_rule = {}
    if pack.indexes_views:
        views_rule = {"measured_choice": choice.fusion, "index_views_rule": INDEX_VIEWS_RULE}
        choice = dataclasses.replace(choice, fusion=INDEX_VIEWS_FUSION)
    if write:
        update_json_keys(manifest_path, {
            "fusion": choice.fusion,
            "fusion_choice": {**choice.to_dict(), **views_rule, "teacher": pair_set.teacher,
                              "features": Path(features_path).name,
                              "pairs": Path(pairs).name if not isinstance(pairs, PairSet) else None}})
    return choice
