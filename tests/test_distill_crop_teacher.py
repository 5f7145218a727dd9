"""The Chamfer teacher over regions at several scales and orientations (`dnsvr.training.data.crop_regions`): the
crop grids, the region layout, a picture-in-picture copy found at its scale, a copy filmed sideways found by a
turned query, a blurred copy found by a blurred query, the corpus's teacher features (resumable) and the pairs
they score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dnsvr.training.data.corpus import CorpusConfig, build_corpus_features, build_teacher_features
from dnsvr.training.data.crop_regions import CropLayout, TeacherLayout
from dnsvr.training.data.features_io import list_ids, read_features, write_features
from dnsvr.training.data.synthetic import blur, rot90
from dnsvr.training.distill.pack_builder import PackConfig, train_pack
from dnsvr.training.distill.pairs import mine_pairs
from dnsvr.training.distill.teachers import ChamferTeacher, load_teacher

TINY_CORPUS = CorpusConfig(shared_videos=False, skvideo=False, synthetic_sources=2, synthetic_copies=1,
                           synthetic_frames=4)


def cell_colours(frames: torch.Tensor) -> torch.Tensor:
    """A stand-in extractor: uint8 `[N, S, S, 3]` -> `[N, 9, 3]`, the mean colour of each 3 x 3 grid cell."""
    x = frames.permute(0, 3, 1, 2).float()  # [N, 3, S, S]
    cells = torch.nn.functional.adaptive_avg_pool2d(x, 3)  # [N, 3, 3, 3]
    return cells.flatten(2).transpose(1, 2)  # [N, 9, 3]


def test_the_crop_grid_and_its_region_layout():
    layout = CropLayout(0.5, 0.25)
    assert layout.boxes[:4] == [(0.0, 0.0), (0.0, 0.25), (0.0, 0.5), (0.25, 0.0)] and len(layout.boxes) == 9
    assert len(CropLayout(0.3, 0.175).boxes) == 25 and CropLayout.parse("0.3:0.175") == CropLayout(0.3, 0.175)
    assert TeacherLayout((layout,)).regions_per_frame == 90 == TeacherLayout((layout,)).target_regions
    both = TeacherLayout((layout, CropLayout(0.3, 0.175)), query_turns=True)
    assert (both.target_regions, both.regions_per_frame) == (315, 342)
    assert both.slug() == "c0.5_s0.25_c0.3_s0.175_turns" and TeacherLayout(query_turns=True).regions_per_frame == 36
    for crop, stride in ((0.0, 0.25), (1.0, 0.25), (0.5, 0.75), (0.5, 0.0)):
        with pytest.raises(ValueError, match="crop layout"):
            CropLayout(crop, stride)
    for text in ("0.5", "0.5:x", "0.5:0.25:1"):
        with pytest.raises(ValueError, match="CROP:STRIDE"):
            CropLayout.parse(text)
    with pytest.raises(ValueError, match="needs a crop grid, query turns or query blurs"):
        TeacherLayout()
    blurred = TeacherLayout((layout, CropLayout(0.3, 0.175)), query_turns=True, query_blurs=(1.5, 3))
    assert (blurred.query_variants, blurred.regions_per_frame) == (5, 360)
    assert blurred.slug() == "c0.5_s0.25_c0.3_s0.175_turns_blur1.5_blur3"
    assert blurred.record()["query_blurs"] == [1.5, 3] and "blurred (sigma 1.5, 3 px at 224)" in blurred.describe()
    with pytest.raises(ValueError, match="sigmas > 0"):
        TeacherLayout(query_blurs=(0.0,))
    frames = np.zeros((2, 48, 48, 3), np.uint8)
    frames[:, :, :24] = (200, 0, 0)  # left half red, right half blue
    frames[:, :, 24:] = (0, 0, 200)
    frames[1] //= 2  # the second frame darker
    zoomed = CropLayout(0.5, 0.5).zoomed(frames)  # crop after crop, each [2 frames]
    assert zoomed.shape == (8, 48, 48, 3)
    assert (zoomed[0] == (200, 0, 0)).all() and (zoomed[1] == (100, 0, 0)).all()  # crop (0, 0), frames 0 and 1
    assert (zoomed[2] == (0, 0, 200)).all()  # crop (0, 0.5), frame 0
    regions = TeacherLayout((CropLayout(0.5, 0.5),)).regions(frames, cell_colours)
    assert regions.shape == (2, 45, 3) and regions.dtype == np.float32
    np.testing.assert_allclose(regions[:, :9], cell_colours(torch.from_numpy(frames)).numpy())
    np.testing.assert_allclose(regions[1, 9:18], np.tile([100.0, 0.0, 0.0], (9, 1)))  # frame 1, crop (0, 0)
    np.testing.assert_allclose(regions[0, 18:27], np.tile([0.0, 0.0, 200.0], (9, 1)))  # frame 0, crop (0, 0.5)


def unit(array: np.ndarray) -> np.ndarray:
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


def test_a_copy_seen_only_in_a_crop_scores_as_a_copy():
    rng = np.random.default_rng(0)
    layout = TeacherLayout((CropLayout(0.5, 0.5),))  # 4 crops: 45 regions
    query = unit(rng.standard_normal((5, 9, 16))).astype(np.float32)
    unrelated = unit(rng.standard_normal((5, 45, 16))).astype(np.float32)
    inset = unrelated.copy()
    inset[:, 9 + 2 * 9:9 + 3 * 9] = query  # the query's regions, seen only through the third crop
    teacher, plain = ChamferTeacher(layout=layout), ChamferTeacher()
    assert teacher.name == "chamfer/efficientnet_lite0 (full frame + 4 crops of 0.5 every 0.5)"
    scores = teacher.similarities(teacher.prepare(np.concatenate([query, unrelated[:, 9:]], axis=1)),
                                  [teacher.prepare(inset), teacher.prepare(unrelated)])
    assert scores[0] == pytest.approx(1.0, abs=1e-5) and scores[1] < 0.6
    full_only = plain.similarities(plain.prepare(query), [plain.prepare(inset[:, :9])])
    assert full_only[0] < 0.6  # the full frame's regions alone miss it
    with pytest.raises(ValueError, match="45 regions per frame"):
        teacher.prepare(query)
    with pytest.raises(ValueError, match="teacher layout is for the chamfer teacher"):
        load_teacher("visil", "visil.pth", layout=layout)


def mean_gradients(pixels: torch.Tensor) -> torch.Tensor:
    """A stand-in extractor that changes when a frame turns or blurs: uint8 `[N, S, S, 3]` -> `[N, 9, 8]`, each
    region's mean x and y gradients over 2 x 2 sub-cells."""
    grey = pixels.float().mean(-1)  # [N, S, S]
    dx, dy = grey[:, :-1, 1:] - grey[:, :-1, :-1], grey[:, 1:, :-1] - grey[:, :-1, :-1]  # [N, S-1, S-1]
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.stack([dx, dy], 1), 6)  # [N, 2, 6, 6]
    cells = pooled.reshape(len(pixels), 2, 3, 2, 3, 2).permute(0, 2, 4, 1, 3, 5)  # [N, 3, 3, 2, 2, 2]
    return cells.reshape(len(pixels), 9, 8)  # [N, 9, 8]


