"""DnS training objectives against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from dnsvr.training.distill.losses import (
    coarse_targets,
    distillation_loss,
    selector_labels,
    selector_loss,
    similarity_regularization,
    total_student_loss,
)


def test_distillation_loss_is_mean_absolute_difference():
    student = torch.tensor([0.5, -0.25, 1.0, 0.0])
    teacher = torch.tensor([0.0, 0.25, 1.0, -1.0])
    assert float(distillation_loss(student, teacher)) == pytest.approx((0.5 + 0.5 + 0.0 + 1.0) / 4)


def test_distillation_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        distillation_loss(torch.zeros(3), torch.zeros(4))


def test_similarity_regularization_sums_the_excess_outside_minus_one_to_one():
    sim = torch.tensor([[[-1.5, 0.3], [2.0, 1.0]]])
    assert float(similarity_regularization(sim)) == pytest.approx(0.5 + 1.0)
    mask = torch.tensor([[[True, True], [False, True]]])
    assert float(similarity_regularization(sim, mask)) == pytest.approx(0.5)
    assert float(similarity_regularization(torch.rand(2, 5, 5) * 2 - 1)) == 0.0


def test_total_student_loss_weights_the_regulariser():
    assert float(total_student_loss(torch.tensor(0.2), torch.tensor(30.0), 1e-3)) == pytest.approx(0.23)
    assert float(total_student_loss(torch.tensor(0.2), None, 1e-3)) == pytest.approx(0.2)


def test_coarse_targets_map_minus_one_one_to_zero_one():
    assert coarse_targets(torch.tensor([-1.0, 0.0, 1.0, 0.5])).tolist() == [0.0, 0.5, 1.0, 0.75]


def test_selector_labels_mark_pairs_where_fine_and_coarse_disagree():
    fine = torch.tensor([1.0, 0.0, -1.0, 0.6])  # mapped: 1.0, 0.5, 0.0, 0.8
    coarse = torch.tensor([0.9, 0.9, 0.1, 0.5])
    assert selector_labels(fine, coarse, threshold=0.2).tolist() == [0.0, 1.0, 0.0, 1.0]


def test_selector_loss_is_binary_cross_entropy():
    probabilities = torch.tensor([[0.9], [0.2]])
    labels = torch.tensor([1.0, 0.0])
    expected = -(torch.log(torch.tensor(0.9)) + torch.log(torch.tensor(0.8))) / 2
    assert float(selector_loss(probabilities, labels)) == pytest.approx(float(expected), rel=1e-6)
