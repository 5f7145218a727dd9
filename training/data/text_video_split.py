"""A text-to-video test split: the captions, the video each was written for, and every video ranked.

`TextVideoSplit(captions, caption_video, video_ids, video_group=None)`:

* `captions[i]` is a query; `caption_video[i]` the video it was written for (its "owner");
* `video_ids` are the videos every query ranks (owners and distractors, each once);
* `video_group` (optional) {video id: group name}: a caption is correct for every video of its owner's group
  (several videos of the same content); a video missing from it is a group of its own.  Without it, each
  caption has exactly one correct video, as in the official sets.

`relevance()` -> bool `[Nt, Nv]` (caption i is correct for video j) and `owner_index()` -> int `[Nt]` (the
column of each caption's owner) are what the metrics need (`dnsvr.training.evaluation.t2v_metrics`).
`save(path)` / `TextVideoSplit.load(path)`: the split as JSON, {"captions", "caption_video", "video_ids",
"video_group"} (what `dnsvr eval t2v-export` writes and `dnsvr eval t2v --dataset split` reads).
Bad input raises `SplitError` naming the problem.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from dnsvr.training.files import atomic_write_text

FIELDS = ("captions", "caption_video", "video_ids", "video_group")


class SplitError(ValueError):
    """A split (or a file that should describe one) is inconsistent."""


@dataclass(frozen=True)
class TextVideoSplit:
    """Captions, their owner videos and the ranked videos (see the module docstring)."""

    captions: list[str]
    caption_video: list[str]
    video_ids: list[str]
    video_group: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.captions) != len(self.caption_video):
            raise SplitError(f"{len(self.captions)} captions but {len(self.caption_video)} caption owners")
        if not self.captions:
            raise SplitError("a split needs at least one caption")
        empty = [i for i, caption in enumerate(self.captions) if not isinstance(caption, str) or not caption.strip()]
        if empty:
            raise SplitError(f"{len(empty)} captions are empty or not text, e.g. caption #{empty[0]}")
        twice = [v for v, count in Counter(self.video_ids).items() if count > 1]
        if twice:
            raise SplitError(f"{len(twice)} video ids are listed more than once, e.g. {twice[:3]}")
        known = set(self.video_ids)
        orphans = sorted({v for v in self.caption_video if v not in known})
        if orphans:
            raise SplitError(f"{len(orphans)} caption owners are not among the videos, e.g. {orphans[:3]}")
        strangers = sorted(set(self.video_group) - known)
        if strangers:
            raise SplitError(f"video_group names {len(strangers)} unknown videos, e.g. {strangers[:3]}")

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    def group_of(self, video_id: str) -> str:
        """The content group of a video (its own id when it has none)."""
        return self.video_group.get(video_id, video_id)

    def owner_index(self) -> np.ndarray:
        """int64 `[Nt]`: the column (index in `video_ids`) of each caption's owner video."""
        column = {video_id: j for j, video_id in enumerate(self.video_ids)}
        return np.array([column[v] for v in self.caption_video], dtype=np.int64)

    def relevance(self) -> np.ndarray:
        """bool `[Nt, Nv]`: True where video j is correct for caption i (same group as the caption's owner)."""
        names = sorted({self.group_of(v) for v in self.video_ids})
        code = {name: k for k, name in enumerate(names)}
        video_codes = np.array([code[self.group_of(v)] for v in self.video_ids], dtype=np.int64)
        caption_codes = video_codes[self.owner_index()]
        return caption_codes[:, None] == video_codes[None, :]

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON (atomically)."""
        data = {name: getattr(self, name) for name in FIELDS}
        return atomic_write_text(path, json.dumps({**data, "video_group": dict(self.video_group)}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> TextVideoSplit:
        """Read a split written by `save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or any(name not in data for name in FIELDS[:3]):
            raise SplitError(f"{path}: expected a JSON object with {list(FIELDS)}")
        return cls(*(data[name] for name in FIELDS[:3]), data.get("video_group", {}))
