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
    ranking_order(scores [K])                    -> [K] positions, best first; ties keep the input order

Re-rank policies (the `--rerank` option):

    RerankPolicy.parse("0.1")            top 10 % of the candidates by selector score (the paper's knob)
    RerankPolicy.parse("fraction:0.2")   the same, spelled out
    RerankPolicy.parse("threshold:0.5")  every candidate whose selector score is >= 0.5
    RerankPolicy.parse("count:20")       the 20 candidates with the best selector scores
    RerankPolicy.parse("none") / "0"     coarse ranking only

Arrays are numpy; `selector_rows`, `fine_to_unit` and `disagreement` also take torch tensors (training keeps
autograd).  Importing this module imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MODES = ("fraction", "threshold", "count", "none")
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
    """mode: fraction (value in [0, 1]), threshold (selector score in [0, 1]), count (value >= 0), none."""

    mode: str = "fraction"
    value: float = 0.1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"re-rank mode must be one of {MODES}, got {self.mode!r}")
        if not math.isfinite(self.value):
            raise ValueError(f"re-rank {self.mode} must be a finite number, got {self.value}")
        if self.mode in ("fraction", "threshold") and not 0.0 <= self.value <= 1.0:
            raise ValueError(f"re-rank {self.mode} must be in [0, 1], got {self.value}")
        if self.mode == "count" and (self.value < 0 or self.value != int(self.value)):
            raise ValueError(f"re-rank count must be a whole number >= 0, got {self.value}")

    @classmethod
    def parse(cls, text: str | float | None) -> RerankPolicy:
        """'0.1' | 'fraction:0.1' | 'threshold:0.5' | 'count:20' | 'none' | '' (the default, fraction 0.1)."""
        if text is None or (isinstance(text, str) and not text.strip()):
            return cls()
        if isinstance(text, (int, float)):
            return cls("fraction", float(text))
        mode, separator, value = text.strip().lower().partition(":")
        if not separator:
            if mode in ("none", "off"):
                return cls("none", 0.0)
            mode, value = "fraction", mode
        try:
            number = float(value)
        except ValueError:
            raise ValueError(
                f"re-rank policy {text!r}: expected FRACTION, fraction:P, threshold:S, count:N or none"
            ) from None
        return cls(mode, number)

    def __str__(self) -> str:
        if self.mode == "none":
            return "none"
        value = int(self.value) if self.mode == "count" else self.value
        return f"{self.mode}:{value}"

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


def merge_fine(coarse_scores: np.ndarray, picked: np.ndarray, fine_similarity: np.ndarray) -> np.ndarray:
    """The paper's DnS scores: coarse `[K]` with the picked positions `[n]` replaced by `fine_to_unit` of their
    fine similarities `[n]` -> `[K]` float32."""
    scores = np.asarray(coarse_scores, np.float32).reshape(-1).copy()
    positions = np.asarray(picked, np.int64).reshape(-1)
    fine = np.asarray(fine_similarity, np.float32).reshape(-1)
    if positions.shape != fine.shape:
        raise ValueError(f"{len(positions)} picked positions for {len(fine)} fine similarities")
    scores[positions] = fine_to_unit(fine)
    return scores


def cascade_fine(coarse_scores: np.ndarray, picked: np.ndarray, fine_similarity: np.ndarray) -> np.ndarray:
    """The classic cascade: the picked positions `[n]` (a block in descending coarse order) keep the coarse scores
    they held, re-assigned so that their order follows the fine similarities `[n]` -> `[K]` float32.  No fine and
    coarse scores are mixed."""
    scores = np.asarray(coarse_scores, np.float32).reshape(-1).copy()
    positions = np.asarray(picked, np.int64).reshape(-1)
    fine = np.asarray(fine_similarity, np.float32).reshape(-1)
    if positions.shape != fine.shape:
        raise ValueError(f"{len(positions)} picked positions for {len(fine)} fine similarities")
    held = np.sort(scores[positions])[::-1]
    scores[positions[ranking_order(fine)]] = held
    return scores
