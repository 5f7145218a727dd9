"""TeachText (ICCV 2021): several text-encoder teachers teach one retrieval student, and the same teachers flag
noisy training captions.

The student's batch matrix `S` is `[B, B]`, rows = texts (one caption per video), columns = videos, matching pairs
on the diagonal. Each teacher gives a matrix of the same batch; a teacher with several modalities (experts) sums
their `text @ video^T` products; the teachers are averaged without weights, and the student is pulled to that mean
by SmoothL1 on top of its max-margin ranking loss. Values reproduce collaborative-experts@7eb3b9d
(`trainer/trainer.py:_train_epoch`, `model/loss.py:MaxMarginRankingLoss`), checked against
`golden_t2v/teachtext_losses.*`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MSRVTT_MARGIN = 0.09381161988446174
"""Ranking margin of the official MSR-VTT configs (configs/base_config.json, data_loader_msrvtt.json)."""


def teacher_similarity(modalities: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """One teacher's batch matrix: the sum over its modalities of `text @ video^T`.

    modalities: `(text [B, d] or [B, 1, d], video [B, d])` pairs (d may differ between modalities) -> `[B, B]`.
    """
    if not modalities:
        raise ValueError("a teacher needs at least one modality")
    return torch.stack([text.reshape(-1, text.shape[-1]) @ video.T for text, video in modalities]).sum(dim=0)


def mean_teacher_similarity(teacher_sims: Sequence[Tensor] | Tensor) -> Tensor:
    """Unweighted mean of N teachers' matrices: N tensors `[B, B]` (or one `[N, B, B]`) -> `[B, B]`."""
    stacked = teacher_sims if isinstance(teacher_sims, Tensor) else torch.stack(list(teacher_sims))
    if stacked.dim() != 3 or stacked.shape[0] == 0:
        raise ValueError(f"expected N >= 1 teacher matrices [N, B, B], got {tuple(stacked.shape)}")
    return stacked.mean(dim=0)


def max_margin_ranking_loss(sim: Tensor, margin: float = MSRVTT_MARGIN, fix_norm: bool = True) -> Tensor:
    """Bidirectional hinge ranking loss of collaborative-experts, `[B, B]` -> scalar.

    Terms `relu(margin - S[i,i] + S[i,j])` (text i against video j) and `relu(margin - S[i,i] + S[j,i])`
    (video i against text j). fix_norm=True (the official configs): mean over the 2 B (B - 1) terms with i != j;
    fix_norm=False: mean over all 2 B^2 terms, the diagonal's `relu(margin)` included.
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"ranking loss needs a square [B, B] matrix, got {tuple(sim.shape)}")
    positives = sim.diagonal()
    text_anchor = F.relu(margin - positives[:, None] + sim)
    video_anchor = F.relu(margin - positives[:, None] + sim.T)
    terms = torch.stack([text_anchor, video_anchor])
    if not fix_norm:
        return terms.mean()
    off_diagonal = ~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    return terms[:, off_diagonal].mean()


def teacher_distillation_loss(student_sim: Tensor, teacher_mean: Tensor) -> Tensor:
    """SmoothL1 (beta 1, mean over entries) from the student's `[B, B]` to the teachers' mean `[B, B]` (detached)."""
    if student_sim.shape != teacher_mean.shape:
        raise ValueError(f"student {tuple(student_sim.shape)} and teachers {tuple(teacher_mean.shape)} differ")
    return F.smooth_l1_loss(student_sim, teacher_mean.detach())


@dataclass(frozen=True)
class TeachTextLossParts:
    """The total TeachText loss and its terms (scalars)."""

    total: Tensor
    ranking: Tensor
    distillation: Tensor


class TeachTextLoss(nn.Module):
    """`ranking(S) + distillation_weight * SmoothL1(S, mean_n S_n)` (official: weight 1, margin `MSRVTT_MARGIN`,
    fix_norm True)."""

    def __init__(self, margin: float = MSRVTT_MARGIN, fix_norm: bool = True, distillation_weight: float = 1.0):
        super().__init__()
        self.margin = margin
        self.fix_norm = fix_norm
        self.distillation_weight = distillation_weight

    def forward(self, student_sim: Tensor, teacher_sims: Sequence[Tensor] | Tensor) -> TeachTextLossParts:
        """student_sim `[B, B]`, teacher_sims: N matrices `[B, B]` (or `[N, B, B]`) -> `TeachTextLossParts`."""
        ranking = max_margin_ranking_loss(student_sim, self.margin, self.fix_norm)
        distillation = teacher_distillation_loss(student_sim, mean_teacher_similarity(teacher_sims))
        return TeachTextLossParts(total=ranking + self.distillation_weight * distillation, ranking=ranking,
                                  distillation=distillation)


def caption_keep_mask(teacher_sims: Sequence[Tensor] | Tensor, caption_video: Tensor, max_rank: int = 100) -> Tensor:
    """Caption de-noising from teacher agreement: which training captions to keep.

    teacher_sims: N matrices `[C, V]` (or `[N, C, V]`): every training caption scored against every training video
    by each teacher; caption_video `[C]` int: the index of each caption's own video; -> `[C]` bool.

    Rule: average the teachers (as for distillation); a caption's rank is 1 + the number of videos the mean scores
    strictly higher than its own video. Captions ranked within `max_rank` are kept; of a video whose captions all
    fall outside, the best-ranked one is kept, so that every video can still be sampled. The per-video masks
    (TeachText's `caption_masks`) are the slices of the result for each video. The official repository ships
    only precomputed masks (`denoising_masks/denoise-less100.pkl`, `-less80`), not the code that made them: the
    rank threshold is this module's reading of those names and of the paper.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    mean_sim = mean_teacher_similarity(teacher_sims)
    caption_video = caption_video.long()
    if caption_video.shape != (mean_sim.shape[0],):
        raise ValueError(f"caption_video {tuple(caption_video.shape)} must be [C] with C = {mean_sim.shape[0]}")
    own = mean_sim.gather(1, caption_video[:, None])
    ranks = 1 + (mean_sim > own).sum(dim=1)
    keep = ranks <= max_rank
    for video in caption_video.unique():
        captions = (caption_video == video).nonzero().flatten()
        if not keep[captions].any():
            keep[captions[ranks[captions].argmin()]] = True
    return keep
