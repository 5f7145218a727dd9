"""ViSiL head, the DnS teacher (MKLab-ITI/visil, PyTorch branch): similarity of 3840-d region features.

Its state_dict is the official `visil.pth`.  Attention is the L2-normalised-context variant,
w = (u . x) / 2 + 0.5, applied by `index_video` (the reference's `prepare_tensor`); the comparator uses
replication padding.  The reference has no masks; here padded batches are supported exactly: each pair is
computed on its own valid extent (see `VideoComparator`).
"""

from __future__ import annotations

import torch
from dnsvr.training.networks.layers import Attention, VideoComparator
from dnsvr.training.networks.similarity import (
    as_batch,
    canonical_frames,
    check_same_dims,
    frame_chamfer,
    region_chamfer,
)
from torch import Tensor, nn


def _chamfer(sim: Tensor, rows: Tensor, cols: Tensor, symmetric: bool) -> Tensor:
    """sim `[..., H, W]`, rows `[..., H]`, cols `[..., W]` -> `[...]`; symmetric: mean of both ways."""
    forward = frame_chamfer(sim, rows, cols)
    if not symmetric:
        return forward
    return (forward + frame_chamfer(sim.transpose(-1, -2), cols, rows)) / 2


class ViSiLHead(nn.Module):
    """ViSiL similarity head: region Chamfer -> comparator CNN -> Hardtanh -> frame Chamfer."""

    def __init__(self, dims: int = 3840, attention: bool = True, video_comperator: bool = True,
                 symmetric: bool = False):
        super().__init__()
        self.symmetric = symmetric
        if attention:
            self.attention = Attention(dims, norm=True)
        if video_comperator:
            self.video_comperator = VideoComparator(padding="replicate")
        self.htanh = nn.Hardtanh()

    def index_video(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """`[T, R, D]` / `[N, T, R, D]` (+ mask `[N, T]`) -> attention-weighted features (0 at padding)."""
        if hasattr(self, "attention"):
            x, _ = self.attention(x)
        if mask is not None:
            x = x.masked_fill((mask == 0).reshape(*mask.shape, 1, 1), 0.0)
        return x

    prepare_tensor = index_video

    def attention_weights(self, x: Tensor) -> Tensor:
        """`[..., R, D] -> [..., R]` region attention weights."""
        return self.attention(x)[1][..., 0]

    def frame_to_frame_similarity(self, query: Tensor, target: Tensor, query_mask: Tensor | None = None,
                                  target_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """-> (f2f `[Nq*Nt, Tq, Tt]` (symmetric region Chamfer if `symmetric`), mask, same shape, bool)."""
        q, q_mask, _ = as_batch(query, query_mask, "query")
        t, t_mask, _ = as_batch(target, target_mask, "target")
        check_same_dims(q, t)
        q, q_mask = canonical_frames(q, q_mask)
        t, t_mask = canonical_frames(t, t_mask)
        sim = region_chamfer(q, t)
        if self.symmetric:
            sim = (sim + region_chamfer(t, q).permute(1, 0, 3, 2)) / 2
        sim_mask = (q_mask[:, None, :, None] & t_mask[None, :, None, :]).flatten(0, 1)
        return sim.flatten(0, 1).masked_fill(~sim_mask, 0.0), sim_mask

    def visil_output(self, sim: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """f2f `[P, Tq, Tt]` (+ mask) -> (comparator output before Hardtanh `[P, Tq//4, Tt//4]`, its mask)."""
        return self.video_comperator(sim, mask)

    def calculate_video_similarity(self, query: Tensor, target: Tensor, query_mask: Tensor | None = None,
                                   target_mask: Tensor | None = None) -> Tensor:
        """Prepared (attention-applied) query `[Tq, R, D]` / `[Nq, Tq, R, D]`, target likewise (+ masks)
        -> `[Nq, Nt]` scores."""
        n_q = query.shape[0] if query.ndim == 4 else 1
        n_t = target.shape[0] if target.ndim == 4 else 1
        sim, sim_mask = self.frame_to_frame_similarity(query, target, query_mask, target_mask)
        if hasattr(self, "video_comperator"):
            sim, sim_mask = self.visil_output(sim, sim_mask)
            sim = self.htanh(sim)
        return _chamfer(sim, sim_mask.any(dim=2), sim_mask.any(dim=1), self.symmetric).view(n_q, n_t)

    def forward(self, query: Tensor, target: Tensor, query_mask: Tensor | None = None,
                target_mask: Tensor | None = None) -> Tensor:
        """Reference call: prepared query and target `[T, R, D]` -> `[1]`; or paired batches `[B, T, R, D]`
        (+ masks `[B, T]`), row b against row b -> `[B]`."""
        if query.ndim == 3 and target.ndim == 3:
            return self.calculate_video_similarity(query, target, query_mask, target_mask).view(1)
        if query.ndim != 4 or target.ndim != 4 or query.shape[0] != target.shape[0]:
            raise ValueError(f"paired batches must be [B, T, R, D] of the same B, got {tuple(query.shape)} "
                             f"and {tuple(target.shape)}")
        scores = [self.calculate_video_similarity(query[b:b + 1], target[b:b + 1],
                                                  None if query_mask is None else query_mask[b:b + 1],
                                                  None if target_mask is None else target_mask[b:b + 1])
                  for b in range(query.shape[0])]
        return torch.cat(scores).view(-1)
