"""Text-to-video metrics on small matrices whose ranks are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from dnsvr.training.evaluation.t2v_metrics import (
    MetricsError,
    caption_groups,
    first_correct_ranks,
    retrieval_metrics,
    summarize_ranks,
    text_to_video_metrics,
    video_to_text_metrics,
)


def test_text_to_video_one_correct_video_each():
    # caption 0 -> video 0 scores highest: rank 1; caption 1 -> video 1 (0.2) is below 0.3 and 0.8: rank 3;
    # caption 2 -> video 2 (0.1) is below all three others: rank 4.
    similarity = np.array([[0.9, 0.1, 0.5, 0.2], [0.3, 0.2, 0.8, 0.1], [0.4, 0.6, 0.1, 0.7]])
    relevance = np.zeros((3, 4), bool)
    relevance[[0, 1, 2], [0, 1, 2]] = True
    assert first_correct_ranks(similarity, relevance).tolist() == [1, 3, 4]
    metrics = text_to_video_metrics(similarity, relevance)
    assert metrics["R@1"] == pytest.approx(100 / 3)
    assert metrics["R@5"] == metrics["R@10"] == 100.0
    assert metrics["MdR"] == 3.0
    assert metrics["MnR"] == pytest.approx(8 / 3)
    assert metrics["queries"] == 3


def test_several_correct_videos_rank_by_the_best_one():
    # correct {1, 2}: the best correct scores 0.8; wrong videos above it: 0.9 and 0.95 -> rank 3
    similarity = np.array([[0.9, 0.8, 0.7, 0.95]])
    relevance = np.array([[False, True, True, False]])
    assert first_correct_ranks(similarity, relevance).tolist() == [3]


def test_ties_pessimistic_by_default_optimistic_on_request():
    similarity = np.array([[0.5, 0.5, 0.2]])
    relevance = np.array([[True, False, False]])
    assert first_correct_ranks(similarity, relevance).tolist() == [2]
    assert first_correct_ranks(similarity, relevance, ties="optimistic").tolist() == [1]
    # a constant scorer: worst ranks when pessimistic, perfect ones when optimistic
    constant, identity = np.zeros((3, 3)), np.eye(3, dtype=bool)
    assert text_to_video_metrics(constant, identity)["MnR"] == 3.0
    assert text_to_video_metrics(constant, identity, ties="optimistic")["R@1"] == 100.0


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    metrics = summarize_ranks(np.array([1, 2, 3, 10]), ks=(1, 2))
    assert metrics == {"R@1": 25.0, "R@2": 50.0, "MdR": 2.5, "MnR": 4.0, "queries": 4}


def test_video_to_text_groups_captions_by_owner():
    # captions 0, 1 written for video 0, caption 2 for video 1; video 2 is a distractor.
    similarity = np.array([[0.2, 0.9, 0.1], [0.7, 0.3, 0.0], [0.5, 0.4, 0.6]])
    owner = np.array([0, 0, 1])
    relevance = np.zeros((3, 3), bool)
    relevance[[0, 1, 2], owner] = True
    scores, correct = caption_groups(similarity, relevance, owner)
    np.testing.assert_allclose(scores, [[0.7, 0.9, 0.1], [0.5, 0.4, 0.6]])
    assert correct.tolist() == [[True, False, False], [False, True, False]]
    # video 0: group 0 (0.7) beats group 1 (0.5): rank 1; video 1: its group 1 (0.4) is below group 0 (0.9):
    # rank 2; video 2 has no caption and is no query.
    v2t = video_to_text_metrics(similarity, relevance, owner)
    assert v2t == {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.5, "MnR": 1.5, "queries": 2}
    # text -> video: caption 0 (0.2) is below 0.9: rank 2; caption 1: rank 1; caption 2 (0.4) below 0.5, 0.6: 3
    both = retrieval_metrics(similarity, relevance, owner)
    assert both["t2v"]["MnR"] == 2.0 and both["t2v"]["MdR"] == 2.0
    assert both["v2t"] == v2t
    assert "v2t" not in retrieval_metrics(similarity, relevance)


def test_square_matrix_without_ties_matches_the_transpose_rule():
    # one caption per video: video -> text is the text -> video rule on the transpose, as in the reference
    rng = np.random.default_rng(0)
    similarity = rng.standard_normal((20, 20))
    identity = np.eye(20, dtype=bool)
    v2t = video_to_text_metrics(similarity, identity, np.arange(20))
    assert v2t == text_to_video_metrics(similarity.T, identity)
    ranks = first_correct_ranks(similarity, identity)
    assert ranks.tolist() == [1 + int((row > row[i]).sum()) for i, row in enumerate(similarity)]


@pytest.mark.parametrize(
    "similarity, relevance, ties, message",
    [
        (np.array([[np.nan, 0.0]]), np.array([[True, False]]), "pessimistic", "not finite"),
        (np.zeros((2, 2)), np.eye(3, dtype=bool), "pessimistic", "relevance"),
        (np.zeros((2, 2)), np.array([[True, False], [False, False]]), "pessimistic", "no correct item"),
        (np.zeros(3), np.ones(3, bool), "pessimistic", "2-D"),
        (np.zeros((1, 1)), np.ones((1, 1), bool), "random", "ties"),
    ],
)
def test_bad_input_is_a_typed_error(similarity, relevance, ties, message):
    with pytest.raises(MetricsError, match=message):
        first_correct_ranks(similarity, relevance, ties)
