"""What `index` does when the collection already holds a near-duplicate of the new video: one rule, shared by
the client (which checks before sending) and the server (which checks again before embedding).

    DuplicatePolicy.parse("skip", 0.9) -> DuplicatePolicy(mode="skip", threshold=0.9)
    policy.checks  -> search the collection before writing?   policy.stores(duplicates) -> write the video?

Modes (`ON_DUPLICATE`):

    keep    store the video without searching (the default, what index always did; no duplicates reported)
    report  search, store the video, report the near-duplicates found
    skip    search, report the near-duplicates, store the video only when there is none

A near-duplicate is an indexed video (another id) whose served search score against the new video (the score
`search` ranks by with its default policy) is >= `threshold`, in [0, 1].  The default threshold is chosen
from the score distributions of the near-duplicate benchmark: `benchmarks/duplicate_threshold.py`,
`docs/duplicates.md`; a server uses its model pack's (`"duplicate_threshold"` in pack.json: the scores depend on
how the pack indexes), else DEFAULT_DUPLICATE_THRESHOLD.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

ON_DUPLICATE = ("keep", "report", "skip")
DEFAULT_ON_DUPLICATE = "keep"
DEFAULT_DUPLICATE_THRESHOLD = 0.90  # best F1 of "score >= t" on the benchmark, full-frame index (docs/duplicates.md)
SCORE_RANGE = (0.0, 1.0)  # the served scores of near-duplicates: coarse cosine / fine s/2+0.5


@dataclass(frozen=True)
class DuplicatePolicy:
    """mode: one of ON_DUPLICATE; threshold: the score in SCORE_RANGE from which a video is a near-duplicate.
    ValueError naming the problem for an unknown mode or a threshold outside the range (NaN included)."""

    mode: str = DEFAULT_ON_DUPLICATE
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD

    def __post_init__(self) -> None:
        if self.mode not in ON_DUPLICATE:
            raise ValueError(f"on_duplicate must be one of {', '.join(ON_DUPLICATE)}, got {self.mode!r}")
        low, high = SCORE_RANGE
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, numbers.Real) \
                or math.isnan(self.threshold) or not low <= self.threshold <= high:
            raise ValueError(f"duplicate_threshold must be a number in [{low}, {high}] (the score range), "
                             f"got {self.threshold!r}")

    @classmethod
    def parse(cls, mode: str | None = None, threshold: float | None = None,
              default_threshold: float = DEFAULT_DUPLICATE_THRESHOLD) -> DuplicatePolicy:
        """The policy of `mode` (None: the default) and `threshold` (None: `default_threshold`, which a server
        takes from its model pack)."""
        return cls(DEFAULT_ON_DUPLICATE if mode is None else mode,
                   default_threshold if threshold is None else threshold)

    @property
    def checks(self) -> bool:
        """Whether indexing searches the collection for near-duplicates first."""
        return self.mode != "keep"

    def stores(self, duplicates: int) -> bool:
        """Whether the new video is written, given how many near-duplicates were found."""
        return self.mode != "skip" or duplicates == 0
