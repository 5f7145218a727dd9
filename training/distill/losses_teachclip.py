"""TeachCLIP training losses (CVPR 2024): ground truth, coarse distillation of the teachers' batch similarity
matrices and fine distillation of their frame-text relevance into the student's AFA weights.

Conventions: `S` is a batch logit matrix `[Bt, Bv]` (`logit_scale.exp() * cosine`), rows = texts, columns = videos,
matching pairs on the diagonal. Frame tensors are `[B, T]`, row i = video i scored against its own caption.

Values reproduce the official `train.py:train_epoch` (ruc-aimc-lab/TeachCLIP@23c991f), checked against
`golden_t2v/teachclip_losses.*`. Two things the official code does not do, added here:

- `frame_mask`: the official fine losses use no mask (padded slots carry weight and loss). With a mask, student
  weights and teacher relevance are renormalised over the real frames (the same as a softmax restricted to them)
  and only real entries are averaged, so padding changes nothing; without a mask the official values come out.
- the Pearson denominators are clamped at 1e-12 (the official code divides by them as they are: a constant row
  gives NaN); the clamp changes no finite official value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CoarseForm = Literal["pear", "ce", "l1"]
FineForm = Literal["ce", "pear", "l1"]

PEARSON_EPS = 1e-12


@dataclass(frozen=True)
class TeachCLIPWeights:
    """Weights of the three terms in the total loss."""

    ground_truth: float
    coarse: float
    fine: float


def official_weights(coarse_form: CoarseForm) -> TeachCLIPWeights:
    """The official weights (train.py:339-342): they depend on the coarse form only.

    "ce": `L_gt + 10 L_coarse + L_fine`; "pear" and "l1": `0.2 L_gt + L_coarse + 2 L_fine`.
    """
    if coarse_form == "ce":
        return TeachCLIPWeights(ground_truth=1.0, coarse=10.0, fine=1.0)
    return TeachCLIPWeights(ground_truth=0.2, coarse=1.0, fine=2.0)


def _check_form(form: str, allowed: tuple[str, ...], what: str) -> None:
    if form not in allowed:
        raise ValueError(f"unknown {what} form {form!r}; expected one of {allowed}")


def row_pearson(x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """Pearson correlation of each row of x with the same row of y, over the entries where mask is true.

    x, y `[N, K]`, mask `[N, K]` bool or 0/1 (None: all entries) -> `[N]`. Rows are centred on their own
    (masked) mean; the denominator is clamped at 1e-12.
    """
    if mask is None:
        xc = x - x.mean(dim=-1, keepdim=True)
        yc = y - y.mean(dim=-1, keepdim=True)
    else:
        keep = mask.to(x.dtype)
        count = keep.sum(dim=-1, keepdim=True).clamp_min(1.0)
        xc = (x - (x * keep).sum(dim=-1, keepdim=True) / count) * keep
        yc = (y - (y * keep).sum(dim=-1, keepdim=True) / count) * keep
    denominator = (xc.norm(dim=-1) * yc.norm(dim=-1)).clamp_min(PEARSON_EPS)
    return (xc * yc).sum(dim=-1) / denominator


def ground_truth_loss(logits: Tensor) -> Tensor:
    """Symmetric InfoNCE: `(CE(S) + CE(S^T)) / 2` with `CE(S) = mean_i -log_softmax(S_i)[i]`.

    logits `[B, B]` (rows = texts, diagonal = matching pairs) -> scalar.
    """
    if logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"ground-truth loss needs a square [B, B] matrix, got {tuple(logits.shape)}")
    text_to_video = -F.log_softmax(logits, dim=-1).diagonal().mean()
    video_to_text = -F.log_softmax(logits.T, dim=-1).diagonal().mean()
    return (text_to_video + video_to_text) / 2


def coarse_distillation_loss(student_logits: Tensor, teacher_logits: Tensor, form: CoarseForm = "pear") -> Tensor:
    """Distillation of one teacher's batch matrix into the student's, `[Bt, Bv]`, `[Bt, Bv]` -> scalar.

    - "pear" (default): `P = softmax_row(S)`, `Q = softmax_row(S_T)`; `mean_i(1 - pearson(P_i, Q_i))`, plus the
      same on the transposes (column softmaxes).
    - "ce": soft cross-entropy `mean(-softmax(S_T) * log_softmax(S))` over all entries, plus the same on the
      transposes.
    - "l1": SmoothL1 (beta 1, mean over all entries) between S and S_T.

    The teacher is detached: no gradient reaches it.
    """
    _check_form(form, ("pear", "ce", "l1"), "coarse")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} differ")
    teacher_logits = teacher_logits.detach()
    if form == "l1":
        return F.smooth_l1_loss(student_logits, teacher_logits)
    total = student_logits.new_zeros(())
    for student, teacher in ((student_logits, teacher_logits), (student_logits.T, teacher_logits.T)):
        if form == "ce":
            total = total + (-teacher.softmax(dim=-1) * F.log_softmax(student, dim=-1)).mean()
        else:
            total = total + (1.0 - row_pearson(student.softmax(dim=-1), teacher.softmax(dim=-1))).mean()
    return total


def fine_distillation_loss(frame_weights: Tensor, teacher_relevance: Tensor, frame_mask: Tensor | None = None,
                           form: FineForm = "ce") -> Tensor:
    """Distillation of one teacher's frame-text relevance into the student's AFA weights.

    frame_weights `[B, T]`: the student's `softmax_t(afa_logits)` (temperature 1); teacher_relevance `[B, T]`:
    `softmax_t(cos(text_i, frame_{i,t}))`; frame_mask `[B, T]` (1 = real frame; None = the official behaviour,
    every slot counts) -> scalar.

    - "ce" (default): `mean_{i,t}(-p_{i,t} log a_{i,t})`.
    - "pear": `mean_i(1 - pearson(a_i, p_i))`.
    - "l1": SmoothL1 (beta 1) between a and p, mean over entries.

    With a mask, a and p are first renormalised over the real frames of each row; "ce" and "l1" then average
    over the real entries, "pear" correlates over the real frames and averages over the rows that have at least
    two of them (a one-frame row has nothing to correlate). The teacher is detached.
    """
    _check_form(form, ("ce", "pear", "l1"), "fine")
    if frame_weights.shape != teacher_relevance.shape:
        raise ValueError(f"weights {tuple(frame_weights.shape)} and relevance {tuple(teacher_relevance.shape)} "
                         "differ")
    teacher_relevance = teacher_relevance.detach()
    if frame_mask is None:
        if form == "ce":
            return (-torch.log(frame_weights) * teacher_relevance).mean()
        if form == "pear":
            return (1.0 - row_pearson(frame_weights, teacher_relevance)).mean()
        return F.smooth_l1_loss(frame_weights, teacher_relevance)

    real = frame_mask.bool()
    if real.shape != frame_weights.shape:
        raise ValueError(f"mask {tuple(real.shape)} and weights {tuple(frame_weights.shape)} differ")
    if not real.any(dim=-1).all():
        raise ValueError("every row needs at least one real frame")
    weights = _renormalise(frame_weights, real)
    relevance = _renormalise(teacher_relevance, real)
    if form == "pear":
        rows = real.sum(dim=-1) >= 2
        if not rows.any():
            return frame_weights.sum() * 0.0
        return (1.0 - row_pearson(weights[rows], relevance[rows], real[rows])).mean()
    if form == "ce":
        per_entry = -torch.log(torch.where(real, weights, torch.ones_like(weights))) * relevance
    else:
        per_entry = F.smooth_l1_loss(weights, relevance, reduction="none")
    return per_entry.masked_fill(~real, 0.0).sum() / real.sum()


def _renormalise(distribution: Tensor, real: Tensor) -> Tensor:
    """Rows of a `[B, T]` distribution restricted to the real slots and rescaled to sum to 1 there (0 elsewhere)."""
    kept = distribution.masked_fill(~real, 0.0)
    return kept / kept.sum(dim=-1, keepdim=True)


@dataclass(frozen=True)
class TeachCLIPLossParts:
    """The total TeachCLIP loss and its unweighted terms (scalars; coarse and fine averaged over teachers)."""

    total: Tensor
    ground_truth: Tensor
    coarse: Tensor
    fine: Tensor


class TeachCLIPLoss(nn.Module):
    """`w_gt L_gt + w_c mean_teachers(L_coarse) + w_f mean_teachers(L_fine)`.

    coarse_form / fine_form: see `coarse_distillation_loss` / `fine_distillation_loss` (TeachCLIP's configs:
    "pear" / "ce"). weights: None = `official_weights(coarse_form)`. temperature: TeachCLIP's `--beta` (default 1):
    student and teacher logits are divided by it before every loss (the fine loss does not use them).
    """

    def __init__(self, coarse_form: CoarseForm = "pear", fine_form: FineForm = "ce",
                 weights: TeachCLIPWeights | None = None, temperature: float = 1.0):
        super().__init__()
        _check_form(coarse_form, ("pear", "ce", "l1"), "coarse")
        _check_form(fine_form, ("ce", "pear", "l1"), "fine")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.coarse_form = coarse_form
        self.fine_form = fine_form
        self.weights = weights if weights is not None else official_weights(coarse_form)
        self.temperature = temperature

    def forward(self, student_logits: Tensor, frame_weights: Tensor, teacher_logits: Sequence[Tensor],
                teacher_relevances: Sequence[Tensor], frame_mask: Tensor | None = None) -> TeachCLIPLossParts:
        """student_logits `[B, B]`, frame_weights `[B, T]`, teacher_logits: one `[B, B]` per teacher,
        teacher_relevances: one `[B, T]` per teacher, frame_mask `[B, T]` or None -> `TeachCLIPLossParts`."""
        if not teacher_logits or not teacher_relevances:
            raise ValueError("TeachCLIP needs at least one teacher matrix and one teacher relevance")
        student = student_logits / self.temperature
        ground_truth = ground_truth_loss(student)
        coarse = torch.stack([coarse_distillation_loss(student, teacher / self.temperature, self.coarse_form)
                              for teacher in teacher_logits]).mean()
        fine = torch.stack([fine_distillation_loss(frame_weights, relevance, frame_mask, self.fine_form)
                            for relevance in teacher_relevances]).mean()
        total = self.weights.ground_truth * ground_truth + self.weights.coarse * coarse + self.weights.fine * fine
        return TeachCLIPLossParts(total=total, ground_truth=ground_truth, coarse=coarse, fine=fine)
