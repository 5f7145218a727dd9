"""`video_views` (`dnsvr.serving.pipelines.views`): a video's crop views' S^c vectors, the same as the offline
evaluation's (`tradeoff.index_videos(crops=...)`) with the bundled pack's networks; short clips repeated as
their full frame is; bad input refused."""

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
from dnsvr.training.packs.model_pack import ModelPack

GRID = CropLayout(0.5, 0.25)


@pytest.fixture(scope="module")
def networks():
    pack = ModelPack.bundled()
    return pack.load_extractor(), pack.load("coarse")


def served(networks):
    """The extractor and coarse network as video_views calls them (numpy in, numpy out)."""
    extractor, coarse = networks

    @torch.inference_mode()
    def extract(frames: np.ndarray) -> dict[str, np.ndarray]:
        assert len(frames) <= spec.FEATURE_EXTRACTOR.max_batch_size
        return {"features": extractor(torch.from_numpy(frames)).numpy()}

    @torch.inference_mode()
    def embed(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        assert len(features) <= 4 and mask.all()  # coarse_batch below
        return coarse.index_video(torch.from_numpy(features)).numpy()

    return extract, embed


def request(**inputs) -> RequestInputs:
    return RequestInputs(inputs)


def test_a_decoded_video_gets_the_offline_evaluations_crop_views(videos_dir, networks):
    path = videos_dir / "pattern-longer-no-bar.mp4"
    extract, embed = served(networks)
    out = view_vectors(request(video=np.array([path.read_bytes()], object)), Decoding(1.0, 40, chunk=3), GRID,
                       extract, embed, batch=8, coarse_batch=4)["views"]
    frames = decode_video(path, max_frames=40)  # [8, 224, 224, 3]
    extractor, coarse = networks
    with torch.inference_mode():
        offline = coarse.index_video(torch.from_numpy(crop_views(GRID.crop_regions(frames, extractor))))  # [9, C]
    assert out.shape == (1, len(GRID.boxes), offline.shape[1]) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], offline.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out[0], axis=1), 1.0, atol=1e-5)


def test_a_short_clip_is_repeated_as_its_full_frame_is(videos_dir, networks):
    frames = decode_video(videos_dir / "pattern-longer-no-bar.mp4", max_frames=2)
    extract, embed = served(networks)
    short = view_vectors(request(frames=frames), Decoding(1.0, 10), GRID, extract, embed, coarse_batch=4)["views"]
    repeated = view_vectors(request(frames=np.concatenate([frames, frames])), Decoding(1.0, 10), GRID, extract,
                            embed, coarse_batch=4)["views"]
    np.testing.assert_allclose(short, repeated, atol=1e-6)


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
        view_vectors(RequestInputs(inputs), Decoding(1.0, 10), GRID, fail, fail)
