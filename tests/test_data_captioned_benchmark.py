"""Our captioned text-to-video benchmark: the reviewed caption file, the split it gives, reproducible frames,
and seeds held out from the training corpus's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dnsvr.training.data import corpus
from dnsvr.training.data.captioned_benchmark import (
    CaptionedConfig,
    CaptionFileError,
    captioned_benchmark,
    load_caption_file,
    resolve_source,
)


def test_caption_file_is_complete_and_every_source_exists():
    data = load_caption_file()
    assert len(data["subjects"]) >= 25 and len(data["distractors"]) >= 4
    for entry in data["subjects"]:
        assert 3 <= len(entry["captions"]) <= 5, entry["id"]
        assert all(caption.strip() == caption and len(caption.split()) >= 3 for caption in entry["captions"])
    for entry in data["subjects"] + data["distractors"]:
        for source in entry["sources"]:
            assert resolve_source(source).stat().st_size > 0, source
    every_caption = [c for entry in data["subjects"] for c in entry["captions"]]
    assert len(set(every_caption)) == len(every_caption), "a caption is used twice"


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"captions": ["only one"]}, CaptionFileError, "needs 3-5 captions"),
        ({"captions": ["a b c", " ", "d e f"]}, CaptionFileError, "non-empty"),
        ({"kind": "gif"}, CaptionFileError, "kind"),
        ({"sources": ["skimage:no_such_file.png"]}, FileNotFoundError, "no_such_file"),
        ({"sources": ["nowhere:x.png"]}, CaptionFileError, "ROOT:FILE"),
    ],
)
def test_bad_caption_file_is_a_typed_error(tmp_path, change, error, message):
    data = load_caption_file()
    data["subjects"][0].update(change)
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(data))
    with pytest.raises(error, match=message):
        captioned_benchmark(CaptionedConfig(cache_dir=tmp_path), caption_file=path)


def test_standard_split_counts_and_groups(tmp_path):
    bench = captioned_benchmark(CaptionedConfig(cache_dir=tmp_path))
    split, summary = bench.split(), bench.summary()
    assert summary == {"videos": 65, "captioned_videos": 55, "distractor_videos": 10, "subjects": 28,
                       "captions": 113}
    assert split.num_videos == 65 and split.num_captions == 113
    # every captioned video owns captions of its own; distractors own none
    owners = set(split.caption_video)
    assert owners == {v for v, r in bench.recipes.items() if r.captioned}
    # a cat caption is correct for both cat videos and nothing else
    relevance = split.relevance()
    row = split.captions.index("close-up of a ginger striped cat's face")
    assert {split.video_ids[j] for j in np.flatnonzero(relevance[row])} == {"cat/0", "cat/1"}
    fabric = split.captions.index("a close-up of a woven fabric with streaky stripes")
    assert relevance[fabric].sum() == 5


def test_frames_are_reproducible_and_cached(tmp_path):
    ids = ["cat/0", "motorcycle/0", "horse/0", "man-in-car/carphone_pristine"]
    first = captioned_benchmark(CaptionedConfig.preset("tiny", cache_dir=tmp_path / "a"))
    second = captioned_benchmark(CaptionedConfig.preset("tiny", cache_dir=tmp_path / "b"))
    assert first.frames_digest(ids) == second.frames_digest(ids)
    assert len(list((tmp_path / "a").glob("*.npy"))) == len(ids)
    assert first.frames_digest(ids) == first.frames_digest(ids)  # read back from the cache
    frames = first.frames("cat/0")
    assert frames.dtype == np.uint8 and frames.shape == (4, 224, 224, 3)
    assert first.frames("man-in-car/carphone_pristine").shape[1:] == (224, 224, 3)
    other_seed = captioned_benchmark(CaptionedConfig.preset("tiny", seed=1, cache_dir=tmp_path / "a"))
    assert not np.array_equal(other_seed.frames("cat/0"), frames)
    with pytest.raises(KeyError, match="unknown"):
        first.frames("dog/0")


def test_seeds_are_apart_from_the_training_corpus():
    bench = captioned_benchmark(CaptionedConfig.preset("standard", videos_per_photo=4))
    ours = {r.seed for r in bench.recipes.values() if r.seed is not None}
    assert len(ours) == sum(r.kind == "photo" for r in bench.recipes.values())
    training = {
        corpus._seed(seed, source, *copy)
        for seed in range(5)
        for source in range(1000)
        for copy in ((), (1,), (2,), (3,), (4,))
    }
    assert not ours & training
