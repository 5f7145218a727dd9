"""Regions at several scales and orientations, the offline teacher's richer layout (issue 15): a frame's 9
regions, then the 9 regions of each zoomed-in crop of one or more grids of square crops, then (optionally) the
frame's 9 regions once turned by each of 1, 2 and 3 quarter turns.

A picture-in-picture copy shows its source at a fraction of the frame's side, smaller than any of the 9 regions
of the full frame (3x3 iMAC over EfficientNet-Lite0 stages 6 + 7) can match.  A crop of side `crop` (a fraction of
the frame's side) taken every `stride` and resized back to the frame's size sees such an inset near the scale the
source was filmed at.  The teacher keeps a query's 9 full-frame regions and gives each target all of them
(`ChamferTeacher(layout=...)`): region Chamfer then takes, per query region, the best match over every scale.

    grid = CropLayout(crop=0.5, stride=0.25)              # 9 crops of half the side
    layout = TeacherLayout((grid,))                       # 9 + 81 = 90 regions per frame
    regions = layout.regions(frames, extractor)           # uint8 [T, S, S, 3] -> [T, 90, 512] float32
    layout = TeacherLayout((grid, CropLayout(0.3, 0.175)), query_turns=True)   # + 25 crops, + 3 turns
    regions = layout.regions(frames, extractor)           # -> [T, 9 + 81 + 225 + 27 = 342, 512]

A copy filmed sideways (the benchmark's rot90) shows its source turned: the query side then offers its frames at
four orientations and a target scores by the best of them (`best_orientation_chamfer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from dnsvr.training.data.synthetic import rot90
from dnsvr.training.networks.similarity import chamfer_similarity
from torch import Tensor

FULL_FRAME_REGIONS = 9  # the extractor's 3x3 regions of one image
QUARTER_TURNS = (1, 2, 3)  # the query's extra orientations, counter-clockwise on screen


@dataclass(frozen=True)
class CropLayout:
    """Square crops of side `crop` every `stride` (fractions of the frame's side), each resized to the frame's."""

    crop: float = 0.5
    stride: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.crop < 1.0 or not 0.0 < self.stride <= self.crop:
            raise ValueError(f"crop layout needs 0 < stride <= crop < 1, got crop {self.crop}, stride {self.stride}")

    @property
    def boxes(self) -> list[tuple[float, float]]:
        """Top-left corners (top, left) of the crops, fractions of the side, row by row."""
        starts = np.arange(0.0, 1.0 - self.crop + 1e-6, self.stride)
        return [(float(top), float(left)) for top in starts for left in starts]

    def zoomed(self, frames: np.ndarray) -> np.ndarray:
        """uint8 `[T, S, S, 3]` -> `[B * T, S, S, 3]`: crop after crop (B = len(boxes)), each resized back to S x S
        (bilinear)."""
        size = frames.shape[1]
        side = round(self.crop * size)
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [T, 3, S, S] uint8
        parts = []
        for top, left in self.boxes:
            y0, x0 = round(top * size), round(left * size)
            part = x[:, :, y0:y0 + side, x0:x0 + side].float()  # [T, 3, side, side]
            parts.append(F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False))
        stacked = torch.cat(parts).round_().clamp_(0, 255).to(torch.uint8)  # [B * T, 3, S, S]
        return stacked.permute(0, 2, 3, 1).contiguous().numpy()  # [B * T, S, S, 3]

    @torch.inference_mode()
    def crop_regions(self, frames: np.ndarray, extractor: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        """uint8 `[T, S, S, 3]` -> `[T, 9 * B, D]` float32: the regions of every crop, crop after crop."""
        count = len(frames)
        regions = extractor(torch.from_numpy(self.zoomed(frames))).numpy()  # [B * T, 9, D]
        per_crop = regions.reshape(len(self.boxes), count, *regions.shape[1:])  # [B, T, 9, D]
        return per_crop.transpose(1, 0, 2, 3).reshape(count, -1, regions.shape[-1])  # [T, 9 * B, D]

    @classmethod
    def parse(cls, text: str) -> CropLayout:
        """`CROP:STRIDE`, e.g. `0.5:0.25` -> the grid; ValueError naming the problem."""
        parts = text.split(":")
        try:
            crop, stride = (float(part) for part in parts)
        except ValueError:
            raise ValueError(f"a crop grid is CROP:STRIDE, two fractions of the frame's side (e.g. 0.5:0.25), "
                             f"got {text!r}") from None
        return cls(crop, stride)


@dataclass(frozen=True)
class TeacherLayout:
    """The offline Chamfer teacher's regions of one frame: the full frame's 9, the 9 of every crop of every grid
    (grid after grid; what a target offers), then with `query_turns` the full frame's 9 turned by 1, 2 and 3
    quarter turns (what a query offers besides its full frame's 9)."""

    grids: tuple[CropLayout, ...] = ()
    query_turns: bool = False

    def __post_init__(self) -> None:
        if not self.grids and not self.query_turns:
            raise ValueError("a teacher layout needs a crop grid or query turns; without either, use the full "
                             "frame's features alone")

    @property
    def target_regions(self) -> int:
        """The full frame's regions plus those of every crop of every grid."""
        return FULL_FRAME_REGIONS * (1 + sum(len(grid.boxes) for grid in self.grids))

    @property
    def regions_per_frame(self) -> int:
        return self.target_regions + (FULL_FRAME_REGIONS * len(QUARTER_TURNS) if self.query_turns else 0)

    def describe(self) -> str:
        parts = ["full frame"] + [f"{len(grid.boxes)} crops of {grid.crop:g} every {grid.stride:g}"
                                  for grid in self.grids]
        return " + ".join(parts) + (", query turned 0-3 quarter turns" if self.query_turns else "")

    def record(self) -> dict[str, Any]:
        """JSON for pack.json."""
        return {"grids": [{"crop": grid.crop, "stride": grid.stride} for grid in self.grids],
                "query_turns": self.query_turns}

    def slug(self) -> str:
        """A file-name part naming the layout, e.g. `c0.5_s0.25_c0.3_s0.175_turns`."""
        parts = [f"c{grid.crop:g}_s{grid.stride:g}" for grid in self.grids]
        return "_".join(parts + (["turns"] if self.query_turns else []))

    @torch.inference_mode()
    def regions(self, frames: np.ndarray, extractor: Callable[[torch.Tensor], torch.Tensor],
                full: np.ndarray | None = None) -> np.ndarray:
        """uint8 `[T, S, S, 3]` -> `[T, regions_per_frame, D]` float32 in the layout's order (`full`: the full
        frame's `[T, 9, D]` when already extracted)."""
        if full is None:
            full = extractor(torch.from_numpy(np.ascontiguousarray(frames))).numpy()  # [T, 9, D]
        parts = [full, *(grid.crop_regions(frames, extractor) for grid in self.grids)]
        if self.query_turns:
            parts += [extractor(torch.from_numpy(rot90(frames, turns))).numpy() for turns in QUARTER_TURNS]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def query_sides(self, features: Tensor) -> Tensor:
        """`[T, regions_per_frame, D]` -> `[O, T, 9, D]`: the query's full frame, then its turned frames (O = 4
        with query turns, else 1)."""
        sides = [features[:, :FULL_FRAME_REGIONS]]
        if self.query_turns:
            turned = features[:, self.target_regions:]  # [T, 27, D]
            sides += list(turned.reshape(len(turned), len(QUARTER_TURNS), FULL_FRAME_REGIONS, -1).transpose(0, 1))
        return torch.stack(sides)

    def target_side(self, features: Tensor) -> Tensor:
        """`[..., T, regions_per_frame, D]` -> `[..., T, target_regions, D]`."""
        return features[..., :self.target_regions, :]


def best_orientation_chamfer(query_sides: Tensor, targets: Tensor, target_mask: Tensor | None = None) -> Tensor:
    """Chamfer similarity (`networks.similarity.chamfer_similarity`) of a query offered at several orientations,
    `[O, Tq, R, D]`, against targets `[K, Tt, R', D]` (+ mask `[K, Tt]`) -> `[K]`: each target's best orientation
    (one orientation at a time, so memory stays that of one)."""
    scores = [chamfer_similarity(side, targets, target_mask=target_mask) for side in query_sides]  # O x [K]
    return torch.stack(scores).amax(dim=0)
