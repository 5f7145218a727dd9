"""TextVideoSplit: relevance with and without content groups, and its typed errors."""

from __future__ import annotations

import pytest
from dnsvr.training.data.text_video_split import SplitError, TextVideoSplit


def test_relevance_one_video_per_caption_and_by_group():
    split = TextVideoSplit(["a cat", "a cup", "a kitten"], ["v1", "v2", "v1"], ["v1", "v2", "v3", "v4"])
    assert split.owner_index().tolist() == [0, 1, 0]
    assert split.relevance().tolist() == [
        [True, False, False, False],
        [False, True, False, False],
        [True, False, False, False],
    ]
    grouped = TextVideoSplit(split.captions, split.caption_video, split.video_ids, {"v1": "cat", "v3": "cat"})
    assert grouped.relevance()[0].tolist() == [True, False, True, False]
    assert grouped.relevance()[1].tolist() == [False, True, False, False]


@pytest.mark.parametrize(
    "captions, owners, videos, groups, message",
    [
        (["a"], ["v1", "v2"], ["v1", "v2"], {}, "caption owners"),
        ([], [], ["v1"], {}, "at least one caption"),
        (["  "], ["v1"], ["v1"], {}, "empty"),
        (["a"], ["v1"], ["v1", "v1"], {}, "more than once"),
        (["a"], ["v9"], ["v1"], {}, "not among the videos"),
        (["a"], ["v1"], ["v1"], {"v7": "g"}, "unknown videos"),
    ],
)
def test_inconsistent_split_is_a_typed_error(captions, owners, videos, groups, message):
    with pytest.raises(SplitError, match=message):
        TextVideoSplit(captions, owners, videos, groups)


def test_save_and_load(tmp_path):
    split = TextVideoSplit(["a cat", "a cup"], ["v1", "v2"], ["v1", "v2", "v3"], {"v3": "v1"})
    assert TextVideoSplit.load(split.save(tmp_path / "split.json")) == split
    (tmp_path / "bad.json").write_text('{"captions": []}')
    with pytest.raises(SplitError, match="expected a JSON object"):
        TextVideoSplit.load(tmp_path / "bad.json")
