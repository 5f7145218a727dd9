"""TeachCLIP losses against the official values (golden_t2v/teachclip_losses.*), gradients and frame masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from dnsvr.training.distill.losses_teachclip import (
    TeachCLIPLoss,
    TeachCLIPWeights,
    coarse_distillation_loss,
    fine_distillation_loss,
    ground_truth_loss,
    official_weights,
    row_pearson,
)

COARSE_FORMS = ("pear", "ce", "l1")
FINE_FORMS = ("ce", "pear", "l1")
BETAS = {1.0: "", 0.5: "beta_0p5_"}
RTOL = 1e-5  # README "Tolerances": loss scalars, relative 1e-5
ATOL = 1e-7


@pytest.fixture(scope="module")
def golden(golden_t2v):
    with np.load(golden_t2v / "teachclip_losses.npz") as z:
        return {key: z[key] for key in z.files}


def tensor(golden, key: str) -> torch.Tensor:
    return torch.from_numpy(golden[key])


def assert_golden(value: torch.Tensor, golden, key: str) -> None:
    expected = float(golden[key])
    assert float(value) == pytest.approx(expected, rel=RTOL, abs=ATOL), key


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("beta", BETAS)
def test_ground_truth_loss_matches_official(golden, beta):
    assert_golden(ground_truth_loss(tensor(golden, "S") / beta), golden, BETAS[beta] + "gt")


@pytest.mark.parametrize(("form", "beta"), list(itertools.product(COARSE_FORMS, BETAS)))
def test_coarse_distillation_per_teacher_and_mean_match_official(golden, form, beta):
    student = tensor(golden, "S") / beta
    per_teacher = []
    for k in (1, 2):
        loss = coarse_distillation_loss(student, tensor(golden, f"S_T{k}") / beta, form)
        assert_golden(loss, golden, f"{BETAS[beta]}distill_{form}_T{k}")
        per_teacher.append(loss)
    assert_golden(torch.stack(per_teacher).mean(), golden, f"{BETAS[beta]}distill_{form}")


@pytest.mark.parametrize("form", FINE_FORMS)
def test_fine_distillation_per_teacher_and_mean_match_official(golden, form):
    per_teacher = []
    for k in (1, 2):
        loss = fine_distillation_loss(tensor(golden, "a"), tensor(golden, f"p_T{k}"), form=form)
        assert_golden(loss, golden, f"fine_{form}_T{k}")
        per_teacher.append(loss)
    assert_golden(torch.stack(per_teacher).mean(), golden, f"fine_{form}")


@pytest.mark.parametrize(("coarse", "fine", "beta"), list(itertools.product(COARSE_FORMS, FINE_FORMS, BETAS)))
def test_total_loss_matches_official_for_every_form_combination(golden, coarse, fine, beta):
    parts = TeachCLIPLoss(coarse, fine, temperature=beta)(
        tensor(golden, "S"), tensor(golden, "a"), [tensor(golden, "S_T1"), tensor(golden, "S_T2")],
        [tensor(golden, "p_T1"), tensor(golden, "p_T2")])
    prefix = BETAS[beta]
    assert_golden(parts.total, golden, f"{prefix}total_{coarse}_{fine}")
    assert_golden(parts.ground_truth, golden, f"{prefix}gt")
    assert_golden(parts.coarse, golden, f"{prefix}distill_{coarse}")
    assert_golden(parts.fine, golden, f"{prefix}fine_{fine}")


def test_golden_inputs_are_the_documented_softmaxes(golden):
    """a = softmax(a_logits); p_Tk = softmax_t(cos(sentence_i, frame_{i,t})) over all T slots."""
    np.testing.assert_allclose(golden["a"], softmax(golden["a_logits"]), atol=1e-6)
    for k in (1, 2):
        sentence, frames = golden[f"teacher{k}_sentence"], golden[f"teacher{k}_frames"]
        cos = np.einsum("bd,btd->bt", sentence / np.linalg.norm(sentence, axis=-1, keepdims=True),
                        frames / np.linalg.norm(frames, axis=-1, keepdims=True))
        np.testing.assert_allclose(golden[f"p_T{k}"], softmax(cos), atol=1e-6)


def test_official_weights_depend_on_the_coarse_form():
    assert official_weights("pear") == TeachCLIPWeights(0.2, 1.0, 2.0)
    assert official_weights("l1") == TeachCLIPWeights(0.2, 1.0, 2.0)
    assert official_weights("ce") == TeachCLIPWeights(1.0, 10.0, 1.0)


def test_custom_weights_replace_the_official_ones(golden):
    weights = TeachCLIPWeights(ground_truth=1.0, coarse=0.0, fine=0.0)
    parts = TeachCLIPLoss(weights=weights)(tensor(golden, "S"), tensor(golden, "a"), [tensor(golden, "S_T1")],
                                           [tensor(golden, "p_T1")])
    assert float(parts.total) == pytest.approx(float(golden["gt"]), rel=RTOL)


def test_ground_truth_loss_hand_computed():
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    rows = -np.log(np.exp(2) / (np.exp(2) + 1)) - np.log(0.5)
    cols = -np.log(np.exp(2) / (np.exp(2) + np.exp(1))) - np.log(np.exp(1) / (np.exp(0) + np.exp(1)))
    assert float(ground_truth_loss(logits)) == pytest.approx((rows / 2 + cols / 2) / 2, rel=1e-6)


def test_row_pearson_hand_computed():
    x = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    y = torch.tensor([[2.0, 4.0, 6.0], [3.0, 2.0, 1.0]])
    assert row_pearson(x, y).tolist() == pytest.approx([1.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert row_pearson(x, torch.tensor([[1.0, 2.0, -50.0], [1.0, 2.0, 3.0]]), mask).tolist() == pytest.approx(
        [1.0, 1.0])


def test_rejects_unknown_forms_and_non_square_ground_truth():
    with pytest.raises(ValueError, match="coarse form"):
        coarse_distillation_loss(torch.zeros(2, 2), torch.zeros(2, 2), "kl")
    with pytest.raises(ValueError, match="fine form"):
        TeachCLIPLoss(fine_form="kl")
    with pytest.raises(ValueError, match="square"):
        ground_truth_loss(torch.zeros(2, 3))


@pytest.mark.parametrize(("coarse", "fine"), list(itertools.product(COARSE_FORMS, FINE_FORMS)))
def test_an_optimizer_step_lowers_the_loss(coarse, fine):
    generator = torch.Generator().manual_seed(0)
    student = torch.nn.Parameter(torch.randn(4, 4, generator=generator))
    afa_logits = torch.nn.Parameter(torch.randn(4, 6, generator=generator))
    teachers = [3 * torch.randn(4, 4, generator=generator) for _ in range(2)]
    relevances = [torch.randn(4, 6, generator=generator).softmax(-1) for _ in range(2)]
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4, [1] * 5 + [0]])
    criterion = TeachCLIPLoss(coarse, fine)
    optimizer = torch.optim.SGD([student, afa_logits], lr=0.05)

    def loss() -> torch.Tensor:
        return criterion(student, afa_logits.softmax(-1), teachers, relevances, mask).total

    before = loss()
    optimizer.zero_grad()
    before.backward()
    assert student.grad.abs().sum() > 0 and afa_logits.grad.abs().sum() > 0
    padded, real = afa_logits.grad[~mask.bool()], afa_logits.grad[mask.bool()]
    assert padded.abs().max() < 1e-6 * real.abs().max()  # padded frames get no gradient (up to rounding)
    optimizer.step()
    assert float(loss().detach()) < float(before.detach())


# ---- frame masks: padded slots change nothing -------------------------------------------------------------------


@pytest.mark.parametrize("form", FINE_FORMS)
def test_an_all_real_mask_gives_the_official_value(golden, form):
    full = torch.ones_like(tensor(golden, "video_mask"))
    official = fine_distillation_loss(tensor(golden, "a"), tensor(golden, "p_T1"), form=form)
    masked = fine_distillation_loss(tensor(golden, "a"), tensor(golden, "p_T1"), full, form)
    assert float(masked) == pytest.approx(float(official), rel=1e-6)


def alone_fine_loss(golden, k: int, form: str) -> float:
    """The masked loss worked out in numpy from each video alone: softmaxes over its real frames only."""
    sentence, frames = golden[f"teacher{k}_sentence"], golden[f"teacher{k}_frames"]
    entries, correlations = [], []
    for i, length in enumerate(golden["lengths"]):
        a = softmax(golden["a_logits"][i, :length].astype(np.float64))
        s = sentence[i] / np.linalg.norm(sentence[i])
        f = frames[i, :length] / np.linalg.norm(frames[i, :length], axis=-1, keepdims=True)
        p = softmax((f @ s).astype(np.float64))
        if form == "ce":
            entries.extend(-p * np.log(a))
        elif form == "l1":
            d = np.abs(a - p)
            entries.extend(np.where(d < 1, 0.5 * d**2, d - 0.5))
        elif length >= 2:
            correlations.append(np.corrcoef(a, p)[0, 1])
    return float(np.mean(entries)) if form != "pear" else float(np.mean(1 - np.array(correlations)))


@pytest.mark.parametrize("form", FINE_FORMS)
def test_masked_fine_loss_equals_the_loss_of_each_video_alone(golden, form):
    for k in (1, 2):
        masked = fine_distillation_loss(tensor(golden, "a"), tensor(golden, f"p_T{k}"), tensor(golden, "video_mask"),
                                        form)
        assert float(masked) == pytest.approx(alone_fine_loss(golden, k, form), rel=1e-5)


@pytest.mark.parametrize("form", FINE_FORMS)
def test_padded_slots_change_nothing(golden, form):
    mask = tensor(golden, "video_mask").bool()
    a, p = tensor(golden, "a"), tensor(golden, "p_T1")
    reference = fine_distillation_loss(a, p, mask, form)

    noise = torch.rand(a.shape, generator=torch.Generator().manual_seed(1))
    a_changed = torch.where(mask, a, noise)
    p_changed = torch.where(mask, p, noise.flip(0))
    assert float(fine_distillation_loss(a_changed, p_changed, mask, form)) == pytest.approx(float(reference),
                                                                                            rel=1e-6)

    extra = torch.full((a.shape[0], 3), 0.3)
    longer = fine_distillation_loss(torch.cat([a, extra], 1), torch.cat([p, extra], 1),
                                    torch.cat([mask, torch.zeros_like(extra, dtype=torch.bool)], 1), form)
    assert float(longer) == pytest.approx(float(reference), rel=1e-6)


def test_masked_pearson_skips_one_frame_videos():
    a = torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    p = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.45, 0.45]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    only_first = fine_distillation_loss(a[:1], p[:1], form="pear")
    assert float(fine_distillation_loss(a, p, mask, "pear")) == pytest.approx(float(only_first), rel=1e-6)
    assert float(fine_distillation_loss(a[1:], p[1:], mask[1:], "pear")) == 0.0


def test_mask_rejects_rows_without_real_frames():
    with pytest.raises(ValueError, match="at least one real frame"):
        fine_distillation_loss(torch.full((2, 3), 1 / 3), torch.full((2, 3), 1 / 3),
                               torch.tensor([[1, 1, 0], [0, 0, 0]]))
