"""AP definitions and the official protocols on hand-made rankings whose AP is computed by hand."""

from __future__ import annotations

import itertools
import math
import pickle
from collections import OrderedDict

import pytest
from dnsvr.training.evaluation.protocols import (
    EVVE,
    FIVR,
    SVD,
    CCWebVideo,
    average_precision,
    load_annotation_pickle,
    rank_targets,
    rerank_selected,
    threshold_average_precision,
    trapezoid_average_precision,
)


def test_average_precision_by_hand():
    # positives at ranks 1, 3, 5: (1/1 + 2/3 + 3/5) / 3 = 0.755556
    assert average_precision(list("abcde"), {"a", "c", "e"}) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # perfect ranking
    assert average_precision(list("abc"), {"a", "b"}) == pytest.approx(1.0)


def test_average_precision_missing_positive_counts_as_zero():
    # z is a positive never retrieved: (1/1 + 2/3 + 0) / 3 = 0.555556 (FIVR's denominator)
    assert average_precision(list("abc"), {"a", "c", "z"}) == pytest.approx((1 + 2 / 3) / 3)
    # the same through an explicit denominator
    assert average_precision(list("abc"), {"a", "c"}, num_positives=3) == pytest.approx((1 + 2 / 3) / 3)


def test_average_precision_empty_positive_set_is_nan():
    assert math.isnan(average_precision(list("abc"), set()))
    assert math.isnan(average_precision([], set()))
    assert average_precision([], {"a"}) == 0.0


def test_average_precision_ties_are_averaged_over_orderings():
    # a, b tied; b positive: b first -> AP 1, a first -> AP 1/2; expected 0.75
    assert average_precision(["a", "b"], {"b"}, scores=[0.5, 0.5]) == pytest.approx(0.75)
    # x (0.9, +), then y(+), z(-), w(+) tied at 0.5, v (0.1, -); positives x, y, w.
    # the negative z among the three tied slots (ranks 2, 3, 4):
    #   z at 2: positives at 1, 3, 4 -> (1 + 2/3 + 3/4) / 3 = 0.805556
    #   z at 3: positives at 1, 2, 4 -> (1 + 1 + 3/4) / 3 = 0.916667
    #   z at 4: positives at 1, 2, 3 -> 1
    # expected: (0.805556 + 0.916667 + 1) / 3 = 0.907407
    ids, scores = ["x", "y", "z", "w", "v"], [0.9, 0.5, 0.5, 0.5, 0.1]
    expected = ((1 + 2 / 3 + 3 / 4) / 3 + (1 + 1 + 3 / 4) / 3 + 1) / 3
    assert average_precision(ids, {"x", "y", "w"}, scores=scores) == pytest.approx(expected)
    # brute force over every ordering of the tied group gives the same number
    brute = [average_precision(["x", *perm, "v"], {"x", "y", "w"}) for perm in itertools.permutations("yzw")]
    assert sum(brute) / len(brute) == pytest.approx(expected)


def test_average_precision_rejects_unsorted_scores():
    with pytest.raises(ValueError, match="non-increasing"):
        average_precision(["a", "b"], {"a"}, scores=[0.1, 0.9])


def test_rank_targets_orders_and_rejects_nan():
    assert rank_targets({"b": 0.5, "a": 0.5, "c": 0.9}) == (["c", "a", "b"], [0.9, 0.5, 0.5])
    with pytest.raises(ValueError, match="finite"):
        rank_targets({"a": float("nan")})


def test_trapezoid_average_precision_by_hand():
    # 2 positives found at ranks 0 and 2; recall step 1/2:
    # first: precision 1 before, 1/1 after -> 1 * 0.5 = 0.5
    # second: 1/2 before, 2/3 after -> (1/2 + 2/3) / 2 * 0.5 = 0.291667
    assert trapezoid_average_precision([0, 2], 2) == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    assert trapezoid_average_precision([], 3) == 0.0
    assert trapezoid_average_precision([0], 0) == 0.0


