"""CMGSD losses against margins and losses worked out by hand (plain Python / numpy) on 2-3 item batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dnsvr.training.distill.losses_cmgsd import (
    CMGSDLoss,
    DynamicTeacherHead,
    adaptive_margins,
    intra_modal_distances,
    lambda_schedule,
    triplet_ranking_loss,
)

SIM_3 = [[0.9, 0.5, 0.2],
         [0.6, 0.4, 0.7],
         [0.1, 0.3, 0.8]]


def hinge_terms(sim: list[list[float]], margin) -> tuple[list[float], list[float]]:
    """Both directions' hinge terms, with loops: text anchor i / video j, video anchor i / text j."""
    size = len(sim)
    m = (lambda i, j: margin) if isinstance(margin, float) else (lambda i, j: margin[i][j])
    text_anchor = [max(0.0, m(i, j) + sim[i][j] - sim[i][i]) for i in range(size) for j in range(size) if i != j]
    video_anchor = [max(0.0, m(i, j) + sim[j][i] - sim[i][i]) for i in range(size) for j in range(size) if i != j]
    return text_anchor, video_anchor


def hand_loss(sim, margin, reduction: str = "mean") -> float:
    text_anchor, video_anchor = hinge_terms(sim, margin)
    if reduction == "sum":
        return sum(text_anchor) + sum(video_anchor)
    return sum(text_anchor) / len(text_anchor) + sum(video_anchor) / len(video_anchor)


