"""DnS/ViSiL frame feature extractor: ResNet50 -> L3-iMAC region vectors (3840-d) -> PCA whitening (512-d).

`FeatureExtractor(video)`: uint8 RGB `[T, H, W, 3]` -> `[T, R, dims]` float32 L2-normalised region features,
R = 9 for 224x224 frames (regions row-major over the pooled grid).  The ResNet50 is defined here with
torchvision's parameter names, so a torchvision ImageNet state_dict loads unchanged (without torchvision).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# max-pool kernel per ResNet stage for L3-iMAC (stride = ceil(kernel / 2)): 3x3 regions at 224x224.
REGION_KERNELS = {"layer1": 28, "layer2": 14, "layer3": 6, "layer4": 3}
MIN_SIDE = 109  # smallest side whose layer1 map (H/4) still fits the 28-wide pooling window


class VideoNormalizer(nn.Module):
    """uint8 `[T, H, W, 3]` RGB -> float32 `[T, 3, H, W]`, scaled to [0, 1] and ImageNet-standardised."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([255.0]), requires_grad=False)
        self.mean = nn.Parameter(torch.tensor(IMAGENET_MEAN), requires_grad=False)
        self.std = nn.Parameter(torch.tensor(IMAGENET_STD), requires_grad=False)

    def forward(self, video: Tensor) -> Tensor:
        video = (video.float() / self.scale - self.mean) / self.std
        return video.permute(0, 3, 1, 2)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv): `[N, C, H, W] -> [N, 4 * width, H / s, W / s]`."""

    expansion = 4

    def __init__(self, inplanes: int, width: int, stride: int = 1):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet50(nn.Module):
    """ResNet50 with torchvision's module names.  `stages(x)` yields the outputs of layer1..layer4."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (width, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
            layer = [Bottleneck(inplanes, width, stride)]
            inplanes = width * Bottleneck.expansion
            layer += [Bottleneck(inplanes, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)

    def stages(self, x: Tensor) -> dict[str, Tensor]:
        """`[N, 3, H, W]` -> {"layer1": `[N, 256, H/4, W/4]`, ..., "layer4": `[N, 2048, H/32, W/32]`}."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            out[name] = x
        return out

    def forward(self, x: Tensor) -> Tensor:
        """`[N, 3, H, W]` -> ImageNet logits `[N, num_classes]`."""
        return self.fc(torch.flatten(self.avgpool(self.stages(x)["layer4"]), 1))


class PCAWhitening(nn.Module):
    """PCA whitening + L2: `[..., 3840] -> [..., n_components]`, y = L2norm((x - mean) @ DVt)."""

    def __init__(self, in_dims: int = 3840, n_components: int = 512):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(in_dims), requires_grad=False)
        self.DVt = nn.Parameter(torch.eye(in_dims, n_components), requires_grad=False)

    @classmethod
    def from_eigen(cls, mean: Tensor, d: Tensor, V: Tensor, n_components: int = 512) -> PCAWhitening:
        """From the official PCA file's dict (`mean` [C], eigenvalues `d` [C], eigenvectors `V` [C, C] as
        columns): keep the n_components largest eigenvalues, DVt = V[:, idx] / sqrt(d[idx] + 1e-7)."""
        idx = torch.argsort(d, descending=True)[:n_components]
        pca = cls(mean.shape[0], n_components)
        with torch.no_grad():
            pca.mean.copy_(mean)
            pca.DVt.copy_(torch.mm(torch.diag(1.0 / torch.sqrt(d[idx] + 1e-7)), V[:, idx].T).T)
        return pca

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize((x - self.mean) @ self.DVt, p=2, dim=-1)


class FeatureExtractor(nn.Module):
    """uint8 video `[T, H, W, 3]` RGB -> `[T, R, dims]` region features (dims=3840: no PCA, L3-iMAC only)."""

    def __init__(self, dims: int = 512):
        super().__init__()
        self.dims = dims
        self.normalizer = VideoNormalizer()
        self.cnn = ResNet50()
        if dims != 3840:
            self.pca = PCAWhitening(3840, dims)

    def extract_region_vectors(self, x: Tensor) -> Tensor:
        """Normalised frames `[T, 3, H, W]` -> L3-iMAC region vectors `[T, R, 3840]` (L2-normalised).

        Each stage is max-pooled with kernel k, stride ceil(k/2), L2-normalised over channels, max-pooled to
        the layer4 grid and L2-normalised again; the four stages are concatenated (256+512+1024+2048
        channels)."""
        pooled = []
        for name, feat in self.cnn.stages(x).items():
            k = REGION_KERNELS[name]
            pooled.append(F.normalize(F.max_pool2d(feat, k, math.ceil(k / 2)), p=2, dim=1))
        grid = pooled[-1].shape[2:]
        x = torch.cat([F.normalize(F.adaptive_max_pool2d(p, grid), p=2, dim=1) for p in pooled], dim=1)
        return F.normalize(x.flatten(2).transpose(1, 2), p=2, dim=-1)

    def forward(self, video: Tensor, batch_size: int | None = None, progress: bool = False) -> Tensor:
        """uint8 `[T, H, W, 3]` -> `[T, R, dims]` float32; `batch_size` frames at a time to bound memory,
        with a tqdm progress bar over the batches if `progress`."""
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"video must be uint8 [T, H, W, 3] RGB, got shape {tuple(video.shape)}")
        if video.dtype != torch.uint8:
            raise TypeError(f"video must be uint8 RGB (0..255), got {video.dtype}")
        if video.shape[0] == 0:
            raise ValueError("video has no frames")
        if min(video.shape[1:3]) < MIN_SIDE:
            size = f"{video.shape[1]}x{video.shape[2]}"
            raise ValueError(f"frames of {size} are too small: L3-iMAC needs {MIN_SIDE}+ pixels a side")
        step = batch_size or video.shape[0]
        chunks = []
        for start in tqdm(range(0, video.shape[0], step), desc="frames", unit="batch", disable=not progress):
            x = self.extract_region_vectors(self.normalizer(video[start:start + step]))
            chunks.append(self.pca(x) if hasattr(self, "pca") else x)
        return torch.cat(chunks)
