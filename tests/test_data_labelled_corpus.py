"""The labelled corpus: training sources only, deterministic for a seed, every copy labelled, resumable."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from dnsvr.training.data.features_io import dataset_name, list_ids, read_features
from dnsvr.training.data.labelled_corpus import (
    LabelledCorpusConfig,
    build_labelled_corpus,
    clean_negative,
    plan_corpus,
    render_group,
    teacher_features_path,
)
from dnsvr.training.data.sources import (
    HELDOUT_GROUPS,
    HELDOUT_PHOTOS,
    REAL_GROUPS,
    split_groups,
    split_photos,
    split_seed,
)
from dnsvr.training.data.synthetic import ALL_PHOTOS, replay_edits

TINY = LabelledCorpusConfig(sources=2, copies=2, frames=6, seed=3, real=False)


class CountingExtractor(torch.nn.Module):
    """A stand-in for the CNN: uint8 `[T, 224, 224, 3]` -> `[T, 9, 512]` from 3x3 block means; counts frames."""

    def __init__(self) -> None:
        super().__init__()
        self.videos = 0

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        self.videos += 1
        x = frames.float().permute(0, 3, 1, 2) / 255
        blocks = torch.nn.functional.adaptive_avg_pool2d(x, 3).flatten(2).transpose(1, 2)  # [T, 9, 3]
        return blocks.repeat(1, 1, 171)[..., :512]


def test_the_split_keeps_held_out_sources_apart():
    assert set(split_photos("train")).isdisjoint(split_photos("heldout"))
    assert set(split_photos("train")) | set(split_photos("heldout")) == set(ALL_PHOTOS)
    assert set(split_photos("heldout")) == set(HELDOUT_PHOTOS)
    assert set(split_groups("train")).isdisjoint(HELDOUT_GROUPS) and set(HELDOUT_GROUPS) <= set(REAL_GROUPS)
    assert split_seed("train", 0, "x") != split_seed("heldout", 0, "x")
    assert split_seed("train", 0, "x") == split_seed("train", 0, "x")
    with pytest.raises(ValueError, match="split"):
        split_photos("test")


def test_plan_uses_training_sources_only_and_labels_every_copy():
    config = LabelledCorpusConfig(sources=40, copies=3, frames=8, seed=0)
    groups = plan_corpus(config)
    assert groups == plan_corpus(config)
    assert [g.group for g in groups[:len(split_groups("train"))]] == [f"real-{g}" for g in split_groups("train")]
    train = set(split_photos("train"))
    ids = [video_id for g in groups for video_id, _, _ in g.videos]
    assert len(ids) == len(set(ids)) == 40 * 4 + sum(len(REAL_GROUPS[g][1]) + 3 for g in split_groups("train"))
    names = set()
    for group in groups:
        assert set(group.photos) <= train
        copies = [v for v in group.videos if v[2]]
        assert len(copies) == 3 and all(1 <= len(edits) <= 3 for _, _, edits in copies)
        for _, _, edits in copies:
            for record in edits:
                names.add(record.name)
                for key in ("background", "host_photo"):
                    if key in record.params:
                        assert record.params[key] in train and record.params[key] not in group.photos
    assert {"pip_small", "partial", "rot90"} <= names  # the hard edits are drawn
    # a real group: its clips as decoded, its copies their recorded edits of the first clip
    real = next(g for g in groups if g.group == "real-padded")
    frames = dict(render_group(real))
    (first, _, _), *copies = real.videos
    assert frames[first].shape[1:] == (224, 224, 3) and len(frames[first]) >= 4
    for video_id, original, edits in copies:
        assert original == first
        np.testing.assert_array_equal(frames[video_id], replay_edits(frames[first], edits))
    with pytest.raises(ValueError, match="edits"):
        LabelledCorpusConfig(edits=("swirl",))


def test_tiny_corpus_is_deterministic_labelled_and_resumable(tmp_path):
    extractor = CountingExtractor()
    summary = build_labelled_corpus(TINY, tmp_path / "a", extractor, workers=1, progress=False)
    assert summary["videos"] == summary["made"] == 6 and extractor.videos == 6
    labels = json.loads(summary["labels"].read_text())
    features = read_features(summary["features"])
    assert sorted(features) == sorted(labels["videos"]) and labels["split"] == "train"
    groups = labels["groups"]
    assert len(groups) == 2 and all(len(g["videos"]) == 3 for g in groups.values())
    for video_id, video in labels["videos"].items():
        assert video_id in groups[video["group"]]["videos"]
        assert features[video_id].shape == (video["frames"], 9, 512)
        assert set(groups[video["group"]]["photos"]) <= set(video["photos"])
        assert not any(clean_negative(labels, video_id, other) for other in groups[video["group"]]["videos"])
        if video_id == video["original"]:
            assert video["edits"] == [] and video["span"] is None
        else:
            assert video["edits"] and len(video["span"]) == 4
            start, stop, copy_start, copy_stop = video["span"]
            assert 0 <= start < stop <= TINY.frames and 0 <= copy_start < copy_stop <= video["frames"]

    # the same seed gives the same frames and labels (here in two worker processes)
    again = build_labelled_corpus(TINY, tmp_path / "b", CountingExtractor(), workers=2, progress=False)
    assert json.loads(again["labels"].read_text()) == labels
    for video_id, array in read_features(again["features"]).items():
        np.testing.assert_array_equal(array, features[video_id])
    group = plan_corpus(TINY)[0]
    frames = dict(render_group(group))
    original = group.videos[0][0]
    for video_id, _, edits in group.videos[1:]:
        np.testing.assert_array_equal(frames[video_id], replay_edits(frames[original], edits))

    # a rerun makes only what is missing
    with h5py.File(summary["features"], "a") as handle:
        del handle[dataset_name(original)]
    extractor = CountingExtractor()
    resumed = build_labelled_corpus(TINY, tmp_path / "a", extractor, progress=False)
    assert resumed["made"] == 1 and extractor.videos == 1 and len(list_ids(resumed["features"])) == 6
    np.testing.assert_array_equal(read_features(resumed["features"], [original])[original], features[original])

    other = build_labelled_corpus(LabelledCorpusConfig(sources=1, copies=1, frames=6, seed=4, real=False),
                                  tmp_path / "c", CountingExtractor(), progress=False)
    assert json.loads(other["labels"].read_text())["videos"] != labels["videos"]
    with pytest.raises(ValueError, match="another config"):
        build_labelled_corpus(TINY, tmp_path / "c", CountingExtractor(), progress=False)
    changed = {**labels, "videos": {**labels["videos"], original: {**labels["videos"][original], "frames": 99}}}
    summary["labels"].write_text(json.dumps(changed))
    with pytest.raises(ValueError, match="no longer makes"):
        build_labelled_corpus(TINY, tmp_path / "a", CountingExtractor(), progress=False)


def test_a_corpus_with_a_teacher_layout_writes_both_files_in_one_pass_and_resumes(tmp_path):
    """`dnsvr train corpus --teacher-crops ...`: teacher_<slug>.h5 beside features.h5, the full frame's 9 regions
    first and equal to features.h5's, each video extracted once; a video missing from either file is made again
    into that file alone."""
    from dnsvr.training.data.crop_regions import CropLayout, TeacherLayout

    layout = TeacherLayout((CropLayout(0.5, 0.5),), query_blurs=(1.5,))
    extractor = CountingExtractor()
    summary = build_labelled_corpus(TINY, tmp_path, extractor, progress=False, layout=layout)
    teacher_file = summary["teacher_features"]
    assert teacher_file == teacher_features_path(summary["features"], layout)
    assert teacher_file == tmp_path / "teacher_c0.5_s0.5_blur1.5.h5"
    full, regions = read_features(summary["features"]), read_features(teacher_file)
    assert sorted(full) == sorted(regions) and summary["made"] == 6
    assert extractor.videos == 6 * 3  # per video: the full frame, its 4 crops in one batch, the blurred frames
    for video_id, video in full.items():
        assert regions[video_id].shape == (len(video), layout.regions_per_frame, 512) == (len(video), 54, 512)
        np.testing.assert_array_equal(regions[video_id][:, :9], video)
    (first, _), (second, _) = sorted(full.items())[:2]
    with h5py.File(teacher_file, "a") as handle:
        del handle[dataset_name(first)]
    with h5py.File(summary["features"], "a") as handle:
        del handle[dataset_name(second)]
    extractor = CountingExtractor()
    resumed = build_labelled_corpus(TINY, tmp_path, extractor, progress=False, layout=layout)
    assert resumed["made"] == 2 and extractor.videos == 2 * 3
    np.testing.assert_array_equal(read_features(teacher_file, [first])[first], regions[first])
    np.testing.assert_array_equal(read_features(summary["features"], [second])[second], full[second])
    assert len(list_ids(teacher_file)) == len(list_ids(summary["features"])) == 6


def test_cli_teaches_and_rejects_bad_settings(tmp_path, capsys):
    from dnsvr.serving.cli.main import main

    with pytest.raises(SystemExit):
        main(["train", "corpus", "--help"])
    help_text = capsys.readouterr().out
    assert all(word in help_text for word in ("labels.json", "features.h5", "--workers", "heldout", "partial",
                                              "--teacher-crops", "teacher_<layout>.h5"))
    with pytest.raises(SystemExit):
        main(["train", "corpus", "--out", str(tmp_path / "x"), "--teacher-crops", "0.5"])
    assert main(["train", "corpus", "--out", str(tmp_path / "x"), "--frames", "2", "--quiet"]) == 2
    assert "frames must be >= 4" in capsys.readouterr().err
    assert main(["train", "corpus", "--out", str(tmp_path / "x"), "--edits", "swirl", "--quiet"]) == 2


def test_clean_negatives_share_no_photograph():
    labels = {"videos": {
        "a": {"group": "g1", "photos": ["moon"]},
        "a~c1": {"group": "g1", "photos": ["moon", "cell"]},  # e.g. a picture-in-picture copy over 'cell'
        "b": {"group": "g2", "photos": ["cell"]},
        "c": {"group": "g3", "photos": ["text"]},
    }}
    assert clean_negative(labels, "a", "b") and clean_negative(labels, "a", "c")
    assert not clean_negative(labels, "a~c1", "b")  # both show 'cell'
    assert not clean_negative(labels, "a", "a~c1")  # positives
