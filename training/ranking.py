"""The DnS ranking contract: how the coarse student, the selector and the fine student make one ranking.

One home for every rule that serving (`dnsvr_search`), the evaluation protocols, the trade-off benchmark and
the selector's training share:

    selector_rows(q_sel, t_sel [K], coarse [K])  -> [K, 3] rows [sn_query, sn_target, coarse similarity]
    fine_to_unit(s)                              -> s / 2 + 0.5: fine similarity in [-1, 1] on the coarse [0, 1]
    disagreement(fine, coarse)                   -> |fine_to_unit(fine) - coarse|: the selector's training signal
    fraction_count(p, K)                         -> floor(p * K), exact for decimal fractions (0.7 * 10 = 7)
    RerankPolicy.parse("0.1").choose(priority [K]) -> [n] indices picked for re-ranking, best priority first
    merge_fine(coarse [K], picked [n], fine [n]) -> [K]: the paper's rule, fine score (mapped) replaces coarse
    cascade_fine(coarse [K], picked [n], fine [n]) -> [K]: picked block re-ordered by fine within its ranks
    ScoreCalibration.fit(fine [N], coarse [N])   -> a monotone map of fine similarities onto the coarse scale
    fuse(fusion, coarse [K], picked [n], fine [n], calibration) -> [K]: one of FUSIONS (below)
    check_fusion(fusion, calibration)            -> ValueError unless that fusion can run with this pack
    usable_fusions(calibration)                  -> the FUSIONS a pack with (or without) a calibration can run
    positions_moved(coarse [K], rescored [K])    -> [K]: how many others each pair passes when re-scored alone
    ranking_order(scores [K])                    -> [K] positions, best first; ties keep the input order

Re-rank policies (the `--rerank` option):

    RerankPolicy.parse("0.1")            top 10 % of the candidates by selector score (the paper's knob)
    RerankPolicy.parse("fraction:0.2")   the same, spelled out
    RerankPolicy.parse("threshold:0.5")  every candidate whose selector score is >= 0.5
    RerankPolicy.parse("count:20")       the 20 candidates with the best selector scores
    RerankPolicy.parse("none") / "0"     coarse ranking only

How the picked pairs' fine similarities meet the coarse scores (`,fusion:NAME` after a policy, e.g.
"fraction:0.05,fusion:cascade"; `fuse`):

    mix         the paper's DnS: a picked pair's score becomes fine_to_unit(fine) (`merge_fine`)
    cascade     the picked pairs keep the coarse scores they held, re-dealt in fine order (`cascade_fine`): fine
                only re-orders the picked pairs among the ranks they held, no two scales are compared
    calibrated  a picked pair's score becomes calibration(fine): fine mapped onto the coarse scale by a monotone
                map fitted on the pack's training pairs (`ScoreCalibration`, stored in pack.json)

A policy that names no fusion takes the pack's default (pack.json "fusion", chosen by `dnsvr train fusion`;
DEFAULT_FUSION, the paper's mix, for a pack without one): `RerankPolicy.parse(text, default_fusion)`.

Arrays are numpy; `selector_rows`, `fine_to_unit` and `disagreement` also take torch tensors (training keeps
autograd).  Importing this module imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MODES = ("fraction", "threshold", "count", "none")
FUSIONS = ("mix", "cascade", "calibrated")
DEFAULT_FUSION = "mix"  # the paper's; a pack may name its own (pack.json "fusion")
CALIBRATION_KNOTS = 33  # knots of a fitted ScoreCalibration, at evenly spaced quantiles of the fine scores
FRACTION_EPSILON = 1e-9  # floor(p * K) of the decimal p: 0.7 * 10 is 6.999... in binary


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch")


def selector_rows(query_selector: Any, target_selectors: Any, coarse_scores: Any) -> Any:
    """Selector input rows `[sn_query, sn_target, coarse]`: query a scalar or `[K]`, targets `[K]`, coarse `[K]`
    -> `[K, 3]` (float32 numpy; a torch tensor when the targets are one)."""
    if _is_torch(target_selectors):
        import torch

        targets = target_selectors.reshape(-1)
        coarse = torch.as_tensor(coarse_scores, dtype=targets.dtype).reshape(-1)
        query = torch.as_tensor(query_selector, dtype=targets.dtype).reshape(-1).expand_as(targets)
        return torch.stack([query, targets, coarse], dim=1)
    targets = np.asarray(target_selectors, np.float32).reshape(-1)
    coarse = np.asarray(coarse_scores, np.float32).reshape(-1)
    if targets.shape != coarse.shape:
        raise ValueError(f"{len(targets)} selector scalars for {len(coarse)} coarse scores")
    query = np.broadcast_to(np.asarray(query_selector, np.float32).reshape(-1), targets.shape)
    return np.stack([query, targets, coarse], axis=1)


def fine_to_unit(similarity: Any) -> Any:
    """Fine-student (or teacher) similarity in [-1, 1] -> [0, 1], comparable with coarse scores: s / 2 + 0.5.
    Floats, numpy arrays and torch tensors keep their type and dtype."""
    return similarity / 2.0 + 0.5


def disagreement(fine: Any, coarse: Any) -> Any:
    """|fine_to_unit(fine) - coarse|: how much re-ranking a pair changes its score (the selector's label)."""
    return abs(fine_to_unit(fine) - coarse)


def fraction_count(fraction: float, candidates: int) -> int:
    """How many of `candidates` a fraction re-ranks: floor(fraction * candidates), as the paper's evaluation."""
    return int(math.floor(fraction * candidates + FRACTION_EPSILON))


def ranking_order(scores: np.ndarray) -> np.ndarray:
    """`[K]` scores -> `[K]` int64 positions, highest first; equal scores keep their input order."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable").astype(np.int64)


@dataclass(frozen=True)
class RerankPolicy:
    """mode: fraction (value in [0, 1]), threshold (selector score in [0, 1]), count (value >= 0), none;
    fusion: one of FUSIONS, how the picked pairs' fine similarities enter the ranking (`fuse`)."""

    mode: str = "fraction"
    value: float = 0.1
    fusion: str = DEFAULT_FUSION

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"re-rank mode must be one of {MODES}, got {self.mode!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"re-rank fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if not math.isfinite(self.value):
            raise ValueError(f"re-rank {self.mode} must be a finite number, got {self.value}")
        if self.mode in ("fraction", "threshold") and not 0.0 <= self.value <= 1.0:
            raise ValueError(f"re-rank {self.mode} must be in [0, 1], got {self.value}")
        if self.mode == "count" and (self.value < 0 or self.value != int(self.value)):
            raise ValueError(f"re-rank count must be a whole number >= 0, got {self.value}")

    @classmethod
    def parse(cls, text: str | float | None, default_fusion: str = DEFAULT_FUSION) -> RerankPolicy:
        """'0.1' | 'fraction:0.1' | 'threshold:0.5' | 'count:20' | 'none' | '' (the default, fraction 0.1), each
        optionally followed by ',fusion:mix|cascade|calibrated' (default: `default_fusion`, the pack's)."""
        if text is None or (isinstance(text, str) and not text.strip()):
            return cls(fusion=default_fusion)
        if isinstance(text, (int, float)):
            return cls("fraction", float(text), default_fusion)
        picking, comma, fusion_text = text.strip().lower().partition(",")
        fusion = default_fusion
        if comma:
            key, colon, fusion = fusion_text.strip().partition(":")
            if key.strip() != "fusion" or not colon:
                raise ValueError(f"re-rank policy {text!r}: expected POLICY,fusion:NAME with NAME one of {FUSIONS}")
            fusion = fusion.strip()
        mode, separator, value = picking.strip().partition(":")
        if not separator:
            if mode in ("none", "off"):
                return cls("none", 0.0, fusion)
            mode, value = "fraction", mode
        try:
            number = float(value)
        except ValueError:
            raise ValueError(
                f"re-rank policy {text!r}: expected FRACTION, fraction:P, threshold:S, count:N or none"
            ) from None
        return cls(mode, number, fusion)

    def __str__(self) -> str:
        value = int(self.value) if self.mode == "count" else self.value
        picking = "none" if self.mode == "none" else f"{self.mode}:{value}"
        return f"{picking},fusion:{self.fusion}"  # spelled out: it parses back the same under any pack default

    def choose(self, priorities: np.ndarray) -> np.ndarray:
        """`[K]` priorities (selector scores) -> `[n]` int64 indices to re-rank, highest first (ties: input order).

        fraction p takes `fraction_count(p, K)`; count n the n best; threshold s every priority >= s.
        """
        scores = np.asarray(priorities, dtype=np.float32).reshape(-1)
        order = ranking_order(scores)
        if self.mode == "none":
            return order[:0]
        if self.mode == "fraction":
            return order[: fraction_count(self.value, len(scores))]
        if self.mode == "count":
            return order[: int(self.value)]
        return order[scores[order] >= self.value]


def _picked_arrays(coarse_scores: np.ndarray, picked: np.ndarray,
                   fine_similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a float32 copy of coarse `[K]`, picked positions `[n]` int64, fine `[n]` float32); ValueError when the
    picked positions and fine similarities differ in number."""
    scores = np.asarray(coarse_scores, np.float32).reshape(-1).copy()
    positions = np.asarray(picked, np.int64).reshape(-1)
    fine = np.asarray(fine_similarity, np.float32).reshape(-1)
    if positions.shape != fine.shape:
        raise ValueError(f"{len(positions)} picked positions for {len(fine)} fine similarities")
    return scores, positions, fine


def _replace_picked(coarse_scores: np.ndarray, picked: np.ndarray, fine_similarity: np.ndarray,
                    to_coarse_scale: Any) -> np.ndarray:
    """coarse `[K]` with the picked positions `[n]` replaced by `to_coarse_scale(fine [n])` -> `[K]` float32."""
    scores, positions, fine = _picked_arrays(coarse_scores, picked, fine_similarity)
    scores[positions] = to_coarse_scale(fine)
    return scores


def merge_fine(coarse_scores: np.ndarray, picked: np.ndarray, fine_similarity: np.ndarray) -> np.ndarray:
    """The paper's DnS scores: coarse `[K]` with the picked positions `[n]` replaced by `fine_to_unit` of their
    fine similarities `[n]` -> `[K]` float32."""
    return _replace_picked(coarse_scores, picked, fine_similarity, fine_to_unit)


def cascade_fine(coarse_scores: np.ndarray, picked: np.ndarray, fine_similarity: np.ndarray) -> np.ndarray:
    """The classic cascade: the picked positions `[n]` (the coarse top block, or any set a selector picked) keep
    the coarse scores they held, re-assigned so that their order follows the fine similarities `[n]` -> `[K]`
    float32.  No fine and coarse scores are mixed: the unpicked keep their ranks."""
    scores, positions, fine = _picked_arrays(coarse_scores, picked, fine_similarity)
    held = np.sort(scores[positions])[::-1]
    scores[positions[ranking_order(fine)]] = held
    return scores


@dataclass(frozen=True)
class ScoreCalibration:
    """A monotone map of fine similarities in [-1, 1] onto the coarse students' [0, 1] scale: piecewise linear
    through the knots (`fine` strictly increasing, `coarse` non-decreasing), constant beyond the end knots."""

    fine: tuple[float, ...]
    coarse: tuple[float, ...]

    def __post_init__(self) -> None:
        fine, coarse = np.asarray(self.fine, np.float64), np.asarray(self.coarse, np.float64)
        if fine.ndim != 1 or fine.shape != coarse.shape or len(fine) < 2:
            raise ValueError(f"calibration needs two equal lists of >= 2 knots, got {len(fine)} and {len(coarse)}")
        if not (np.isfinite(fine).all() and np.isfinite(coarse).all()):
            raise ValueError("calibration knots must be finite numbers")
        if (np.diff(fine) <= 0).any() or (np.diff(coarse) < 0).any():
            raise ValueError("calibration knots must increase: fine strictly, coarse never decreasing")

    @classmethod
    def fit(cls, fine_similarity: np.ndarray, coarse_scores: np.ndarray,
            knots: int = CALIBRATION_KNOTS) -> ScoreCalibration:
        """Fit on the same pairs' fine similarities `[N]` and coarse scores `[N]` (N >= 2): the isotonic
        regression of coarse on fine (the expected coarse score of a fine score, never decreasing), sampled at
        `knots` quantiles of the fine similarities."""
        from scipy.optimize import isotonic_regression

        fine = np.asarray(fine_similarity, np.float64).reshape(-1)
        coarse = np.asarray(coarse_scores, np.float64).reshape(-1)
        if fine.shape != coarse.shape or len(fine) < 2:
            raise ValueError(f"calibration needs >= 2 pairs with both scores, got {len(fine)} and {len(coarse)}")
        order = np.argsort(fine, kind="stable")
        fine, fitted = fine[order], isotonic_regression(coarse[order]).x
        at = np.unique(np.quantile(fine, np.linspace(0.0, 1.0, knots)))
        if len(at) < 2:
            raise ValueError("calibration needs at least two distinct fine similarities")
        values = np.maximum.accumulate(np.interp(at, fine, fitted))
        return cls(tuple(float(x) for x in at), tuple(float(y) for y in values))

    def __call__(self, fine_similarity: np.ndarray) -> np.ndarray:
        """Fine similarities `[n]` -> their coarse-scale scores `[n]` float32."""
        return np.interp(np.asarray(fine_similarity, np.float64), self.fine, self.coarse).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"fine": list(self.fine), "coarse": list(self.coarse)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreCalibration:
        try:
            return cls(tuple(map(float, data["fine"])), tuple(map(float, data["coarse"])))
        except (KeyError, TypeError) as error:
            raise ValueError(f"calibration must be {{'fine': [...], 'coarse': [...]}}: {error}") from None


def check_fusion(fusion: str, calibration: ScoreCalibration | None) -> None:
    """ValueError naming the problem unless `fusion` is one of FUSIONS and, for 'calibrated', `calibration` (the
    pack's) is there."""
    if fusion not in FUSIONS:
        raise ValueError(f"re-rank fusion must be one of {FUSIONS}, got {fusion!r}")
    if fusion == "calibrated" and calibration is None:
        raise ValueError("re-rank fusion 'calibrated' needs the pack's score calibration, and this pack has none: "
                         "use fusion mix or cascade, or fit one (`dnsvr train calibrate`) and export again")


def usable_fusions(calibration: ScoreCalibration | None) -> tuple[str, ...]:
    """The FUSIONS, in their order, that a pack with this `calibration` (None: none) can run (`check_fusion`)."""
    return tuple(f for f in FUSIONS if f != "calibrated" or calibration is not None)


def fuse(fusion: str, coarse_scores: np.ndarray, picked: np.ndarray, fine_similarity: np.ndarray,
         calibration: ScoreCalibration | None = None) -> np.ndarray:
    """The final scores `[K]` float32 of coarse `[K]` with the picked positions `[n]` re-scored by their fine
    similarities `[n]`, by the rule `fusion` (FUSIONS; 'calibrated' needs the pack's `calibration`)."""
    check_fusion(fusion, calibration)
    if fusion == "mix":
        return merge_fine(coarse_scores, picked, fine_similarity)
    if fusion == "cascade":
        return cascade_fine(coarse_scores, picked, fine_similarity)
    return _replace_picked(coarse_scores, picked, fine_similarity, calibration)


def positions_moved(coarse_scores: np.ndarray, rescored: np.ndarray) -> np.ndarray:
    """How many places each candidate would move if it alone were re-scored: for every i of coarse `[K]`, the
    number of other candidates whose coarse score lies strictly between coarse[i] and rescored[i] `[K]` (the
    ranks it passes, up or down) -> `[K]` int64.  The selector's label on retrieval blocks (a pair is worth
    re-ranking when its fine score would change the ranking)."""
    coarse = np.asarray(coarse_scores, np.float64).reshape(-1)
    new = np.asarray(rescored, np.float64).reshape(-1)
    if coarse.shape != new.shape:
        raise ValueError(f"{len(coarse)} coarse scores for {len(new)} re-scored ones")
    low, high = np.minimum(coarse, new)[:, None], np.maximum(coarse, new)[:, None]
    between = (coarse[None, :] > low) & (coarse[None, :] < high)  # [K, K]: j lies between i's two scores
    return between.sum(axis=1).astype(np.int64)
