"""Temporal segment views: a target video also indexed by the S^c vectors of windows of its frames (issue 15).

A partial copy shows a stretch of its source inside other footage, so its one S^c vector mixes the copied frames
with foreign ones and sits far from its source's.  A window that covers mostly the copied stretch scores near the
source, as a crop view does for a picture-in-picture copy: a target then scores by its best view, its full
frame's, a crop's or a window's.  A query keeps its one vector.

Every window length is a fraction of the video's frames; windows of one length overlap by about half, spaced
evenly from the video's start to its end, so every video has the same number of windows whatever its length:

    layout = SegmentLayout((0.25,))                # 7 windows of a quarter of the frames, every eighth
    layout.windows(30)                             # [(0, 8), (4, 12), (7, 15), (11, 19), (15, 23), (18, 26), (22, 30)]
    layout = SegmentLayout((0.5, 1 / 3))           # 3 windows of half the frames + 5 of a third: 8 windows
    vectors = layout.vectors(features, embed)      # [T, 9, D] -> [8, C] S^c vectors, one a window
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SegmentLayout:
    """Windows of `lengths` (fractions of a video's frames, each in (0, 1)), about half a length apart."""

    lengths: tuple[float, ...] = (0.25,)

    def __post_init__(self) -> None:
        if not self.lengths or any(not 0.0 < length < 1.0 for length in self.lengths):
            raise ValueError(f"segment views need window lengths in (0, 1) (fractions of a video's frames), got "
                             f"{list(self.lengths)}")

    @staticmethod
    def count_of(length: float) -> int:
        """Windows of one length: as many as fit, about half a length apart, from the video's start to its end."""
        return int(round((1.0 - length) / (length / 2))) + 1

    @property
    def count(self) -> int:
        """Windows a video has, whatever its frame count."""
        return sum(self.count_of(length) for length in self.lengths)

    def windows(self, frame_count: int) -> list[tuple[int, int]]:
        """[(start, stop)] frame ranges (stop exclusive) of a video of `frame_count` >= 1 frames, `count` of them:
        length after length, each length's windows in time order, the first starting the video and the last
        ending it (one window alone: centred).  A video too short for distinct windows repeats some."""
        if frame_count < 1:
            raise ValueError(f"a video has at least one frame, got {frame_count}")
        spans = []
        for length in self.lengths:
            size = max(1, int(round(length * frame_count)))
            count, room = self.count_of(length), frame_count - size
            starts = [room // 2] if count == 1 else [int(round(k * room / (count - 1))) for k in range(count)]
            spans += [(start, start + size) for start in starts]
        return spans

    def vectors(self, features: np.ndarray, embed: Callable[[Sequence[np.ndarray]], np.ndarray]) -> np.ndarray:
        """Region features `[T, 9, D]` -> `[count, C]`: `embed` (a list of `[t, 9, D]` windows -> their unit S^c
        vectors `[n, C]`) on every window, a window shorter than the networks' 4 frames repeated as a short video
        is (`pad_frames`)."""
        from dnsvr.training.data.video import pad_frames  # here: packs and manifests read layouts without PyAV

        return embed([pad_frames(features[start:stop]) for start, stop in self.windows(len(features))])

    def record(self) -> dict[str, list[float]]:
        """JSON for pack.json and the export's manifest: {"lengths"}."""
        return {"lengths": list(self.lengths)}

    @classmethod
    def from_record(cls, data: Any) -> SegmentLayout:
        """`record()`'s JSON -> the layout; ValueError naming the problem."""
        try:
            return cls(tuple(float(length) for length in data["lengths"]))
        except (KeyError, TypeError) as error:
            raise ValueError(f"segment views are {{\"lengths\": [fractions]}}, got {data!r} ({error!r})") from None

    @classmethod
    def parse(cls, text: str) -> SegmentLayout:
        """`L1,L2,...`, e.g. `0.25` or `0.5,0.333` -> the layout; ValueError naming the problem."""
        try:
            lengths = tuple(float(part) for part in text.split(","))
        except ValueError:
            raise ValueError(f"segment views are LENGTH[,LENGTH...], fractions of a video's frames (e.g. 0.25), "
                             f"got {text!r}") from None
        return cls(lengths)
