"""Training objectives of DnS: distillation (L1 to the teacher), the fine students' similarity regulariser,
the coarse student's target mapping and the selector's labels and loss.

Similarities are `[N]` float tensors: the teacher's and the fine students' lie in [-1, 1]; the coarse student
is trained towards targets in [0, 1] (`coarse_targets`), as in the reference training code.
"""

from __future__ import annotations

import torch.nn.functional as F
from dnsvr.training.ranking import disagreement, fine_to_unit
from torch import Tensor


def distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean absolute difference between student and teacher similarities, `[N]`, `[N]` -> scalar."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} shapes differ")
    return F.l1_loss(student, teacher)


def similarity_regularization(sim: Tensor, mask: Tensor | None = None, low: float = -1.0,
                              high: float = 1.0) -> Tensor:
    """Sum of how far the comparator output leaves [low, high] (before the Hardtanh clips it).

    sim `[P, H, W]` (any shape), mask of the same shape (True at cells to count; None: all) -> scalar.
    """
    excess = (low - sim).clamp(min=0.0) + (sim - high).clamp(min=0.0)
    if mask is not None:
        excess = excess.masked_fill(~mask.bool(), 0.0)
    return excess.sum()


def coarse_targets(teacher: Tensor) -> Tensor:
    """Teacher similarities in [-1, 1] -> the coarse student's targets in [0, 1] (`ranking.fine_to_unit`)."""
    return fine_to_unit(teacher)


def selector_labels(fine: Tensor, coarse: Tensor, threshold: float) -> Tensor:
    """1.0 where `ranking.disagreement` of the fine and coarse similarities exceeds `threshold` (the pair is
    worth re-ranking), else 0.0: `[N]`, `[N]` -> `[N]` float."""
    return (disagreement(fine, coarse) > threshold).to(coarse.dtype)


def selector_loss(probabilities: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy of the selector's probabilities `[N]` (or `[N, 1]`) against 0/1 labels `[N]`."""
    return F.binary_cross_entropy(probabilities.reshape(-1), labels.reshape(-1).to(probabilities.dtype))


def total_student_loss(distillation: Tensor, regularization: Tensor | None, weight: float) -> Tensor:
    """distillation + weight * regularization (the reference's r_parameter, 1e-3 for the fine students)."""
    return distillation if regularization is None else distillation + weight * regularization

