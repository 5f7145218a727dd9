"""Iterative quantization (ITQ, Gong & Lazebnik 2011): the initial W of the S^f_B binarization layer.

The layer codes a region x as sign(x / |x| @ W) with no offset, so ITQ runs on the L2-normalised, *uncentred*
regions: PCA of their second moment gives the top `bits` directions V `[D, bits]`, then ITQ alternates codes
B = sign(X V R) and the orthogonal Procrustes rotation R minimising |B - X V R|_F.  W = V R `[D, bits]`;
with bits = D (the DnS setting, 512) W is itself an orthogonal matrix.  Files use the reference's
`itq_resnet50W_dns100k_1M.pth` layout, `{'proj': W}`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from dnsvr.training.files import atomic_path
from tqdm import tqdm


def sample_regions(videos: Iterable[np.ndarray], max_regions: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `max_regions` region vectors drawn uniformly from videos `[T, R, D]` -> L2-normalised `[n, D]`.

    Reservoir sampling, so the videos are read once and never all held in memory.
    """
    reservoir: np.ndarray | None = None
    seen = 0
    for video in videos:
        regions = np.asarray(video, dtype=np.float32).reshape(-1, video.shape[-1])
        if reservoir is None:
            reservoir = np.empty((max_regions, regions.shape[1]), np.float32)
        fill = max(0, min(max_regions - seen, len(regions)))
        reservoir[seen : seen + fill] = regions[:fill]
        rest = regions[fill:]
        if len(rest):
            slots = rng.integers(0, seen + fill + np.arange(1, len(rest) + 1))
            chosen = slots < max_regions
            reservoir[slots[chosen]] = rest[chosen]
        seen += len(regions)
    if reservoir is None or seen == 0:
        raise ValueError("no region vectors to sample: the videos are empty")
    sample = reservoir[: min(seen, max_regions)]
    return sample / np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12)


def random_rotation(size: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random orthogonal matrix `[size, size]` (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((size, size)))
    return q * np.sign(np.diag(r))[None, :]


def quantization_error(x: np.ndarray, projection: np.ndarray) -> float:
    """Mean squared distance between projected regions and their codes: mean |sign(x W) - x W|^2 per row.

    x `[n, D]`, projection W `[D, bits]` -> float.
    """
    projected = x @ projection
    return float(np.mean(np.sum((np.sign(projected) - projected) ** 2, axis=1)))


def itq(x: np.ndarray, bits: int | None = None, iterations: int = 50, seed: int = 0,
        progress: bool = False) -> np.ndarray:
    """ITQ projection of regions x `[n, D]` (L2-normalised) -> W `[D, bits]` float32 (bits <= D, default
    D).  `seed` fixes the initial random rotation."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"ITQ needs regions [n >= 2, D], got shape {x.shape}")
    dims = x.shape[1]
    bits = dims if bits is None else bits
    if not 1 <= bits <= dims:
        raise ValueError(f"bits must be in 1..{dims}, got {bits}")
    eigenvalues, eigenvectors = np.linalg.eigh(x.T @ x / len(x))
    directions = eigenvectors[:, np.argsort(eigenvalues)[::-1][:bits]]
    projected = x @ directions
    rotation = random_rotation(bits, np.random.default_rng(seed))
    for _ in tqdm(range(iterations), desc="ITQ", unit="iter", disable=not progress):
        codes = np.sign(projected @ rotation)
        codes[codes == 0] = 1.0
        u, _, vt = np.linalg.svd(projected.T @ codes)
        rotation = u @ vt
    return (directions @ rotation).astype(np.float32)


def save_itq(path: str | Path, projection: np.ndarray | torch.Tensor) -> Path:
    """Write W `[D, bits]` as `{'proj': W}` (the reference's ITQ file layout)."""
    with atomic_path(path) as partial:
        torch.save({"proj": torch.as_tensor(np.asarray(projection), dtype=torch.float32)}, partial)
    return Path(path)


def load_itq(path: str | Path) -> torch.Tensor:
    """W `[D, bits]` float32 from an ITQ file (`{'proj': W}`, ours or the reference's)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ITQ file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    projection = state.get("proj") if isinstance(state, dict) else None
    if not isinstance(projection, torch.Tensor) or projection.ndim != 2:
        raise ValueError(f"{path}: not an ITQ file (expected {{'proj': [D, bits] tensor}})")
    return projection.float()
