"""TeachText losses against the official values (golden_t2v/teachtext_losses.*) and caption de-noising on a
hand-made case."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from dnsvr.training.distill.losses_teachtext import (
    MSRVTT_MARGIN,
    TeachTextLoss,
    caption_keep_mask,
    max_margin_ranking_loss,
    mean_teacher_similarity,
    teacher_distillation_loss,
    teacher_similarity,
)

RTOL = 1e-5  # README "Tolerances": loss scalars, relative 1e-5


@pytest.fixture(scope="module")
def golden(golden_t2v):
    with np.load(golden_t2v / "teachtext_losses.npz") as z:
        arrays = {key: z[key] for key in z.files}
    arrays["teachers"] = json.loads((golden_t2v / "teachtext_losses.json").read_text())["teachers"]
    return arrays


def teacher_matrices(golden) -> list[torch.Tensor]:
    return [teacher_similarity([(torch.from_numpy(golden[f"teacher{t}_{mod}_text"]),
                                 torch.from_numpy(golden[f"teacher{t}_{mod}_video"])) for mod in modalities])
            for t, modalities in enumerate(golden["teachers"], start=1)]


def test_margin_is_the_msrvtt_config_value(golden):
    assert float(golden["margin"]) == pytest.approx(MSRVTT_MARGIN, rel=1e-7)


def test_teacher_matrices_and_their_mean_match_the_trainer(golden):
    sims = teacher_matrices(golden)
    np.testing.assert_allclose(torch.stack(sims).numpy(), golden["teacher_sims"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean_teacher_similarity(sims).numpy(), golden["teacher_agg"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean_teacher_similarity(torch.from_numpy(golden["teacher_sims"])).numpy(),
                               golden["teacher_agg"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("fix_norm", "suffix"), [(True, ""), (False, "_nofix")])
def test_losses_match_official(golden, fix_norm, suffix):
    student = torch.from_numpy(golden["S"])
    parts = TeachTextLoss(margin=float(golden["margin"]), fix_norm=fix_norm)(student, teacher_matrices(golden))
    assert float(parts.ranking) == pytest.approx(float(golden[f"mmr{suffix}"]), rel=RTOL)
    assert float(parts.distillation) == pytest.approx(float(golden[f"distil{suffix}"]), rel=RTOL)
    assert float(parts.total) == pytest.approx(float(golden[f"total{suffix}"]), rel=RTOL)
    distil = teacher_distillation_loss(student, torch.from_numpy(golden["teacher_agg"]))
    assert float(distil) == pytest.approx(float(golden[f"distil{suffix}"]), rel=RTOL)


def test_ranking_loss_hand_computed():
    sim = torch.tensor([[0.5, 0.45], [0.3, 0.2]])
    # text anchors: relu(.1 - .5 + .45) = .05, relu(.1 - .2 + .3) = .2
    # video anchors: relu(.1 - .5 + .3) = 0, relu(.1 - .2 + .45) = .35
    assert float(max_margin_ranking_loss(sim, 0.1)) == pytest.approx(0.6 / 4)
    assert float(max_margin_ranking_loss(sim, 0.1, fix_norm=False)) == pytest.approx((0.6 + 4 * 0.1) / 8)


def test_distillation_hand_computed_and_weight():
    student, teachers = torch.tensor([[0.0, 2.0]]), [torch.tensor([[0.5, 0.0]]), torch.tensor([[0.5, 0.0]])]
    # |d| = .5 -> .5 * .25 = .125; |d| = 2 -> 2 - .5 = 1.5
    assert float(teacher_distillation_loss(student, mean_teacher_similarity(teachers))) == pytest.approx(0.8125)
    sim = torch.tensor([[0.5, 0.45], [0.3, 0.2]])
    parts = TeachTextLoss(margin=0.1, distillation_weight=2.0)(sim, [sim + 0.5])
    assert float(parts.total) == pytest.approx(0.15 + 2 * 0.125)


def test_an_optimizer_step_lowers_the_loss(golden):
    student = torch.nn.Parameter(torch.from_numpy(golden["S"]).clone())
    criterion = TeachTextLoss()
    teachers = teacher_matrices(golden)
    optimizer = torch.optim.SGD([student], lr=0.5)
    before = criterion(student, teachers).total
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    assert float(criterion(student, teachers).total.detach()) < float(before.detach())


def test_caption_keep_mask_hand_made_case():
    caption_video = torch.tensor([0, 0, 1, 1, 2])
    mean = torch.tensor([
        [0.9, 0.2, 0.1],   # video 0, rank 1
        [0.3, 0.6, 0.1],   # video 0, rank 2
        [0.5, 0.4, 0.45],  # video 1, rank 3
        [0.2, 0.3, 0.7],   # video 1, rank 2
        [0.1, 0.2, 0.8],   # video 2, rank 1
    ])
    disagreement = torch.zeros(5, 3)
    disagreement[1] = torch.tensor([0.0, 0.5, 0.0])  # teacher 1 ranks caption 1 second, teacher 2 first
    teachers = [mean + disagreement, mean - disagreement]
    # rank <= 1: captions 0 and 4; video 1 keeps its best caption (3) although it is ranked 2
    assert caption_keep_mask(teachers, caption_video, max_rank=1).tolist() == [True, False, False, True, True]
    assert caption_keep_mask(teachers, caption_video, max_rank=2).tolist() == [True, True, False, True, True]
    assert caption_keep_mask(torch.stack(teachers), caption_video, max_rank=3).all()


def test_caption_keep_mask_counts_ties_in_the_captions_favour():
    teachers = [torch.tensor([[0.5, 0.5], [0.2, 0.9]])]
    assert caption_keep_mask(teachers, torch.tensor([0, 0]), max_rank=1).tolist() == [True, False]


def test_caption_keep_mask_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_rank"):
        caption_keep_mask([torch.zeros(2, 2)], torch.tensor([0, 1]), max_rank=0)
    with pytest.raises(ValueError, match="caption_video"):
        caption_keep_mask([torch.zeros(2, 2)], torch.tensor([0, 1, 1]))
