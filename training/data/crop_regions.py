"""Regions at two scales, the offline teacher's richer layout (issue 15): a frame's 9 regions, then the 9 regions
of each zoomed-in crop of a grid of square crops.

A picture-in-picture copy shows its source at a fraction of the frame's side, smaller than any of the 9 regions
of the full frame (3x3 iMAC over EfficientNet-Lite0 stages 6 + 7) can match.  A crop of side `crop` (a fraction of
the frame's side) taken every `stride` and resized back to the frame's size sees such an inset near the scale the
source was filmed at.  The teacher keeps a query's 9 full-frame regions and gives each target all of them
(`ChamferTeacher(crop_layout=...)`): region Chamfer then takes, per query region, the best match over every scale.

    layout = CropLayout(crop=0.5, stride=0.25)            # 9 crops -> 9 + 81 = 90 regions per frame
    regions = layout.regions(frames, extractor)           # uint8 [T, S, S, 3] -> [T, 90, 512] float32
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FULL_FRAME_REGIONS = 9  # the extractor's 3x3 regions of one image


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

    @property
    def regions_per_frame(self) -> int:
        """The full frame's regions plus those of every crop."""
        return FULL_FRAME_REGIONS * (1 + len(self.boxes))

    def describe(self) -> str:
        return f"full frame + {len(self.boxes)} crops of {self.crop:g} every {self.stride:g}"

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

    @torch.inference_mode()
    def regions(self, frames: np.ndarray, extractor: Callable[[torch.Tensor], torch.Tensor],
                full: np.ndarray | None = None) -> np.ndarray:
        """uint8 `[T, S, S, 3]` -> `[T, regions_per_frame, D]` float32: the full frame's 9 regions first (`full`
        when given, else extracted), then the crops'."""
        if full is None:
            full = extractor(torch.from_numpy(np.ascontiguousarray(frames))).numpy()  # [T, 9, D]
        return np.concatenate([full, self.crop_regions(frames, extractor)], axis=1).astype(np.float32)