def hand_margins(features: np.ndarray, alpha: float, beta: float) -> list[list[float]]:
    """z-score margins over the off-diagonal cosine distances (population std), with numpy."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    distances = 1.0 - unit @ unit.T
    size = len(features)
    pairs = np.array([distances[i, j] for i in range(size) for j in range(size) if i != j])
    mean, std = pairs.mean(), pairs.std()
    return [[0.0 if i == j else max(0.0, beta * (distances[i, j] - mean) / std + alpha) for j in range(size)]
            for i in range(size)]


def test_fixed_margin_triplet_loss_two_items():
    sim = torch.tensor([[0.9, 0.3], [0.8, 0.5]])
    # text 0 / video 1: .2 + .3 - .9 < 0 -> 0;  text 1 / video 0: .2 + .8 - .5 = .5
    # video 0 / text 1: .2 + .8 - .9 = .1;      video 1 / text 0: .2 + .3 - .5 = 0
    assert float(triplet_ranking_loss(sim, 0.2)) == pytest.approx((0 + 0.5) / 2 + (0.1 + 0) / 2)
    assert float(triplet_ranking_loss(sim, 0.2, "sum")) == pytest.approx(0.6)
    sim_3 = torch.tensor(SIM_3)
    assert float(triplet_ranking_loss(sim_3)) == pytest.approx(hand_loss(SIM_3, 0.2))
    assert float(triplet_ranking_loss(sim_3, 0.2, "sum")) == pytest.approx(hand_loss(SIM_3, 0.2, "sum"))


def test_adaptive_margins_closed_form_three_items():
    """v0 = (1, 0), v1 = (0, 1), v2 = (1, 1): d01 = 1, d02 = d12 = 1 - 1/sqrt2.
    Off-diagonal mean (1 + 2 d02) / 3, population std sqrt2 / 3 * (1 / sqrt2) = 1/3:
    z01 = sqrt2, z02 = z12 = -1/sqrt2."""
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    distances = intra_modal_distances(features)
    r = 1 / math.sqrt(2)
    expected_distances = [[0, 1, 1 - r], [1, 0, 1 - r], [1 - r, 1 - r, 0]]
    np.testing.assert_allclose(distances.numpy(), expected_distances, atol=1e-6)

    margins = adaptive_margins(distances, alpha=0.2, beta=1.0)
    expected = [[0, math.sqrt(2) + 0.2, 0], [math.sqrt(2) + 0.2, 0, 0], [0, 0, 0]]  # -1/sqrt2 + .2 < 0 -> 0
    np.testing.assert_allclose(margins.numpy(), expected, atol=1e-5)

    margins = adaptive_margins(distances, alpha=0.2, beta=0.2)
    low = 0.2 - 0.2 * r
    expected = [[0, 0.2 * math.sqrt(2) + 0.2, low], [0.2 * math.sqrt(2) + 0.2, 0, low], [low, low, 0]]
    np.testing.assert_allclose(margins.numpy(), expected, atol=1e-5)


def test_two_items_have_no_spread_so_the_margin_is_alpha():
    margins = adaptive_margins(intra_modal_distances(torch.tensor([[1.0, 2.0], [3.0, -1.0]])), alpha=0.2)
    np.testing.assert_allclose(margins.numpy(), [[0.0, 0.2], [0.2, 0.0]], atol=1e-7)


def test_triplet_loss_with_a_margin_matrix_three_items():
    features = np.array([[1.0, 0.2, 0.0], [0.1, 1.0, 0.3], [0.5, 0.5, 0.9]])
    margins = hand_margins(features, alpha=0.2, beta=0.5)
    computed = adaptive_margins(intra_modal_distances(torch.tensor(features, dtype=torch.float32)), 0.2, 0.5)
    np.testing.assert_allclose(computed.numpy(), margins, atol=1e-5)
    assert float(triplet_ranking_loss(torch.tensor(SIM_3), computed)) == pytest.approx(hand_loss(SIM_3, margins),
                                                                                       abs=1e-5)


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_total_cmgsd_loss_three_items(weight):
    video_dynamic = np.array([[1.0, 0.0, 0.5], [0.2, 1.0, 0.0], [0.9, 0.1, 0.4]])
    text_dynamic = np.array([[0.3, 1.0, 0.0], [1.0, 0.0, 0.2], [0.4, 0.4, 1.0]])
    text_static = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    terms = {
        "fixed": hand_loss(SIM_3, 0.2),
        "dynamic_video": hand_loss(SIM_3, hand_margins(video_dynamic, 0.2, 1.0)),
        "dynamic_text": hand_loss(SIM_3, hand_margins(text_dynamic, 0.2, 1.0)),
        "static_text": hand_loss(SIM_3, hand_margins(text_static, 0.2, 1.0)),
    }
    expected = (terms["fixed"] + weight * (terms["dynamic_video"] + terms["dynamic_text"])
                + (1 - weight) * terms["static_text"])

    def as_tensor(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32)

    parts = CMGSDLoss()(torch.tensor(SIM_3), as_tensor(video_dynamic), as_tensor(text_dynamic),
                        as_tensor(text_static), weight)
    assert float(parts.total) == pytest.approx(expected, abs=1e-5)
    for name, value in terms.items():
        assert float(getattr(parts, name)) == pytest.approx(value, abs=1e-5), name


def test_sum_reduction_is_the_mean_times_the_negatives_per_direction():
    sim = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    margins = adaptive_margins(intra_modal_distances(torch.randn(5, 8, generator=torch.Generator().manual_seed(1))))
    assert float(triplet_ranking_loss(sim, margins, "sum")) == pytest.approx(
        20 * float(triplet_ranking_loss(sim, margins, "mean")), rel=1e-5)


def test_lambda_schedule_endpoints_and_midpoint():
    assert lambda_schedule(2, start_epoch=2, end_epoch=6) == 0.0
    assert lambda_schedule(4, start_epoch=2, end_epoch=6) == 0.5
    assert lambda_schedule(6, start_epoch=2, end_epoch=6) == 1.0
    assert lambda_schedule(0, start_epoch=2, end_epoch=6) == 0.0
    assert lambda_schedule(9.5, start_epoch=2, end_epoch=6) == 1.0
    assert lambda_schedule(2.5, start_epoch=2, end_epoch=6) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="after"):
        lambda_schedule(1, start_epoch=3, end_epoch=3)


def test_dynamic_teacher_head_layers_and_unit_outputs():
    head = DynamicTeacherHead(in_features=12)
    layers = list(head.project)
    assert [type(layer) for layer in layers] == [torch.nn.ReLU, torch.nn.Dropout, torch.nn.Linear]
    assert layers[1].p == 0.1 and (layers[2].in_features, layers[2].out_features) == (12, 256)
    features = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))
    head.eval()
    out = head(features)
    assert out.shape == (3, 256)
    np.testing.assert_allclose(out.norm(dim=-1).detach().numpy(), 1.0, atol=1e-6)
    assert torch.equal(out, head(features))


@pytest.mark.parametrize("detach", [True, False])
def test_gradients_reach_the_student_and_the_head_only_without_detach(detach):
    generator = torch.Generator().manual_seed(0)
    sim = torch.nn.Parameter(torch.randn(4, 4, generator=generator) * 0.3)
    video_head, text_head = DynamicTeacherHead(6), DynamicTeacherHead(5)
    video_features, text_features = torch.randn(4, 6, generator=generator), torch.randn(4, 5, generator=generator)
    text_static = torch.randn(4, 7, generator=generator)
    criterion = CMGSDLoss(detach_margins=detach)
    optimizer = torch.optim.SGD([sim], lr=0.1)

    def loss() -> torch.Tensor:
        return criterion(sim, video_head(video_features), text_head(text_features), text_static, 0.5).total

    before = loss()
    optimizer.zero_grad()
    before.backward()
    head_grad = video_head.project[2].weight.grad
    assert (head_grad is None) == detach
    optimizer.step()
    assert float(loss().detach()) < float(before.detach())


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="B >= 2"):
        triplet_ranking_loss(torch.zeros(1, 1))
    with pytest.raises(ValueError, match="reduction"):
        triplet_ranking_loss(torch.zeros(2, 2), reduction="max")
    with pytest.raises(ValueError, match="dynamic_weight"):
        CMGSDLoss()(torch.zeros(2, 2), torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3), 1.5)
