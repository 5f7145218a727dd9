"""Synthetic videos from skimage photographs and the near-duplicate edits: replayable and deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dnsvr.training.data.synthetic import (
    ALL_EDIT_NAMES,
    ALL_PHOTOS,
    COLOUR_PHOTOS,
    EDIT_FAMILIES,
    EDIT_NAMES,
    EXTRA_EDIT_NAMES,
    PHOTOS,
    TEMPORAL_EDITS,
    EditRecord,
    apply_edit,
    copied_span,
    edit_video,
    encode_mp4,
    frame_map,
    load_photo,
    replay_edits,
    resize_frames,
    sample_edit,
    synthetic_video,
    write_mp4,
)
from dnsvr.training.data.video import decode_video

NUM_FRAMES = 8


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    return synthetic_video(7, NUM_FRAMES, photos=COLOUR_PHOTOS).frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def gradient_energy(frames: np.ndarray) -> float:
    x = frames.astype(np.float64)
    return float(np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean())


def test_every_photo_loads_offline_as_rgb():
    for name in PHOTOS:
        photo = load_photo(name)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3, name
        assert min(photo.shape[:2]) >= 100, name
    with pytest.raises(ValueError, match="unknown photo"):
        load_photo("lena")


def test_synthetic_video_is_deterministic_and_records_its_shots():
    first = synthetic_video(3, 12, photos=COLOUR_PHOTOS)
    again = synthetic_video(3, 12, photos=COLOUR_PHOTOS)
    other = synthetic_video(4, 12, photos=COLOUR_PHOTOS)
    assert first.frames.shape == (12, 224, 224, 3) and first.frames.dtype == np.uint8
    np.testing.assert_array_equal(first.frames, again.frames)
    assert first.shots == again.shots
    assert not np.array_equal(first.frames, other.frames)
    assert sum(shot["num_frames"] for shot in first.shots) == 12
    assert all(shot["photo"] in COLOUR_PHOTOS for shot in first.shots)
    assert len({shot["photo"] for shot in first.shots}) == len(first.shots)
    # the camera moves within a shot: consecutive frames differ, but stay alike (no cut)
    shot = first.shots[0]
    if shot["num_frames"] > 1:
        a, b = first.frames[0], first.frames[1]
        assert not np.array_equal(a, b) and psnr(a, b) > 12


@pytest.mark.parametrize("name", EDIT_NAMES)
def test_edit_is_deterministic_replayable_and_changes_the_video(video, name):
    record = sample_edit(name, np.random.default_rng(11), 0.8, len(video))
    assert record == sample_edit(name, np.random.default_rng(11), 0.8, len(video))
    edited = apply_edit(video, record)
    np.testing.assert_array_equal(edited, apply_edit(video, record))
    # the record survives JSON and replays to the same frames
    restored = EditRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    np.testing.assert_array_equal(replay_edits(video, [restored]), edited)
    assert edited.dtype == np.uint8 and edited.shape[1:] == video.shape[1:]
    if name in TEMPORAL_EDITS:
        assert 4 <= len(edited) < len(video) or name == "speed"
    else:
        assert len(edited) == len(video)
    assert edited.shape != video.shape or not np.array_equal(edited, video)


def test_spatial_edits_do_what_their_record_says(video):
    np.testing.assert_array_equal(apply_edit(video, EditRecord("flip")), video[:, :, ::-1])

    grey = apply_edit(video, EditRecord("greyscale"))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()

    box = {"top": 0.25, "left": 0.5, "height": 0.5, "width": 0.25}
    np.testing.assert_array_equal(
        apply_edit(video, EditRecord("crop", box)), resize_frames(video[:, 56:168, 112:168], 224, 224)
    )

    letterbox = apply_edit(video, EditRecord("borders", {"kind": "letterbox", "fraction": 0.1}))
    bar = round(0.1 * 224)
    assert (letterbox[:, :bar] == 0).all() and (letterbox[:, -bar:] == 0).all()
    assert letterbox[:, bar:-bar].mean() > 10
    pillarbox = apply_edit(video, EditRecord("borders", {"kind": "pillarbox", "fraction": 0.1}))
    assert (pillarbox[:, :, :bar] == 0).all() and (pillarbox[:, :, -bar:] == 0).all()

    brighter = apply_edit(
        video, EditRecord("colour", {"brightness": 30.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0})
    )
    assert brighter.astype(float).mean() > video.astype(float).mean() + 20

    for edit in (EditRecord("blur", {"sigma": 2.0}), EditRecord("rescale", {"factor": 0.3})):
        assert gradient_energy(apply_edit(video, edit)) < 0.8 * gradient_energy(video), edit.name


def test_overlay_changes_only_its_box(video):
    record = EditRecord("overlay", {"kind": "logo", "height": 0.25, "top": 0.1, "left": 0.2, "opacity": 1.0})
    out = apply_edit(video, record)
    changed = np.any(out != video, axis=(0, 3))
    rows, cols = np.nonzero(changed)
    assert rows.size > 0
    assert rows.min() >= round(0.1 * 224) and rows.max() < round(0.1 * 224) + round(0.25 * 224)
    assert cols.min() >= round(0.2 * 224)
    text = apply_edit(
        video,
        EditRecord(
            "overlay",
            {"kind": "text", "height": 0.1, "top": 0.8, "left": 0.05, "opacity": 1.0, "text": "LIVE"},
        ),
    )
    assert not np.array_equal(text, video)
    assert np.array_equal(text[:, : round(0.8 * 224)], video[:, : round(0.8 * 224)])


def test_picture_in_picture_places_the_video_over_the_background(video):
    params = {"background": "coins", "scale": 0.5, "top": 0.25, "left": 0.5}
    out = apply_edit(video, EditRecord("picture_in_picture", params))
    np.testing.assert_array_equal(out[:, 56:168, 112:224], resize_frames(video, 112, 112))
    assert (out[:, :56] == out[:1, :56]).all()  # the host outside the inset is a still photograph


def test_temporal_edits_follow_their_record(video):
    np.testing.assert_array_equal(apply_edit(video, EditRecord("trim", {"start": 2, "stop": 6})), video[2:6])
    dropped = apply_edit(video, EditRecord("drop_frames", {"indices": [1, 4]}))
    np.testing.assert_array_equal(dropped, video[[0, 2, 3, 5, 6, 7]])
    np.testing.assert_array_equal(apply_edit(video, EditRecord("speed", {"factor": 2.0})), video[::2])
    np.testing.assert_array_equal(
        apply_edit(video, EditRecord("speed", {"factor": 0.5})), np.repeat(video, 2, 0)
    )
    with pytest.raises(ValueError, match="outside a video"):
        apply_edit(video, EditRecord("trim", {"start": 5, "stop": 20}))


def test_reencode_goes_through_pyav(video):
    data = encode_mp4(video, bitrate=20_000)
    assert data[4:8] == b"ftyp"
    decoded = decode_video(data, fps=1.0, size=None, full_frames=True, min_frames=0)
    edited = apply_edit(video, EditRecord("reencode", {"bitrate": 20_000, "codec": "libx264"}))
    np.testing.assert_array_equal(edited, decoded)  # exactly what the real decoder makes of the real mp4
    assert 20 < psnr(edited, video) < 60
    # byte-identical on every call (single-threaded x264 without mb-tree)
    assert all(encode_mp4(video, bitrate=20_000) == data for _ in range(5))
    # a lower bit rate loses more
    low = apply_edit(video, EditRecord("reencode", {"bitrate": 3_000, "codec": "libx264"}))
    assert psnr(low, video) < psnr(edited, video)


def test_write_mp4_round_trips_through_the_decoder(video, tmp_path):
    path = write_mp4(video, tmp_path / "clip.mp4", crf=18)
    decoded = decode_video(path, size=None, min_frames=0)
    assert decoded.shape == video.shape
    assert psnr(decoded, video) > 28
    assert not list(tmp_path.glob("*.partial"))


def test_edit_video_chains_records_deterministically(video):
    out, records = edit_video(video, ["crop", "reencode", "drop_frames"], 5, strength=0.6)
    again, records_again = edit_video(video, ["crop", "reencode", "drop_frames"], 5, strength=0.6)
    assert records == records_again and [r.name for r in records] == ["crop", "reencode", "drop_frames"]
    np.testing.assert_array_equal(out, again)
    np.testing.assert_array_equal(replay_edits(video, [r.to_dict() for r in records]), out)
    stronger = sample_edit("blur", np.random.default_rng(0), 1.0, 8).params["sigma"]
    assert stronger > sample_edit("blur", np.random.default_rng(0), 0.1, 8).params["sigma"]


def test_bad_input_is_rejected(video):
    with pytest.raises(ValueError, match="uint8"):
        apply_edit(video.astype(np.float32), EditRecord("flip"))
    with pytest.raises(ValueError, match="T = 0"):
        apply_edit(video[:0], EditRecord("flip"))
    with pytest.raises(ValueError, match="unknown edit"):
        apply_edit(video, EditRecord("swirl"))
    with pytest.raises(ValueError, match="strength"):
        sample_edit("blur", np.random.default_rng(0), 1.5, 8)
    with pytest.raises(ValueError, match="every frame"):
        apply_edit(video[:2], EditRecord("drop_frames", {"indices": [0, 1]}))


def test_extra_photos_load_offline_as_rgb():
    for name in ALL_PHOTOS[len(PHOTOS):]:
        photo = load_photo(name)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3, name
        assert min(photo.shape[:2]) >= 150, name


@pytest.mark.parametrize("name", EXTRA_EDIT_NAMES)
def test_extra_edit_is_deterministic_replayable_and_changes_the_video(video, name):
    record = sample_edit(name, np.random.default_rng(5), 0.8, len(video), backgrounds=("grace_hopper",))
    assert record == sample_edit(name, np.random.default_rng(5), 0.8, len(video), backgrounds=("grace_hopper",))
    edited = apply_edit(video, record)
    restored = EditRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    np.testing.assert_array_equal(replay_edits(video, [restored]), edited)
    assert edited.dtype == np.uint8 and edited.shape[1:] == video.shape[1:]
    assert len(edited) == len(frame_map(len(video), [record]))
    assert edited.shape != video.shape or not np.array_equal(edited, video)


def test_extra_edits_leave_the_original_draws_alone():
    # the original catalogue draws exactly what it drew before the extra edits existed
    record = sample_edit("picture_in_picture", np.random.default_rng(0), 0.5, 8, backgrounds=("coins",))
    assert set(record.params) == {"background", "scale", "top", "left"}
    assert not set(EDIT_NAMES) & set(EXTRA_EDIT_NAMES)
    families = [name for names in EDIT_FAMILIES.values() for name in names]
    assert sorted(families) == sorted(ALL_EDIT_NAMES)  # every edit in exactly one family


def test_picture_in_picture_bands_and_moving_host(video):
    scales = {name: sample_edit(name, np.random.default_rng(1), 0.5, 8).params["scale"]
              for name in ("pip_small", "pip_medium", "pip_large")}
    assert 0.2 <= scales["pip_small"] <= 0.3 < 0.35 <= scales["pip_medium"] <= 0.45 < 0.55 <= scales["pip_large"]
    params = {"background": "coins", "scale": 0.25, "top": 0.0, "left": 0.0, "host_seed": 3}
    out = apply_edit(video, EditRecord("pip_small", params))
    np.testing.assert_array_equal(out[:, :56, :56], resize_frames(video, 56, 56))
    assert not (out[:, 100:] == out[:1, 100:]).all()  # the host is moving footage, not a still


def test_partial_copy_splices_the_source_into_foreign_footage(video):
    params = {"host_seed": 9, "host_photo": "moon", "start": 2, "stop": 6, "before": 3, "after": 2}
    record = EditRecord("partial", params)
    out = apply_edit(video, record)
    assert out.shape == (9, 224, 224, 3)
    np.testing.assert_array_equal(out[3:7], video[2:6])
    assert not np.array_equal(out[:3], video[:3])
    np.testing.assert_array_equal(frame_map(8, [record]), [-1, -1, -1, 2, 3, 4, 5, -1, -1])
    assert copied_span(8, [record]) == (2, 6, 3, 7)
    # a later temporal edit moves the span with it
    assert copied_span(8, [record, EditRecord("trim", {"start": 4, "stop": 9})]) == (3, 6, 0, 3)
    assert copied_span(8, [EditRecord("speed", {"factor": 2.0})]) == (0, 7, 0, 4)
    assert copied_span(8, [record, EditRecord("trim", {"start": 7, "stop": 9})]) is None
    with pytest.raises(ValueError, match="outside a video"):
        apply_edit(video, EditRecord("partial", {**params, "stop": 20}))


def test_rotations_and_frame_rate_do_what_their_record_says(video):
    np.testing.assert_array_equal(apply_edit(video, EditRecord("rot90", {"turns": 2})), video[:, ::-1, ::-1])
    quarter = apply_edit(video, EditRecord("rot90", {"turns": 1}))
    np.testing.assert_array_equal(quarter[:, 0, :], video[:, :, -1])  # the right column becomes the top row
    dot = np.zeros((1, 9, 9, 3), np.uint8)
    dot[0, 4, 8] = 255  # right of the centre
    assert np.argwhere(apply_edit(dot, EditRecord("rotate", {"angle": 90.0}))[0, ..., 0] > 100).tolist() == [[8, 4]]
    tilted = apply_edit(video, EditRecord("rotate", {"angle": 15.0}))
    assert (tilted[:, 0, 0] < 10).all() and psnr(tilted[:, 90:134, 90:134], video[:, 90:134, 90:134]) > 15
    np.testing.assert_array_equal(apply_edit(video, EditRecord("frame_rate", {"phase": 0.0})), video)
    half = apply_edit(video, EditRecord("frame_rate", {"phase": 0.5})).astype(int)
    expected = (video[:-1].astype(int) + video[1:]) / 2
    assert np.abs(half[:-1] - expected).max() <= 1


def test_the_edits_and_the_model_pack_import_without_a_video_library() -> None:
    """Only `encode_mp4` needs PyAV: the pack (and so the graphs' benchmark on a GPU machine) loads without it."""
    import subprocess
    import sys

    code = ("import sys; import dnsvr.training.packs.model_pack, dnsvr.training.data.synthetic; "
            "assert 'av' not in sys.modules, 'av was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
