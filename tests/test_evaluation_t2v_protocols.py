"""Official text-to-video split readers and the user score files, on tiny files written in tmp dirs."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from dnsvr.training.data.text_video_split import SplitError
from dnsvr.training.evaluation.t2v_protocols import load_split, read_didemo, read_msrvtt, read_msvd
from dnsvr.training.evaluation.t2v_scores import ScoreFile, ScoreFileError, save_scores


def test_msrvtt_jsfusion_csv(tmp_path):
    path = tmp_path / "MSRVTT_JSFUSION_test.csv"
    path.write_text(
        "key,vid_key,video_id,sentence\n"
        "ret0,msr7579,video7579,a girl wearing red top and black trouser is putting a sweater on a dog\n"
        'ret1,msr7725,video7725,"young people sit around the edges of a room, clapping"\n'
    )
    split = read_msrvtt(path)
    assert split.video_ids == ["video7579", "video7725"]
    assert split.caption_video == ["video7579", "video7725"]
    assert split.captions[1] == "young people sit around the edges of a room, clapping"
    assert load_split("msrvtt", path) == split


def test_msrvtt_missing_column_is_named(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("key,video_id\nret0,video1\n")
    with pytest.raises(SplitError, match="sentence"):
        read_msrvtt(path)


def msvd_captions() -> dict:
    return {
        "vidA": [["a", "man", "slices", "bread"], ["someone", "cuts", "a", "loaf"]],
        "vidB": [["a", "cat", "plays"]],
        "vidC": [["not", "in", "the", "test", "list"]],
    }


@pytest.mark.parametrize("form", ["pickle", "json"])
def test_msvd_multi_caption(tmp_path, form):
    (tmp_path / "test_list.txt").write_text("vidA\nvidB\n")
    if form == "pickle":
        (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps(msvd_captions()))
    else:
        (tmp_path / "raw-captions.json").write_text(json.dumps(msvd_captions()))
    split = read_msvd(tmp_path)
    assert split.captions == ["a man slices bread", "someone cuts a loaf", "a cat plays"]
    assert split.caption_video == ["vidA", "vidA", "vidB"]
    assert split.video_ids == ["vidA", "vidB"]


def test_msvd_pickle_with_a_foreign_global_is_refused(tmp_path):
    (tmp_path / "test_list.txt").write_text("vidA\n")
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps({"vidA": [os.getcwd]}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_msvd(tmp_path)


def test_msvd_video_without_captions(tmp_path):
    (tmp_path / "test_list.txt").write_text("vidA\nvidZ\n")
    (tmp_path / "raw-captions.json").write_text(json.dumps(msvd_captions()))
    with pytest.raises(SplitError, match="vidZ"):
        read_msvd(tmp_path)


def test_didemo_paragraphs_and_video_list(tmp_path):
    moments = [
        {"video": "v1.mp4", "description": "a dog runs in", "times": [[0, 1]]},
        {"video": "v2.mp4", "description": "the light turns on", "times": [[2, 2]]},
        {"video": "v1.mp4", "description": "it  jumps", "times": [[3, 4]]},
        {"video": "v3.mp4", "description": ["left", "out"], "times": [[0, 0]]},
    ]
    path = tmp_path / "test_data.json"
    path.write_text(json.dumps(moments))
    split = read_didemo(path)
    assert split.captions == ["a dog runs in it jumps", "the light turns on", "left out"]
    assert split.video_ids == ["v1.mp4", "v2.mp4", "v3.mp4"]
    (tmp_path / "test_list.txt").write_text("v1.mp4\nv2.mp4\n")
    assert read_didemo(path, tmp_path / "test_list.txt").video_ids == ["v1.mp4", "v2.mp4"]
    path.write_text(json.dumps([{"video": "v1"}]))
    with pytest.raises(SplitError, match="description"):
        read_didemo(path)


def test_unknown_dataset(tmp_path):
    with pytest.raises(SplitError, match="unknown dataset"):
        load_split("vatex", tmp_path)


def test_score_file_embeddings_by_name_and_by_order(tmp_path):
    text = np.array([[1.0, 0.0], [0.0, 2.0]])
    video = np.array([[0.0, 3.0], [4.0, 0.0], [1.0, 1.0]])
    path = save_scores(tmp_path / "emb.npz", text=text, video=video, captions=["x", "y"], video_ids=["a", "b", "c"])
    scores = ScoreFile.load(path)
    assert scores.bytes_per_video == 8
    # rows by caption, columns by id (c left out); cosine: x=(1,0) vs b=(1,0) -> 1, vs a=(0,1) -> 0
    np.testing.assert_allclose(scores.similarity_fn(["y", "x"], ["b", "a"]), [[0.0, 1.0], [1.0, 0.0]], atol=1e-6)
    with pytest.raises(ScoreFileError, match="not in the file"):
        scores.similarity_fn(["z"], ["a"])
    plain = ScoreFile.load(save_scores(tmp_path / "sim.npz", similarity=np.arange(6).reshape(2, 3)))
    assert plain.bytes_per_video is None
    np.testing.assert_allclose(plain.similarity_fn(["p", "q"], ["a", "b", "c"]), [[0, 1, 2], [3, 4, 5]])
    with pytest.raises(ScoreFileError, match="3 columns in the file but the split has 2"):
        plain.similarity_fn(["p", "q"], ["a", "b"])


def test_bad_score_files(tmp_path):
    np.savez(tmp_path / "objects.npz", similarity=np.zeros((1, 1)), captions=np.array([None], dtype=object))
    with pytest.raises(ScoreFileError, match="pickle"):
        ScoreFile.load(tmp_path / "objects.npz")
    np.savez(tmp_path / "none.npz", scores=np.zeros((1, 1)))
    with pytest.raises(ScoreFileError, match="unknown keys"):
        ScoreFile.load(tmp_path / "none.npz")
    np.savez(tmp_path / "dims.npz", text=np.zeros((1, 2)), video=np.zeros((1, 3)))
    with pytest.raises(ScoreFileError, match="2-d but 'video' is 3-d"):
        ScoreFile.load(tmp_path / "dims.npz")
    np.savez(tmp_path / "nan.npz", similarity=np.full((1, 1), np.nan))
    with pytest.raises(ScoreFileError, match="non-finite"):
        ScoreFile.load(tmp_path / "nan.npz")
