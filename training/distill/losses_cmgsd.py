"""CMGSD (SIGIR 2021) losses: a bidirectional hinge triplet loss whose margin adapts to how far a negative lies
from the positive, measured within one modality by a static and a dynamic teacher ("generalised
self-distillation").

There is no official code; `/work/shared/notes/text-to-video.md` is the specification. `sim` is the batch matrix
`[B, B]` of the student, rows = texts, columns = videos, matching pairs on the diagonal; `s(i, j) = sim[i, j]`.

Choices where the specification is silent:

- margin statistics: the z-score's mean and standard deviation are taken over the off-diagonal distances only
  (the diagonal is a sample's distance to itself, always 0, and never a negative); the standard deviation is the
  population one (ddof 0), so each unordered pair weighs the same whichever way it is counted. If it is below
  1e-6 (e.g. B = 2: a single pair) every z-score is 0 and the margin is alpha.
- reduction: "mean" (default) averages each direction over its B (B - 1) negatives and sums the two directions, so
  the loss scale, and therefore alpha and the lambda mix, does not depend on the batch size; "sum" adds all
  2 B (B - 1) hinge terms (the VSE++ convention).
- margins are teacher outputs, detached by default (`detach_margins`): no gradient flows into the distances, so
  the loss cannot lower a margin instead of separating the pair. With detached margins the dynamic head keeps its
  initial weights: it is a fixed random projection (with dropout) of the model's own, evolving, features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Reduction = Literal["mean", "sum"]

FIXED_MARGIN = 0.2
MARGIN_SCALE = 1.0
STD_EPS = 1e-6


def _off_diagonal(size: int, device: torch.device) -> Tensor:
    return ~torch.eye(size, dtype=torch.bool, device=device)


def triplet_ranking_loss(sim: Tensor, margin: float | Tensor = FIXED_MARGIN, reduction: Reduction = "mean") -> Tensor:
    """Bidirectional hinge triplet loss over the batch, `[B, B]` -> scalar.

    Text anchor i, negative video j: `max(0, m_ij + s(i, j) - s(i, i))`; video anchor i, negative text j:
    `max(0, m_ij + s(j, i) - s(i, i))`; i != j. margin: a float or a symmetric `[B, B]` matrix (its diagonal is
    unused). Reduction: see the module docstring.
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise ValueError(f"triplet loss needs a square [B, B] matrix with B >= 2, got {tuple(sim.shape)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown reduction {reduction!r}; expected 'mean' or 'sum'")
    positives = sim.diagonal()[:, None]
    negatives = _off_diagonal(sim.shape[0], sim.device)
    total = sim.new_zeros(())
    for scores in (sim, sim.T):
        hinge = F.relu(margin + scores - positives)[negatives]
        total = total + (hinge.mean() if reduction == "mean" else hinge.sum())
    return total


def intra_modal_distances(features: Tensor) -> Tensor:
    """Cosine distances within one modality, `[B, D]` -> `[B, B]`: `d_ij = 1 - cos(f_i, f_j)` (made exactly
    symmetric)."""
    normed = F.normalize(features, dim=-1)
    distances = 1.0 - normed @ normed.T
    return (distances + distances.T) / 2


def adaptive_margins(distances: Tensor, alpha: float = FIXED_MARGIN, beta: float = MARGIN_SCALE) -> Tensor:
    """Batch z-score margins, `[B, B]` -> `[B, B]`: `m_ij = max(0, beta (d_ij - mean(d)) / std(d) + alpha)`.

    mean and population std over the off-diagonal entries; the returned diagonal is 0 (not a negative pair).
    """
    size = distances.shape[0]
    if distances.dim() != 2 or distances.shape[1] != size or size < 2:
        raise ValueError(f"margins need a square [B, B] distance matrix with B >= 2, got {tuple(distances.shape)}")
    negatives = _off_diagonal(size, distances.device)
    pairs = distances[negatives]
    mean = pairs.mean()
    std = pairs.std(correction=0)
    z_scores = (distances - mean) / std if std > STD_EPS else torch.zeros_like(distances)
    return F.relu(beta * z_scores + alpha).masked_fill(~negatives, 0.0)


class DynamicTeacherHead(nn.Module):
    """Training-only head of the dynamic teacher: ReLU -> Dropout -> Linear(in, 256) -> L2-normalise.

    `[B, in_features] -> [B, out_features]`, unit rows. Feeds `intra_modal_distances`; discarded after training.
    """

    def __init__(self, in_features: int, out_features: int = 256, dropout: float = 0.1):
        super().__init__()
        self.project = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(in_features, out_features))

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(self.project(features), dim=-1)


def lambda_schedule(epoch: float, start_epoch: float, end_epoch: float) -> float:
    """lambda: 0 up to start_epoch, 1 from end_epoch, linear in between (epoch may be fractional)."""
    if end_epoch <= start_epoch:
        raise ValueError(f"end_epoch ({end_epoch}) must come after start_epoch ({start_epoch})")
    return min(1.0, max(0.0, (epoch - start_epoch) / (end_epoch - start_epoch)))


@dataclass(frozen=True)
class CMGSDLossParts:
    """The total CMGSD loss and its unweighted triplet terms (scalars)."""

    total: Tensor
    fixed: Tensor
    dynamic_video: Tensor
    dynamic_text: Tensor
    static_text: Tensor


class CMGSDLoss(nn.Module):
    """`T(alpha) + lambda [T(m_omega_dyn) + T(m_tau_dyn)] + (1 - lambda) T(m_tau_static)`.

    omega: distances between the videos' dynamic-teacher features; tau: between the texts' (dynamic: the model's
    text features through a `DynamicTeacherHead`; static: a frozen sentence encoder's).
    """

    def __init__(self, alpha: float = FIXED_MARGIN, beta: float = MARGIN_SCALE, reduction: Reduction = "mean",
                 detach_margins: bool = True):
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.reduction = reduction
        self.detach_margins = detach_margins

    def margins(self, features: Tensor) -> Tensor:
        """`[B, D]` teacher features -> `[B, B]` adaptive margins (detached unless `detach_margins` is False)."""
        margins = adaptive_margins(intra_modal_distances(features), self.alpha, self.beta)
        return margins.detach() if self.detach_margins else margins

    def forward(self, sim: Tensor, video_dynamic: Tensor, text_dynamic: Tensor, text_static: Tensor,
                dynamic_weight: float) -> CMGSDLossParts:
        """sim `[B, B]`; video_dynamic `[B, Dv]`, text_dynamic `[B, Dt]`, text_static `[B, Ds]`: teacher features;
        dynamic_weight: lambda in [0, 1] -> `CMGSDLossParts`."""
        if not 0.0 <= dynamic_weight <= 1.0:
            raise ValueError(f"dynamic_weight must lie in [0, 1], got {dynamic_weight}")
        fixed = triplet_ranking_loss(sim, self.alpha, self.reduction)
        dynamic_video = triplet_ranking_loss(sim, self.margins(video_dynamic), self.reduction)
        dynamic_text = triplet_ranking_loss(sim, self.margins(text_dynamic), self.reduction)
        static_text = triplet_ranking_loss(sim, self.margins(text_static), self.reduction)
        total = fixed + dynamic_weight * (dynamic_video + dynamic_text) + (1.0 - dynamic_weight) * static_text
        return CMGSDLossParts(total=total, fixed=fixed, dynamic_video=dynamic_video, dynamic_text=dynamic_text,
                              static_text=static_text)
