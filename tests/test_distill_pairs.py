"""Pair mining: nearest-neighbour positive pools, random negatives, teacher scores, JSON format, resuming."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from dnsvr.training.data.features_io import write_features
from dnsvr.training.distill.pairs import PairSet, PairsFileError, candidate_pools, global_vectors, mine_pairs
from dnsvr.training.distill.teachers import ChamferTeacher, FineStudentTeacher, load_teacher

GROUPS, MEMBERS = 4, 3


@pytest.fixture(scope="module")
def features_file(tmp_path_factory):
    """12 videos `[T, 9, 32]` in 4 groups of 3 that share a base video (plus noise): `group{g}-{m}`."""
    rng = np.random.default_rng(0)
    videos = {}
    for group in range(GROUPS):
        base = np.abs(rng.standard_normal((6, 9, 32)))
        for member in range(MEMBERS):
            video = base[: 6 - member] + 0.3 * np.abs(rng.standard_normal((6 - member, 9, 32)))
            videos[f"group{group}-{member}"] = (video / np.linalg.norm(video, axis=-1, keepdims=True))
    path = tmp_path_factory.mktemp("pairs") / "features.h5"
    write_features(path, videos, dims=None)
    return path


class CountingTeacher(ChamferTeacher):
    def __init__(self):
        super().__init__()
        self.queries = 0

    def similarities(self, query, targets):
        self.queries += 1
        return super().similarities(query, targets)


def group(video_id: str) -> str:
    return video_id.split("-")[0]


def test_positive_pools_are_nearest_neighbours_and_negatives_random_others(features_file, tmp_path):
    pair_set = mine_pairs(features_file, tmp_path / "pairs.json", ChamferTeacher(), num_positives=2,
                          num_negatives=4, seed=0, progress=False, self_pairs=False)
    assert len(pair_set.index) == GROUPS * MEMBERS and set(pair_set.pairs) == set(range(12))
    vectors = global_vectors(features_file, pair_set.index, progress=False)
    for anchor, pools in pair_set.pairs.items():
        positives, negatives = set(pools["positives"]), set(pools["negatives"])
        cosine = vectors @ vectors[anchor]
        cosine[anchor] = -np.inf
        assert positives == set(np.argsort(-cosine)[:2].tolist())
        assert {group(pair_set.index[i]) for i in positives} == {group(pair_set.index[anchor])}
        assert len(negatives) == 4 and not negatives & positives and anchor not in negatives | positives
        assert min(pools["positives"].values()) > max(pools["negatives"].values())
    other_seed = candidate_pools(vectors, 2, 4, seed=1)
    assert any(set(neg) != set(pair_set.pairs[a]["negatives"]) for a, (_, neg) in enumerate(other_seed))
    assert candidate_pools(vectors, 2, 4, seed=0) == candidate_pools(vectors, 2, 4, seed=0)


def test_self_pairs_add_each_anchor_to_its_positives_scored_by_the_teacher(features_file, tmp_path):
    with_self = mine_pairs(features_file, tmp_path / "self.json", ChamferTeacher(), 2, 4, progress=False)
    without = mine_pairs(features_file, tmp_path / "plain.json", ChamferTeacher(), 2, 4, progress=False,
                         self_pairs=False)
    assert with_self.config["self_pairs"] and not without.config["self_pairs"]
    for anchor, pools in with_self.pairs.items():
        assert pools["positives"][anchor] == pytest.approx(1.0, abs=1e-5)
        assert set(pools["positives"]) == {anchor, *without.pairs[anchor]["positives"]}
        assert pools["negatives"] == without.pairs[anchor]["negatives"]
    assert with_self.all_pairs() == without.all_pairs()
    assert all(a != b for a, b, _ in with_self.all_pairs())


def test_scores_are_the_teachers(features_file, tmp_path):
    from dnsvr.training.data.features_io import read_features
    from dnsvr.training.networks.similarity import chamfer_similarity

    pair_set = mine_pairs(features_file, tmp_path / "pairs.json", ChamferTeacher(), 2, 3, progress=False)
    videos = read_features(features_file)
    anchor, pools = next(iter(pair_set.pairs.items()))
    for other, sim in {**pools["positives"], **pools["negatives"]}.items():
        expected = chamfer_similarity(torch.from_numpy(videos[pair_set.index[anchor]]),
                                      torch.from_numpy(videos[pair_set.index[other]]))
        assert sim == pytest.approx(float(expected), abs=1e-5)


def test_file_format_is_json_in_the_reference_structure(features_file, tmp_path):
    path = tmp_path / "pairs.json"
    mine_pairs(features_file, path, ChamferTeacher(), 2, 3, progress=False)
    data = json.loads(path.read_text())
    assert data["format"] == "dnsvr-pairs/1" and data["teacher"] == "chamfer/efficientnet_lite0"
    assert data["index"] == sorted(data["index"]) and len(data["index"]) == 12
    assert set(data["pairs"]["0"]) == {"positives", "negatives"}
    assert all(isinstance(v, float) for v in data["pairs"]["0"]["positives"].values())
    loaded = PairSet.load(path)
    assert loaded.to_json() == data
    triplets = loaded.triplets(np.random.default_rng(0), per_anchor=2)
    assert len(triplets) == 24 and all(group(a) == group(p) for a, p, *_ in triplets)


def test_mining_resumes_scoring_only_missing_anchors(features_file, tmp_path):
    path = tmp_path / "pairs.json"
    full = mine_pairs(features_file, path, ChamferTeacher(), 2, 3, progress=False)
    partial = PairSet.load(path)
    for anchor in (1, 5, 7):
        del partial.pairs[anchor]
    partial.save(path)
    teacher = CountingTeacher()
    resumed = mine_pairs(features_file, path, teacher, 2, 3, progress=False)
    assert teacher.queries == 3
    assert resumed.to_json() == full.to_json()
    with pytest.raises(PairsFileError, match="other videos or settings"):
        mine_pairs(features_file, path, ChamferTeacher(), 2, 4, progress=False)
    assert mine_pairs(features_file, path, teacher, 2, 4, resume=False, progress=False).config["num_negatives"] == 4


def test_bad_pairs_files_are_refused(tmp_path):
    pickled = tmp_path / "pairs.pk"
    pickled.write_bytes(pickle.dumps({"index": ["a"], "pairs": {}}))
    with pytest.raises(PairsFileError, match="not a JSON"):
        PairSet.load(pickled)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "dnsvr-pairs/1", "index": ["a"],
                                 "pairs": {"0": {"positives": {"3": 0.5}, "negatives": {}}}}))
    with pytest.raises(PairsFileError, match="outside the index"):
        PairSet.load(wrong)
    with pytest.raises(PairsFileError, match="no such"):
        PairSet.load(tmp_path / "missing.json")


def test_teacher_loading_errors():
    with pytest.raises(ValueError, match="needs a checkpoint"):
        load_teacher("visil")
    with pytest.raises(ValueError, match="must be one of"):
        load_teacher("oracle", "x.pth")


def test_a_fine_student_can_be_the_next_teacher(features_file, tmp_path):
    from dnsvr.training.distill.train import save_checkpoint
    from dnsvr.training.networks.students import FineGrainedStudent

    torch.manual_seed(0)
    checkpoint = save_checkpoint(FineGrainedStudent(dims=32, attention=True), tmp_path / "fg_att.pth")
    teacher = FineStudentTeacher(checkpoint)
    assert teacher.name.startswith("fg_att_student")
    pair_set = mine_pairs(features_file, tmp_path / "iter1.json", teacher, 2, 3, progress=False)
    sims = [s for pools in pair_set.pairs.values() for pool in pools.values() for s in pool.values()]
    assert all(-1.0 <= s <= 1.0 for s in sims)


def test_visil_teacher_scores_with_a_visil_checkpoint(features_file, tmp_path):
    """A randomly initialised ViSiL head saved like the official `visil.pth` (a bare state_dict); the real
    file is a download, so only the plumbing is checked here, not the numbers."""
    from dnsvr.training.distill.teachers import ViSiLTeacher
    from dnsvr.training.networks.visil import ViSiLHead

    torch.manual_seed(0)
    torch.save(ViSiLHead(dims=32).state_dict(), tmp_path / "visil.pth")
    teacher = load_teacher("visil", tmp_path / "visil.pth")
    assert isinstance(teacher, ViSiLTeacher) and teacher.name == "visil (visil.pth)"
    pair_set = mine_pairs(features_file, tmp_path / "visil.json", teacher, 2, 3,
                          teacher_features_path=features_file, progress=False)
    sims = [s for pools in pair_set.pairs.values() for pool in pools.values() for s in pool.values()]
    assert len(sims) == 12 * (1 + 2 + 3) and all(-1.0 <= s <= 1.0 for s in sims)