def test_a_copy_filmed_sideways_scores_by_the_querys_best_orientation():
    """Stand-in features that change when a frame turns (each region's mean gradients over 2 x 2 sub-cells): a
    copy turned by a quarter turn matches the query's frames turned the same way exactly, and its frames as
    filmed only partly; an unrelated video gains little from the turns."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, size=(3, 48, 48, 3), dtype=np.uint8)
    other = rng.integers(0, 255, size=(3, 48, 48, 3), dtype=np.uint8)

    def features(pixels: np.ndarray) -> np.ndarray:  # [T, 36, 8]: full frame, then its 3 turns
        return unit(layout.regions(pixels, mean_gradients)).astype(np.float32)

    layout = TeacherLayout(query_turns=True)
    teacher, plain = ChamferTeacher(layout=layout), ChamferTeacher()
    assert teacher.name.endswith("(full frame, query turned 0-3 quarter turns)")
    sideways, unrelated = features(rot90(frames, 1)), features(other)
    query = teacher.prepare(features(frames))
    assert layout.query_sides(query).shape == (4, 3, 9, 8)
    scores = teacher.similarities(query, [teacher.prepare(sideways), teacher.prepare(unrelated)])
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    as_filmed = plain.similarities(plain.prepare(features(frames)[:, :9]),
                                   [plain.prepare(sideways[:, :9]), plain.prepare(unrelated[:, :9])])
    assert as_filmed[0] < 0.8 and scores[1] >= as_filmed[1] and scores[1] < 0.8


def test_a_blurred_copy_scores_by_the_querys_blurred_frames():
    """A copy blurred as the query's blurred side is (sigma 7 px at 224 = 1.5 px on these 48-pixel frames)
    matches that side exactly, while its sharp frames match it only partly; an unrelated video stays far."""
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, size=(3, 48, 48, 3), dtype=np.uint8)
    other = rng.integers(0, 255, size=(3, 48, 48, 3), dtype=np.uint8)
    layout = TeacherLayout(query_blurs=(7.0,))

    def features(pixels: np.ndarray) -> np.ndarray:  # [T, 18, 8]: full frame, then blurred
        return unit(layout.regions(pixels, mean_gradients)).astype(np.float32)

    teacher, plain = ChamferTeacher(layout=layout), ChamferTeacher()
    copy, unrelated = features(blur(frames, 1.5)), features(other)
    query = teacher.prepare(features(frames))
    assert layout.query_sides(query).shape == (2, 3, 9, 8)
    scores = teacher.similarities(query, [teacher.prepare(copy), teacher.prepare(unrelated)])
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    sharp = plain.similarities(plain.prepare(features(frames)[:, :9]),
                               [plain.prepare(copy[:, :9]), plain.prepare(unrelated[:, :9])])
    assert sharp[0] < 0.8 and scores[1] < 0.7


def test_corpus_teacher_features_are_full_then_crops_resumable_and_score_pairs(tmp_path, efficientnet_extractor):
    features, crops = tmp_path / "corpus.h5", tmp_path / "crops.h5"
    build_corpus_features(TINY_CORPUS, features, extractor=efficientnet_extractor, progress=False)
    layout = TeacherLayout((CropLayout(0.5, 0.5),), query_turns=True, query_blurs=(1.5,))
    first = list_ids(features)[0]
    build_teacher_features(TINY_CORPUS, layout, features, crops, efficientnet_extractor, progress=False)
    stored = read_features(crops)
    full = read_features(features)
    assert list(stored) == list(full)
    for video_id, regions in stored.items():
        assert regions.shape == (len(full[video_id]), 81, 512)
        np.testing.assert_array_equal(regions[:, :9], full[video_id])
    description = build_teacher_features(TINY_CORPUS, layout, features, crops, extractor=lambda _: 1 / 0,
                                         progress=False)  # all there: nothing extracted again
    assert description == {"features": "crops.h5", "layout": {"grids": [{"crop": 0.5, "stride": 0.5}],
                                                              "query_turns": True, "query_blurs": [1.5]},
                           "regions_per_frame": 81, "videos": 4}
    np.testing.assert_array_equal(read_features(crops, [first])[first], stored[first])
    pairs = mine_pairs(features, tmp_path / "pairs.json", ChamferTeacher(layout=layout), num_positives=1,
                       num_negatives=1, teacher_features_path=crops, progress=False)
    for pools in pairs.pairs.values():
        assert all(-1.0 <= s <= 1.0 + 1e-5 for s in [*pools["positives"].values(), *pools["negatives"].values()])
    assert all(pairs.pairs[a]["positives"][a] == pytest.approx(1.0, abs=1e-5) for a in pairs.pairs)  # self pairs
    with pytest.raises(ValueError, match="not of the corpus"):
        build_teacher_features(CorpusConfig(shared_videos=False, skvideo=False, synthetic_sources=1), layout,
                               features, tmp_path / "other.h5", efficientnet_extractor, progress=False)


def test_teacher_crops_need_the_chamfer_teacher_and_a_given_corpus_its_teacher_file(tmp_path):
    given = tmp_path / "lc" / "features.h5"
    write_features(given, {"v": np.ones((4, 9, 512), np.float32)})
    for layout in ({"teacher_crops": ((0.5, 0.25),)}, {"teacher_turns": True}, {"teacher_blurs": (1.5,)}):
        with pytest.raises(ValueError, match="teacher crops, turns and blurs are the Chamfer teacher's"):
            train_pack(tmp_path / "pack", tmp_path / "work",
                       PackConfig(**layout, teacher_checkpoint=str(tmp_path / "t.pth")), progress=False)
        with pytest.raises(ValueError, match="the same --teacher-\\* options"):
            train_pack(tmp_path / "pack", tmp_path / "work", PackConfig(**layout, corpus_features=str(given)),
                       progress=False)
    assert not (tmp_path / "work" / "corpus.h5").exists()
