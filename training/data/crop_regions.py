"""Regions at several scales and orientations, the offline teacher's richer layout (issue 15): a frame's 9
regions, then the 9 regions of each zoomed-in crop of one or more grids of square crops, then (optionally) the
frame's 9 regions once turned by each of 1, 2 and 3 quarter turns, then (optionally) the frame's 9 regions once
blurred by each of some Gaussian sigmas.

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
four orientations and a target scores by the best of them (`best_orientation_chamfer`).  A blurred or
low-resolution copy has lost the detail its sharp source's features carry: the query side then also offers its
frames blurred (`query_blurs`, sigmas in pixels of a 224-pixel side, scaled with the frame's), the best counting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from dnsvr.training.data.synthetic import blur, rot90
from dnsvr.training.networks.similarity import chamfer_similarity
from torch import Tensor

FULL_FRAME_REGIONS = 9  # the extractor's 3x3 regions of one image
QUARTER_TURNS = (1, 2, 3)  # the query's extra orientations, counter-clockwise on screen
BLUR_SIDE = 224  # `TeacherLayout.query_blurs` are sigmas in pixels of a side this long (the extractor's input)


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

    def record(self) -> dict[str, float]:
        """JSON for pack.json and the export's manifest: {"crop", "stride"}."""
        return {"crop": self.crop, "stride": self.stride}

    @classmethod
    def from_record(cls, data: Any) -> CropLayout:
        """`record()`'s JSON -> the grid; ValueError naming the problem."""
        try:
            return cls(float(data["crop"]), float(data["stride"]))
        except (KeyError, TypeError) as error:
            raise ValueError(f"a crop grid is {{\"crop\": C, \"stride\": S}}, got {data!r} ({error!r})") from None

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
    quarter turns, then the full frame's 9 blurred by each of `query_blurs` (Gaussian sigmas in pixels of a
    224-pixel side); turns and blurs are what a query offers besides its full frame's 9."""

    grids: tuple[CropLayout, ...] = ()
    query_turns: bool = False
    query_blurs: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.grids and not self.query_turns and not self.query_blurs:
            raise ValueError("a teacher layout needs a crop grid, query turns or query blurs; without any, use "
                             "the full frame's features alone")
        if any(not sigma > 0 for sigma in self.query_blurs):
            raise ValueError(f"query blurs are Gaussian sigmas > 0 (pixels of a {BLUR_SIDE}-pixel side), got "
                             f"{list(self.query_blurs)}")

    @classmethod
    def of(cls, grids: tuple[CropLayout, ...] = (), query_turns: bool = False,
           query_blurs: tuple[float, ...] = ()) -> TeacherLayout | None:
        """The layout of these grids, turns and blurs; None without any (the full frame's regions alone)."""
        if not grids and not query_turns and not query_blurs:
            return None
        return cls(tuple(grids), query_turns, tuple(query_blurs))

    @property
    def target_regions(self) -> int:
        """The full frame's regions plus those of every crop of every grid."""
        return FULL_FRAME_REGIONS * (1 + sum(len(grid.boxes) for grid in self.grids))

    @property
    def query_variants(self) -> int:
        """The query's frames offered besides as filmed: 3 turns (with `query_turns`) and one per blur."""
        return len(QUARTER_TURNS) * self.query_turns + len(self.query_blurs)

    @property
    def regions_per_frame(self) -> int:
        return self.target_regions + FULL_FRAME_REGIONS * self.query_variants

    def describe(self) -> str:
        parts = ["full frame"] + [f"{len(grid.boxes)} crops of {grid.crop:g} every {grid.stride:g}"
                                  for grid in self.grids]
        extras = (["query turned 0-3 quarter turns"] if self.query_turns else []) + (
            [f"query also blurred (sigma {', '.join(f'{sigma:g}' for sigma in self.query_blurs)} px at "
             f"{BLUR_SIDE})"] if self.query_blurs else [])
        return ", ".join([" + ".join(parts), *extras])

    def record(self) -> dict[str, Any]:
        """JSON for pack.json."""
        return {"grids": [grid.record() for grid in self.grids],
                "query_turns": self.query_turns, "query_blurs": list(self.query_blurs)}

    def slug(self) -> str:
        """A file-name part naming the layout, e.g. `c0.5_s0.25_c0.3_s0.175_turns_blur1.5`."""
        parts = [f"c{grid.crop:g}_s{grid.stride:g}" for grid in self.grids]
        return "_".join(parts + (["turns"] if self.query_turns else [])
                        + [f"blur{sigma:g}" for sigma in self.query_blurs])

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
        scale = frames.shape[1] / BLUR_SIDE
        parts += [extractor(torch.from_numpy(blur(frames, sigma * scale))).numpy() for sigma in self.query_blurs]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def query_sides(self, features: Tensor) -> Tensor:
        """`[T, regions_per_frame, D]` -> `[O, T, 9, D]`: the query's full frame, then its turned frames, then
        its blurred frames (O = 1 + 3 with query turns + one per blur)."""
        extra = features[:, self.target_regions:]  # [T, 9 * (O - 1), D]
        sides = extra.reshape(len(extra), self.query_variants, FULL_FRAME_REGIONS, extra.shape[-1])  # [T, O - 1, 9, D]
        sides = sides.transpose(0, 1)  # [O - 1, T, 9, D]
        return torch.cat([features[None, :, :FULL_FRAME_REGIONS], sides])

    def target_side(self, features: Tensor) -> Tensor:
        """`[..., T, regions_per_frame, D]` -> `[..., T, target_regions, D]`."""
        return features[..., :self.target_regions, :]


def crop_views(regions: np.ndarray) -> np.ndarray:
    """A target's regions in the layout's order, `[T, 9 * V, D]` (its full frame's 9, then each crop's 9), ->
    `[V, T, 9, D]`: one view per scale, each a video of 9 regions a frame (the full frame first), as the
    students' indexing sees a video."""
    count, regions_total, dims = regions.shape
    if regions_total % FULL_FRAME_REGIONS:
        raise ValueError(f"regions per frame must be a multiple of {FULL_FRAME_REGIONS}, got {regions_total}")
    views = regions.reshape(count, regions_total // FULL_FRAME_REGIONS, FULL_FRAME_REGIONS, dims)  # [T, V, 9, D]
    return np.ascontiguousarray(views.transpose(1, 0, 2, 3))  # [V, T, 9, D]


def best_orientation_chamfer(query_sides: Tensor, targets: Tensor, target_mask: Tensor | None = None) -> Tensor:
    """Chamfer similarity (`networks.similarity.chamfer_similarity`) of a query offered at several orientations,
    `[O, Tq, R, D]`, against targets `[K, Tt, R', D]` (+ mask `[K, Tt]`) -> `[K]`: each target's best orientation
    (one orientation at a time, so memory stays that of one)."""
    scores = [chamfer_similarity(side, targets, target_mask=target_mask) for side in query_sides]  # O x [K]
    return torch.stack(scores).amax(dim=0)
