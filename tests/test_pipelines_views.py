"""`video_views` (`dnsvr.serving.pipelines.views`): a video's crop views' S^c vectors and S^f_B codes, the same as
the offline evaluation's (`tradeoff.index_videos(crops=...)`) with the bundled pack's networks; short clips
repeated as their full frame is; bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dnsvr.client import spec
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs
from dnsvr.serving.pipelines.video import Decoding
from dnsvr.serving.pipelines.views import view_vectors
from dnsvr.training.data.crop_regions import CropLayout, crop_views
from dnsvr.training.data.video import decode_video
from dnsvr.training.evaluation.tradeoff import fine_scorer, index_videos
from dnsvr.training.networks.codes import pack_codes
from dnsvr.training.packs.model_pack import ModelPack

GRID = CropLayout(0.5, 0.25)


@pytest.fixture(scope="module")
def networks():
    pack = ModelPack.bundled()
    return pack.load_extractor(), pack.load("coarse"), pack.load("fine"), pack.load("selector")


def served(networks):
    """The extractor, coarse and fine index networks as video_views calls them (numpy in, numpy out)."""
    extractor, coarse, fine, _ = networks

    @torch.inference_mode()
    def extract(frames: np.ndarray) -> dict[str, np.ndarray]:
        assert len(frames) <= spec.FEATURE_EXTRACTOR.max_batch_size
        return {"features": extractor(torch.from_numpy(frames)).numpy()}

    @torch.inference_mode()
    def embed(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        assert len(features) <= 4 and mask.all()  # coarse_batch below
        return coarse.index_video(torch.from_numpy(features)).numpy()

    @torch.inference_mode()
    def codes(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        assert len(features) <= 4 and mask.all()
        return np.stack([pack_codes(fine.index_video(torch.from_numpy(crop)).numpy()) for crop in features])

    return extract, embed, codes


def request(**inputs) -> RequestInputs:
    return RequestInputs(inputs)


def test_a_decoded_video_gets_the_offline_evaluations_crop_views(videos_dir, networks):
    path = videos_dir / "pattern-longer-no-bar.mp4"
    answer = view_vectors(request(video=np.array([path.read_bytes()], object)), Decoding(1.0, 40, chunk=3), GRID,
                          *served(networks), batch=8, coarse_batch=4)
    out = answer["views"]
    frames = decode_video(path, max_frames=40)  # [8, 224, 224, 3]
    extractor, coarse, fine, selector = networks
    with torch.inference_mode():
        regions = GRID.crop_regions(frames, extractor)  # [T, 9 * 9, 512]
        offline = coarse.index_video(torch.from_numpy(crop_views(regions)))  # [9, C]
        full = extractor(torch.from_numpy(frames)).numpy()  # [T, 9, 512]
    assert out.shape == (1, len(GRID.boxes), offline.shape[1]) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], offline.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out[0], axis=1), 1.0, atol=1e-5)
    twin = index_videos({"clip": full}, coarse, selector, [fine_scorer(fine)], progress=False,
                        crops={"clip": regions})  # the offline index, every view's codes [T, 9 * 10, 64]
    stored = twin.stored_targets(fine_scorer(fine).name)[0]
    codes = answer["view_codes"]
    assert codes.shape == (1, len(GRID.boxes), len(frames), 9, 64) and codes.dtype == np.uint8
    for view in range(len(GRID.boxes)):  # crop view i's codes are the offline index's regions of view i + 1
        np.testing.assert_array_equal(codes[0, view], stored[:, 9 * (view + 1):9 * (view + 2)])


def test_a_short_clip_is_repeated_as_its_full_frame_is(videos_dir, networks):
    frames = decode_video(videos_dir / "pattern-longer-no-bar.mp4", max_frames=2)
    short = view_vectors(request(frames=frames), Decoding(1.0, 10), GRID, *served(networks), coarse_batch=4)
    repeated = view_vectors(request(frames=np.concatenate([frames, frames])), Decoding(1.0, 10), GRID,
                            *served(networks), coarse_batch=4)
    np.testing.assert_allclose(short["views"], repeated["views"], atol=1e-6)
    extract, embed, _ = served(networks)
    plain = view_vectors(request(frames=frames), Decoding(1.0, 10), GRID, extract, embed, None, coarse_batch=4)
    assert list(plain) == ["views"]  # an export whose store keeps no crop views' codes: none computed
    np.testing.assert_array_equal(plain["views"], short["views"])
    codes = short["view_codes"]  # the clip as decode_video repeats it: 4 frames, each crop's codes frame by frame
    assert codes.shape == (1, len(GRID.boxes), 4, 9, 64)
    twice = np.concatenate([codes, codes], axis=2)
    flipped = np.unpackbits(twice ^ repeated["view_codes"]).mean()
    assert flipped < 1e-3, flipped  # the same frames; a bit may flip where a batch of another size rounds apart


@pytest.mark.parametrize(("inputs", "message"), [
    ({"frames": np.zeros((0, 224, 224, 3), np.uint8)}, "0 frames"),
    ({"frames": np.zeros((11, 224, 224, 3), np.uint8)}, "maximum is 10"),
    ({"video": np.array([b""], object)}, "empty"),
    ({"video": np.array([b"not a video at all"], object)}, None),
])
def test_bad_input_is_refused_before_any_network_runs(inputs, message):
    def fail(*_):
        raise AssertionError("no network may run on bad input")

    with pytest.raises(BadRequest, match=message):
        view_vectors(RequestInputs(inputs), Decoding(1.0, 10), GRID, fail, fail, fail)
