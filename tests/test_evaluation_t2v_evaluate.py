"""The text-to-video driver and `dnsvr eval t2v` on fake scorers: perfect scores give R@1 = 100, random ones
little; a served-style model is timed and sized; our benchmark exports and reads back as a split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dnsvr.serving.cli.main import main
from dnsvr.training.data.captioned_benchmark import CaptionedConfig, captioned_benchmark, load_caption_file
from dnsvr.training.data.text_video_split import TextVideoSplit
from dnsvr.training.evaluation.t2v_evaluate import evaluate_index, evaluate_text_video
from dnsvr.training.evaluation.t2v_metrics import MetricsError
from dnsvr.training.evaluation.t2v_scores import save_scores


@pytest.fixture(scope="module")
def bench_split() -> TextVideoSplit:
    return captioned_benchmark(CaptionedConfig.preset("tiny")).split()


def perfect(split: TextVideoSplit):
    relevance = split.relevance().astype(np.float32)
    return lambda captions, video_ids: relevance


def test_perfect_scorer_scores_100_and_random_one_little(bench_split):
    metrics = evaluate_text_video(perfect(bench_split), bench_split)
    assert metrics["t2v"]["R@1"] == 100.0 and metrics["t2v"]["MnR"] == 1.0
    assert metrics["v2t"]["R@1"] == 100.0
    assert metrics["captions"] == 113 and metrics["videos"] == 38
    rng = np.random.default_rng(0)
    noise = evaluate_text_video(lambda c, v: rng.random((len(c), len(v))), bench_split)
    assert noise["t2v"]["R@1"] < 20 and noise["t2v"]["MnR"] > 5
    assert "v2t" not in evaluate_text_video(perfect(bench_split), bench_split, video_to_text=False)


def test_wrong_shape_is_a_typed_error(bench_split):
    with pytest.raises(MetricsError, match="expected"):
        evaluate_text_video(lambda c, v: np.zeros((len(c), 3)), bench_split)


class MeanColour:
    """A toy served model: a video is stored as its mean RGB (3 float32); a caption naming a colour scores
    videos by that channel."""

    def index_video(self, frames: np.ndarray) -> np.ndarray:
        return frames.reshape(-1, 3).mean(axis=0).astype(np.float32)

    def score(self, captions, stored):
        channel = [("red", "green", "blue").index(c.split()[0]) for c in captions]
        return np.stack(stored)[:, channel].T


def test_evaluate_index_times_queries_and_sizes_storage():
    frames = {}
    for k, name in enumerate(("r", "g", "b")):
        video = np.zeros((2, 4, 4, 3), np.uint8)
        video[..., k] = 200
        frames[name] = video
    split = TextVideoSplit(["red video", "green video", "blue clip"], ["r", "g", "b"], ["r", "g", "b"])
    metrics = evaluate_index(MeanColour(), split, frames.__getitem__)
    assert metrics["t2v"]["R@1"] == 100.0
    assert metrics["bytes_per_video"] == 12.0
    assert metrics["seconds_per_query"] > 0


def test_cli_t2v_on_the_benchmark_and_on_msrvtt(bench_split, tmp_path, capsys):
    scores = save_scores(tmp_path / "perfect.npz", similarity=bench_split.relevance(),
                         captions=bench_split.captions, video_ids=bench_split.video_ids)
    out = tmp_path / "metrics.json"
    assert main(["eval", "t2v", "--dataset", "benchmark", "--preset", "tiny", "--scores", str(scores),
                 "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == metrics
    assert metrics["t2v"]["R@1"] == 100.0 and metrics["dataset"] == "benchmark"

    csv = tmp_path / "MSRVTT_JSFUSION_test.csv"
    csv.write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,a dog runs\nret1,msr2,video2,a cat sits\n")
    # embeddings: caption 0 matches video 1 (wrong), caption 1 matches video 2 -> R@1 50, ranks [2, 1]
    embeddings = save_scores(tmp_path / "emb.npz", text=[[0.0, 1.0], [0.0, 1.0]], video=[[1.0, 0.2], [0.0, 1.0]])
    assert main(["eval", "t2v", "--dataset", "msrvtt", "--annotations", str(csv), "--scores", str(embeddings)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["t2v"]["R@1"] == 50.0 and metrics["t2v"]["MnR"] == 1.5

    assert main(["eval", "t2v", "--dataset", "msrvtt", "--scores", str(embeddings)]) == 2
    assert "--annotations is required" in capsys.readouterr().err
    assert main(["eval", "t2v", "--dataset", "benchmark", "--preset", "tiny", "--scores", str(embeddings)]) == 1
    assert "2 rows in the file but the split has 113" in capsys.readouterr().err


def test_export_reads_back_as_a_split(tmp_path):
    data = load_caption_file()
    data["subjects"] = [s for s in data["subjects"] if s["id"] in ("cat", "door-handle")]
    data["distractors"] = data["distractors"][:1]
    caption_file = tmp_path / "captions.json"
    caption_file.write_text(json.dumps(data))
    bench = captioned_benchmark(CaptionedConfig.preset("tiny", cache_dir=tmp_path / "cache"), caption_file)
    built = bench.build(progress=False)
    assert built["videos"] == 3 and built["captions"] == 8 and built["frames"] == 4 + 4 + 4
    split_path = bench.export(tmp_path / "out", progress=False)
    assert sorted(p.relative_to(tmp_path / "out" / "videos").as_posix() for p in (tmp_path / "out").rglob("*.mp4")) == [
        "cat/0.mp4", "distractor-snake-logo/0.mp4", "door-handle/doorknob-hd-no-bar.mp4"]
    scores = save_scores(tmp_path / "s.npz", similarity=bench.split().relevance())
    assert main(["eval", "t2v", "--dataset", "split", "--annotations", str(split_path), "--scores", str(scores)]) == 0
