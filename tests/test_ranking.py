"""The DnS ranking contract: selector rows, the fine->score map, how many and which pairs a policy picks, merges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dnsvr.training.ranking import (
    RerankPolicy,
    ScoreCalibration,
    cascade_fine,
    disagreement,
    fine_to_unit,
    fraction_count,
    fuse,
    merge_fine,
    positions_moved,
    ranking_order,
    selector_rows,
    usable_fusions,
)


@pytest.mark.parametrize(
    ("text", "mode", "value"),
    [("0.1", "fraction", 0.1), ("fraction:0.25", "fraction", 0.25), ("threshold:0.5", "threshold", 0.5),
     ("count:20", "count", 20.0), ("none", "none", 0.0), ("", "fraction", 0.1), (None, "fraction", 0.1),
     (0.3, "fraction", 0.3), ("COUNT:3", "count", 3.0)],
)
def test_policy_parse(text, mode, value):
    policy = RerankPolicy.parse(text)
    assert (policy.mode, policy.value) == (mode, value)
    assert RerankPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize(
    ("text", "policy"),
    [("0.05,fusion:cascade", RerankPolicy("fraction", 0.05, "cascade")),
     ("count:20, fusion:calibrated", RerankPolicy("count", 20, "calibrated")),
     ("none,fusion:cascade", RerankPolicy("none", 0.0, "cascade")),
     ("fraction:0.1,fusion:mix", RerankPolicy())],
)
def test_policy_parse_with_fusion(text, policy):
    assert RerankPolicy.parse(text) == policy
    assert RerankPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize(("text", "policy"), [
    (None, RerankPolicy("fraction", 0.1, "cascade")), ("", RerankPolicy("fraction", 0.1, "cascade")),
    (0.2, RerankPolicy("fraction", 0.2, "cascade")), ("none", RerankPolicy("none", 0.0, "cascade")),
    ("count:3", RerankPolicy("count", 3, "cascade")), ("0.05,fusion:mix", RerankPolicy("fraction", 0.05, "mix")),
])
def test_a_policy_naming_no_fusion_takes_the_packs_default(text, policy):
    assert RerankPolicy.parse(text, default_fusion="cascade") == policy
    assert RerankPolicy.parse(str(policy), default_fusion="calibrated") == policy  # spelled out: no default needed
    assert str(RerankPolicy()) == "fraction:0.1,fusion:mix"


@pytest.mark.parametrize("text", ["1.5", "fraction:-0.1", "count:2.5", "count:-1", "threshold:2", "top:3",
                                  "abc", "fraction:nan", "0.1,fusion:average", "0.1,cascade", "0.1,mode:mix"])
def test_policy_rejects_bad_values(text):
    with pytest.raises(ValueError, match="re-rank"):
        RerankPolicy.parse(text)


def test_policy_choose_orders_by_selector_score():
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1], np.float32)
    assert RerankPolicy("fraction", 0.4).choose(scores).tolist() == [1, 3]  # floor(0.4 * 5) = 2, ties stable
    assert RerankPolicy("fraction", 0.1).choose(scores).tolist() == []
    assert RerankPolicy("fraction", 1.0).choose(scores).tolist() == [1, 3, 2, 0, 4]
    assert RerankPolicy("count", 3).choose(scores).tolist() == [1, 3, 2]
    assert RerankPolicy("count", 10).choose(scores).tolist() == [1, 3, 2, 0, 4]
    assert RerankPolicy("threshold", 0.5).choose(scores).tolist() == [1, 3, 2]
    assert RerankPolicy("none", 0).choose(scores).tolist() == []
    assert RerankPolicy("count", 2).choose(np.zeros(0, np.float32)).tolist() == []


@pytest.mark.parametrize(("fraction", "candidates", "count"),
                         [(0.7, 10, 7), (0.1, 30, 3), (0.29, 100, 29), (0.05, 19, 0), (0.5, 5, 2), (1.0, 9, 9),
                          (0.0, 9, 0)])
def test_fraction_count_is_the_floor_of_the_decimal_product(fraction, candidates, count):
    assert fraction_count(fraction, candidates) == count  # int(0.7 * 10) would be 6


def test_selector_rows_numpy_and_torch_agree():
    rows = selector_rows(0.7, np.array([0.1, 0.2]), np.array([0.9, 0.8]))
    assert rows.dtype == np.float32 and rows.shape == (2, 3)
    np.testing.assert_allclose(rows, [[0.7, 0.1, 0.9], [0.7, 0.2, 0.8]], rtol=1e-6)
    per_pair = selector_rows(torch.tensor([[0.7], [0.6]]), torch.tensor([[0.1], [0.2]]), np.array([0.9, 0.8]))
    assert isinstance(per_pair, torch.Tensor) and per_pair.shape == (2, 3)
    np.testing.assert_allclose(per_pair.numpy(), [[0.7, 0.1, 0.9], [0.6, 0.2, 0.8]], rtol=1e-6)
    with pytest.raises(ValueError, match="selector scalars"):
        selector_rows(0.7, np.zeros(3), np.zeros(2))


def test_fine_to_unit_and_disagreement_keep_types():
    assert fine_to_unit(-1.0) == 0.0 and fine_to_unit(1.0) == 1.0
    unit = fine_to_unit(np.array([1.0, -1.0, 0.0], np.float32))
    assert unit.dtype == np.float32 and unit.tolist() == [1.0, 0.0, 0.5]
    assert fine_to_unit(torch.tensor([0.5])).tolist() == [0.75]
    assert disagreement(np.array([1.0, -1.0]), np.array([0.75, 0.25])).tolist() == [0.25, 0.25]


def test_merge_fine_replaces_the_picked_scores():
    coarse = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    merged = merge_fine(coarse, np.array([1, 2]), np.array([1.0, -1.0]))
    np.testing.assert_allclose(merged, [0.9, 1.0, 0.0, 0.6])
    np.testing.assert_allclose(coarse, [0.9, 0.8, 0.7, 0.6])  # the input is not changed
    with pytest.raises(ValueError, match="fine similarities"):
        merge_fine(coarse, np.array([0]), np.zeros(0))


def test_cascade_reorders_the_block_within_its_ranks():
    coarse = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    cascaded = cascade_fine(coarse, np.array([0, 1, 2]), np.array([-0.5, 0.9, 0.1]))
    np.testing.assert_allclose(cascaded, [0.7, 0.9, 0.8, 0.6])  # fine order 1, 2, 0 takes ranks 1-3
    assert ranking_order(cascaded).tolist() == [1, 2, 0, 3]


def test_ranking_order_is_stable():
    assert ranking_order(np.array([0.5, 0.7, 0.5, 0.7])).tolist() == [1, 3, 0, 2]


def test_cascade_of_a_selector_pick_keeps_the_unpicked_ranks():
    coarse = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    cascaded = cascade_fine(coarse, np.array([3, 0]), np.array([0.9, 0.2]))  # picked: ranks 0 and 3
    np.testing.assert_allclose(cascaded, [0.6, 0.8, 0.7, 0.9, 0.5])
    assert ranking_order(cascaded).tolist() == [3, 1, 2, 0, 4]


def test_fusions_on_a_hand_made_ranking():
    """A confident copy (coarse 0.95) is re-ranked with a fine score on a lower scale; a distractor (0.90) is not:
    mixing drops the copy below it, the cascade and the calibrated mix keep it first."""
    coarse = np.array([0.95, 0.90, 0.40], np.float32)
    picked, fine = np.array([0]), np.array([0.70], np.float32)  # fine_to_unit(0.70) = 0.85 < 0.90
    calibration = ScoreCalibration((-1.0, 0.0, 0.6, 1.0), (0.0, 0.5, 0.9, 1.0))
    assert ranking_order(fuse("mix", coarse, picked, fine)).tolist() == [1, 0, 2]
    assert ranking_order(fuse("cascade", coarse, picked, fine)).tolist() == [0, 1, 2]
    calibrated = fuse("calibrated", coarse, picked, fine, calibration)
    np.testing.assert_allclose(calibrated, [0.925, 0.90, 0.40], rtol=1e-6)
    with pytest.raises(ValueError, match="has none"):
        fuse("calibrated", coarse, picked, fine)
    with pytest.raises(ValueError, match="fusion"):
        fuse("average", coarse, picked, fine)


def test_calibration_fit_is_monotone_and_maps_onto_the_coarse_scale():
    rng = np.random.default_rng(0)
    fine = rng.uniform(-1, 1, 500)
    coarse = np.clip(0.3 + 0.6 * (fine + 1) / 2 + rng.normal(0, 0.02, 500), 0, 1)
    calibration = ScoreCalibration.fit(fine, coarse)
    assert len(calibration.fine) <= 33 and np.all(np.diff(calibration.coarse) >= 0)
    mapped = calibration(np.array([-1.0, 0.0, 1.0]))
    assert mapped.dtype == np.float32
    np.testing.assert_allclose(mapped, [0.3, 0.6, 0.9], atol=0.05)
    assert ScoreCalibration.from_dict(calibration.to_dict()) == calibration
    inverted = ScoreCalibration.fit(fine, 1 - coarse)  # a map that cannot rise is flat, never decreasing
    assert np.all(np.diff(inverted.coarse) >= 0)


@pytest.mark.parametrize(("fine", "coarse", "match"),
                         [((0.0,), (0.5,), ">= 2 knots"), ((0.0, 0.0), (0.1, 0.2), "increase"),
                          ((0.0, 1.0), (0.5, 0.4), "increase"), ((0.0, float("nan")), (0.1, 0.2), "finite")])
def test_calibration_rejects_bad_knots(fine, coarse, match):
    with pytest.raises(ValueError, match=match):
        ScoreCalibration(fine, coarse)
    with pytest.raises(ValueError, match="calibration must be"):
        ScoreCalibration.from_dict({"fine": [0.0, 1.0]})


def test_positions_moved_counts_the_ranks_passed():
    coarse = np.array([0.9, 0.8, 0.7, 0.6])
    rescored = np.array([0.65, 0.8, 0.95, 0.61])  # 0.9 -> 0.65 passes 0.8 and 0.7; 0.7 -> 0.95 passes 0.9, 0.8
    assert positions_moved(coarse, rescored).tolist() == [2, 0, 2, 0]
    assert positions_moved(coarse, coarse).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="re-scored"):
        positions_moved(coarse, rescored[:2])


def test_usable_fusions_need_a_calibration_for_calibrated():
    assert usable_fusions(None) == ("mix", "cascade")
    assert usable_fusions(ScoreCalibration((-1.0, 1.0), (0.0, 1.0))) == ("mix", "cascade", "calibrated")
