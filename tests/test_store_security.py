"""No caller can reach another video through an id: one id rule, one quoting function, and fuzzing against the
real Milvus Lite server and the real Milvus 2.3.5 server (fixtures of test_store_video_store).

The injection strings are those of the security review that found `delete("x'] or video_id not in ['")`
deleting every video.
"""

from __future__ import annotations

import numpy as np
import pytest
from dnsvr.client.errors import InvalidVideo
from dnsvr.client.ids import MAX_VIDEO_ID_BYTES, check_video_id, id_problem
from dnsvr.serving.store.expressions import both, equals, is_in, string_literal
from hypothesis import given, settings
from hypothesis import strategies as st
from test_store_video_store import fresh_prefix, make_video, open_store

INJECTIONS = [
    "x'] or video_id not in ['",
    "x'] or video_id in ['other",
    "a' || 1==1 || '",
    'a" or video_id != "',
    "x\\",
    "x\\' or 1==1 or '",
    "x`",
]
ACCEPTED_ODDITIES = ["vidéo-日本", "a] or video_id in [b", "(x) and (y)", "100% & more?", "😀 clip #3", "a/b/c.mp4",
                     "x == 1 || y", "٣٤-ß-Ω", "a,b", "{json}", "$(rm -rf /)", "a  b"]
ALPHABET = st.characters(codec="utf-8", exclude_characters="'\"`\\",
                         categories=("L", "M", "N", "P", "S", "Zs"))
ACCEPTED_IDS = st.text(ALPHABET, min_size=1, max_size=40).filter(lambda s: id_problem(s) is None)


@pytest.mark.parametrize("video_id", INJECTIONS + ["", " x", "x ", "a\tb", "a\nb", "a\x00b", "a\u200bb",
                                                   "x" * (MAX_VIDEO_ID_BYTES + 1), "\ud800"])
def test_id_rule_refuses_quotes_escapes_and_controls(video_id):
    with pytest.raises(InvalidVideo, match="video_id"):
        check_video_id(video_id)


@pytest.mark.parametrize("video_id", ACCEPTED_ODDITIES + ["é" * 128])
def test_id_rule_accepts_any_script_punctuation_and_symbols(video_id):
    assert check_video_id(video_id) == video_id


def test_string_literals_escape_and_keep_unicode():
    assert string_literal('a"b\\c') == '"a\\"b\\\\c"'
    assert string_literal("vidéo-日本") == '"vidéo-日本"'  # UTF-8 as itself: Milvus reads no \\u escapes
    assert equals("video_id", "x") == 'video_id == "x"' and is_in("generation", [1, 2]) == "generation in [1, 2]"
    assert both("a", "b") == "(a) and (b)"
    with pytest.raises(ValueError, match="control character"):
        string_literal("a\nb")
    with pytest.raises(TypeError):
        is_in("generation", [True])
    with pytest.raises(ValueError, match="not a field name"):
        equals("video_id or 1", "x")


@pytest.fixture(params=["lite", "server"])
def store(request):
    server = request.getfixturevalue("lite_server" if request.param == "lite" else "milvus_server")
    with open_store(server.uri, fresh_prefix()) as opened:
        yield opened


def test_injection_strings_touch_nothing(store):
    store.upsert_many([make_video(name, 2, seed) for seed, name in enumerate(["x", "a", "other", "keep"])])
    for video_id in INJECTIONS:
        for action in (store.delete, store.get, lambda v: store.fetch_codes([v])):
            with pytest.raises(InvalidVideo):
                action(video_id)
        with pytest.raises(InvalidVideo):
            store.upsert(make_video(video_id, 2, 9))
    assert store.count() == 4 and sorted(store.fetch_codes(["x", "a", "other", "keep"]).frame_counts) == [2] * 4


def test_ids_that_look_like_expressions_round_trip(store):
    videos = [make_video(video_id, 1 + i % 3, i) for i, video_id in enumerate(ACCEPTED_ODDITIES)]
    store.upsert_many(videos)
    assert store.count() == len(videos)
    for video in videos:
        np.testing.assert_array_equal(store.get(video.video_id).fine_codes, video.fine_codes)
    assert store.delete("a] or video_id in [b") and store.count() == len(videos) - 1
    assert store.delete("x == 1 || y") and store.count() == len(videos) - 2
    assert store.check().clean


FUZZ_EXAMPLES = {"lite": 12, "server": 4}  # the id rules are the store's, not the backend's; a server write is slow


def test_fuzz_no_id_reaches_another_video(store, request):
    """Index a bystander and the ids; each id reads back its own frames; deleting one leaves the others."""

    @settings(max_examples=FUZZ_EXAMPLES[request.node.callspec.params["store"]], deadline=None)
    @given(ids=st.lists(ACCEPTED_IDS, min_size=2, max_size=4, unique=True))
    def check(ids):
        check_ids_stay_apart(store, ids)

    check()


def check_ids_stay_apart(store, ids: list[str]) -> None:
    prefix_ids = ["bystander", *ids]
    videos = [make_video(video_id, 1 + i % 2, i) for i, video_id in enumerate(prefix_ids)]
    store.upsert_many(videos)
    try:
        fetched = store.fetch_codes(prefix_ids, consistency="Strong")
        for index, video in enumerate(videos):
            np.testing.assert_array_equal(fetched.codes[index, : fetched.frame_counts[index]], video.fine_codes)
        victim = ids[0]
        assert store.delete(victim)
        left = store.fetch_codes(prefix_ids, consistency="Strong")
        assert [count > 0 for count in left.frame_counts] == [video_id != victim for video_id in prefix_ids]
        assert not store.delete(victim)
    finally:
        for video_id in prefix_ids:
            store.delete(video_id)
    assert store.count() == 0 and store.check(grace_s=0).clean


def test_ids_written_before_the_rule_are_found_and_repaired(store, monkeypatch):
    """A store written by an older version may hold an id the rule now refuses: `check` names it and
    `repair` removes it without touching the others."""
    from dnsvr.serving.store import schema

    store.upsert_many([make_video(name, 2, seed) for seed, name in enumerate(["x", "keep"])])
    monkeypatch.setattr(schema, "check_video_id", lambda video_id: video_id)  # the old, looser check
    store.upsert(make_video("a' || 1==1 || '", 2, 9))
    monkeypatch.undo()
    report = store.check(grace_s=0)
    assert report.invalid_video_ids == ["a' || 1==1 || '"] and not report.clean
    store.check(repair=True, grace_s=0)
    assert store.check(grace_s=0).clean and store.count() == 2
    assert sorted(store.fetch_codes(["x", "keep"]).frame_counts) == [2, 2]
