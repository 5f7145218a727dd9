"""Which coarse candidates the fine student re-ranks: the selector's top fraction, a score threshold, a count.

    RerankPolicy.parse("0.1")            top 10 % of the candidates by selector score (the paper's knob)
    RerankPolicy.parse("fraction:0.2")   the same, spelled out
    RerankPolicy.parse("threshold:0.5")  every candidate whose selector score is >= 0.5
    RerankPolicy.parse("count:20")       the 20 candidates with the best selector scores
    RerankPolicy.parse("none") / "0"     coarse ranking only

`policy.choose(selector_scores [K] float32) -> [n] int64` candidate indices, best selector score first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MODES = ("fraction", "threshold", "count", "none")


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

    def choose(self, selector_scores: np.ndarray) -> np.ndarray:
        """[K] selector scores -> [n] int64 indices of the candidates to re-rank, best score first.

        fraction p takes floor(p * K) candidates, as the paper's evaluation does; ties keep candidate order.
        """
        scores = np.asarray(selector_scores, dtype=np.float32).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        if self.mode == "none":
            return order[:0].astype(np.int64)
        if self.mode == "fraction":
            return order[: int(self.value * len(scores) + 1e-9)].astype(np.int64)
        if self.mode == "count":
            return order[: int(self.value)].astype(np.int64)
        return order[scores[order] >= self.value].astype(np.int64)