def test_threshold_average_precision_by_hand():
    # scikit-learn's doc example: sorted 0.8(+) 0.4(-) 0.35(+) 0.1(-)
    # thresholds: P=1 R=1/2, P=1/2 R=1/2, P=2/3 R=1, P=1/2 R=1 -> 1/2 * 1 + 1/2 * 2/3 = 0.833333
    assert threshold_average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    # a tie forms one threshold: {0.5: +, -} -> P=1/2 R=1/2; 0.2(+) -> P=2/3 R=1: 1/4 + 1/3 = 0.583333
    assert threshold_average_precision([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(1 / 4 + 1 / 3)
    assert math.isnan(threshold_average_precision([0, 0], [0.1, 0.2]))


def fivr_fixture() -> FIVR:
    annotation = {
        "q1": {"ND": ["a"], "DS": ["b"], "CS": ["c"], "IS": ["d"], "DA": ["c"]},
        "q2": {"ND": ["e"]},
    }
    return FIVR(
        annotation, queries=["q1", "q2"], database=["a", "b", "c", "d", "e", "q1", "q2"], version="5k"
    )


def test_fivr_tasks_by_hand():
    fivr = fivr_fixture()
    # q1 itself and x (not in the database) are removed: ranking e, a, c, b, d
    sims = {"q1": {"q1": 1.0, "x": 0.95, "e": 0.9, "a": 0.8, "c": 0.7, "b": 0.6, "d": 0.5}}
    metrics = fivr.evaluate(sims, tasks=("DSVR", "CSVR", "ISVR", "DAVR"))
    # DSVR {a, b}: a@2 1/2, b@4 2/4 -> 0.5
    assert metrics["DSVR"] == pytest.approx(0.5)
    # CSVR {a, b, c}: a@2 1/2, c@3 2/3, b@4 3/4 -> 0.638889
    assert metrics["CSVR"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
    # ISVR {a, b, c, d}: + d@5 4/5 -> 0.679167
    assert metrics["ISVR"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4 + 4 / 5) / 4)
    # DAVR {c}: c@3 -> 1/3
    assert metrics["DAVR"] == pytest.approx(1 / 3)
    assert metrics["queries_evaluated"] == 1 and metrics["queries_missing"] == 1


def test_fivr_all_db_drops_absent_positives():
    fivr = fivr_fixture()
    sims = {"q1": {"e": 0.9, "a": 0.8, "c": 0.7, "b": 0.6, "d": 0.5}}
    # all_db {a, c, e}: ranking e, a, c; DSVR positives {a} (b is not in all_db): a@2 -> 1/2
    assert fivr.evaluate(sims, all_db={"a", "c", "e", "q1"})["DSVR"] == pytest.approx(0.5)
    # a positive in all_db but unscored counts as missed: ranking e, c; DSVR {a, b} -> 0
    assert fivr.evaluate({"q1": {"e": 0.9, "c": 0.7}})["DSVR"] == pytest.approx(0.0)


def test_fivr_rejects_unknown_task():
    with pytest.raises(ValueError, match="unknown FIVR tasks"):
        fivr_fixture().evaluate({}, tasks=("XSVR",))


def test_cc_web_video_variants_by_hand():
    # video numbers: q=1 (E), a=2 (S), b=3 (X), c=4 (V, excluded in the clean variant), d=5 (not annotated)
    cc = CCWebVideo(
        index={"q": 1, "a": 2, "b": 3, "c": 4, "d": 5},
        queries=["q"],
        ground_truth=[{1: "E", 2: "S", 3: "X", 4: "V"}],
        excluded=[{4}],
    )
    sims = {"q": {"zz": 0.99, "q": 1.0, "d": 0.9, "b": 0.8, "a": 0.7, "c": 0.6}}  # zz: not in the index
    metrics = cc.evaluate(sims)
    # mAP, annotated only: q+ b- a+ c+ -> (1/1 + 2/3 + 3/4) / 3 = 0.805556
    assert metrics["mAP"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # mAP*, all videos: q+ d- b- a+ c+ -> (1 + 2/4 + 3/5) / 3 = 0.7
    assert metrics["mAP_star"] == pytest.approx((1 + 2 / 4 + 3 / 5) / 3)
    # clean, annotated: q+ b- a+ (c excluded; 2 positives) -> (1 + 2/3) / 2 = 0.833333
    assert metrics["mAP_c"] == pytest.approx((1 + 2 / 3) / 2)
    # clean, all videos: q+ d- b- a+ -> (1 + 2/4) / 2 = 0.75
    assert metrics["mAP_c_star"] == pytest.approx(0.75)
    assert metrics["queries_evaluated"] == 1


def test_evve_by_hand():
    evve = EVVE(
        annotation={"ev1": ({"q1"}, {"a", "b"}, set()), "ev2": ({"q2"}, {"c"}, set())},
        queries=["q1", "q2"],
        database=["a", "b", "c", "d"],
    )
    # ext is outside all_db and does not shift ranks: d, a, b -> positive ranks 1, 2 (0-based)
    sims = {"q1": {"d": 0.9, "ext": 0.85, "a": 0.8, "b": 0.1}}
    metrics = evve.evaluate(sims)
    # trapezoids, recall step 1/2: (0 + 1/2)/2 * 1/2 = 0.125; (1/2 + 2/3)/2 * 1/2 = 0.291667 -> 0.416667
    expected = 0.125 + (0.5 + 2 / 3) / 4
    assert metrics["mAP"] == pytest.approx(expected)
    assert metrics["events"]["ev1"] == pytest.approx(expected)
    # q2 was not submitted: its event's mAP counts it as 0, the overall mAP leaves it out
    assert metrics["events"]["ev2"] == 0.0
    assert metrics["queries_missing"] == 1


def test_svd_by_hand(tmp_path):
    (tmp_path / "test_groundtruth").write_text("q1 t1 1\nq1 t2 0\nq1 t3 1\n")
    (tmp_path / "unlabeled-data-id").write_text("u1\nu2\n")
    sims = {"q1": {"t1": 0.9, "t2": 0.8, "u1": 0.5, "t3": 0.3, "u2": 0.1}}
    svd = SVD.from_files(tmp_path / "test_groundtruth", tmp_path / "unlabeled-data-id")
    # t1+ t2- u1- t3+ u2-: P=1 R=1/2, then P=2/4 R=1 -> 1/2 + 1/2 * 1/2 = 0.75
    assert svd.evaluate(sims)["mAP"] == pytest.approx(0.75)
    # labelled version: t1+ t2- t3+ -> 1/2 + 1/2 * 2/3 = 0.833333
    labelled = SVD.from_files(tmp_path / "test_groundtruth")
    assert labelled.evaluate(sims)["mAP"] == pytest.approx(1 / 2 + 1 / 3)
    with pytest.raises(ValueError, match="no similarity for 1 targets"):
        svd.evaluate({"q1": {"t1": 0.9, "t2": 0.8, "u1": 0.5, "t3": 0.3}})


def test_svd_rejects_malformed_ground_truth(tmp_path):
    (tmp_path / "gt").write_text("q1 t1 yes\n")
    with pytest.raises(ValueError, match="gt:1"):
        SVD.from_files(tmp_path / "gt")


@pytest.mark.parametrize("protocol", [2, 4])
def test_annotation_pickles_load_with_builtin_containers(tmp_path, protocol):
    data = {
        "annotation": {"q1": {"ND": ["a"], "DS": ["b"]}},
        "5k": {"queries": ["q1"], "database": OrderedDict.fromkeys(["a", "b", "q1"])},
        "200k": {"queries": {"q1"}, "database": frozenset({"a", "b", "c", "q1"})},
    }
    path = tmp_path / "fivr.pickle"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    assert load_annotation_pickle(path)["200k"]["queries"] == {"q1"}
    fivr = FIVR.from_pickle(path, version="5k")
    assert fivr.evaluate({"q1": {"b": 0.9, "a": 0.1}})["DSVR"] == pytest.approx(1.0)


class _Exploit:
    """Pickles as a call to os.system: what an untrusted annotation file could contain."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"annotation": _Exploit(marker)}))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        load_annotation_pickle(path)
    assert not marker.exists()


def test_annotation_pickle_must_be_a_dict_with_the_keys(tmp_path):
    path = tmp_path / "list.pickle"
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected a dict"):
        load_annotation_pickle(path)
    path.write_bytes(pickle.dumps({"annotation": {}}))
    with pytest.raises(ValueError, match="lacks the keys"):
        EVVE.from_pickle(path)


def test_rerank_selected_replaces_the_selected_fraction():
    coarse = {"q": {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}}
    selector = {"q": {"a": 0.9, "b": 0.1, "c": 0.8, "d": 0.2}}
    fine = {"q": {"a": 1.0, "c": -1.0}}
    # int(0.5 * 4) = 2 selected: a (0.9) and c (0.8); fine s -> s/2 + 1/2: a 1.0, c 0.0
    assert rerank_selected(coarse, fine, selector, 0.5) == {"q": {"a": 1.0, "b": 0.2, "c": 0.0, "d": 0.4}}
    assert rerank_selected(coarse, fine, selector, 0.0) == coarse
    with pytest.raises(ValueError, match="no fine similarity"):
        rerank_selected(coarse, fine, selector, 0.75)
    with pytest.raises(ValueError, match="lack a selector score"):
        rerank_selected(coarse, fine, {"q": {"a": 0.9}}, 0.5)
