"""Building blocks of the DnS networks: attention, L2 constraint, binarization, NetVLAD, video comparator CNN.

Parameter names follow the reference implementation (mever-team/distill-and-select, MKLab-ITI/visil) so the
official checkpoints load with `strict=True`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def l2_constrain_(linear: nn.Module, eps: float = 1e-6) -> None:
    """Project `linear.weight` rows onto the unit sphere in place (the teacher's constraint on u)."""
    with torch.no_grad():
        linear.weight.copy_(F.normalize(linear.weight, p=2, dim=-1, eps=eps))


class Attention(nn.Module):
    """Region attention: `[..., D] -> ([..., D] weighted, [..., 1] weights)`.

    norm=False (students, selector): w = sigmoid(u . tanh(W x + b)).
    norm=True  (ViSiL teacher):      w = (u . x) / 2 + 0.5 with unit-norm u (see `apply_constraint`).
    """

    def __init__(self, dims: int, norm: bool = False):
        super().__init__()
        self.norm = norm
        if not norm:
            self.transform = nn.Linear(dims, dims)
        self.context_vector = nn.Linear(dims, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.norm:
            nn.init.normal_(self.context_vector.weight)
            l2_constrain_(self.context_vector)
        else:
            nn.init.xavier_uniform_(self.context_vector.weight)
            nn.init.xavier_uniform_(self.transform.weight)
            nn.init.zeros_(self.transform.bias)

    def apply_constraint(self) -> None:
        if self.norm:
            l2_constrain_(self.context_vector)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.norm:
            weights = self.context_vector(x) / 2.0 + 0.5
        else:
            weights = torch.sigmoid(self.context_vector(torch.tanh(self.transform(x))))
        return x * weights, weights


class BinarizationLayer(nn.Module):
    """S^f_B binarization: `[..., dims] -> [..., bits]`, sign(L2norm(x) @ W) in eval, erf relaxation in train.

    W is normally initialised from the ITQ rotation (`itq_resnet50W_dns100k_1M.pth`, key `proj`); pass it as
    `init_W`, otherwise it is random (the official checkpoints carry the trained W anyway).
    """

    def __init__(self, dims: int, bits: int | None = None, sigma: float = 1e-6, init_W: Tensor | None = None):
        super().__init__()
        self.sigma = sigma
        if init_W is not None:
            self.W = nn.Parameter(init_W.detach().clone().float())
        else:
            self.W = nn.Parameter(torch.rand(dims, bits or dims))

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(x, p=2, dim=-1) @ self.W
        if self.training:
            return torch.erf(x / math.sqrt(2 * self.sigma))
        return torch.sign(x)

    def extra_repr(self) -> str:
        return f"dims={self.W.shape[0]}, bits={self.W.shape[1]}, sigma={self.sigma}"


class NetVLAD(nn.Module):
    """NetVLAD over frames: x `[N, T, D]`, mask `[N, T]` bool -> `[N, outdims]` (reduced, LayerNorm).

    Vectorised over clusters: V[n, k] = sum_t a[n, k, t] (x[n, t] - c_k) over valid frames.
    """

    def __init__(self, dims: int, num_clusters: int, outdims: int | None = None):
        super().__init__()
        self.dims = dims
        self.num_clusters = num_clusters
        self.centroids = nn.Parameter(torch.randn(num_clusters, dims) / math.sqrt(dims))
        self.conv = nn.Conv2d(dims, num_clusters, kernel_size=1, bias=False)
        if outdims is not None:
            self.reduction_layer = nn.Linear(num_clusters * dims, outdims, bias=False)
        self.outdims = outdims if outdims is not None else num_clusters * dims
        self.norm = nn.LayerNorm(self.outdims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.conv.weight.copy_(self.centroids[:, :, None, None])
        if hasattr(self, "reduction_layer"):
            nn.init.normal_(self.reduction_layer.weight, std=1 / math.sqrt(self.num_clusters * self.dims))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        logits = torch.einsum("ntd,kd->nkt", x, self.conv.weight[:, :, 0, 0])
        assign = F.softmax(logits, dim=1)
        if mask is not None:
            assign = assign * mask[:, None, :].to(x.dtype)
        vlad = torch.einsum("nkt,ntd->nkd", assign, x) - assign.sum(dim=2, keepdim=True) * self.centroids
        vlad = F.normalize(vlad, p=2, dim=2).flatten(1)
        vlad = F.normalize(vlad, p=2, dim=1)
        if hasattr(self, "reduction_layer"):
            vlad = self.reduction_layer(vlad)
        return self.norm(vlad)


def _outer(rows: Tensor, cols: Tensor) -> Tensor:
    """rows `[P, H]`, cols `[P, W]` bool -> `[P, 1, H, W]`."""
    return (rows[:, :, None] & cols[:, None, :])[:, None]


def _length_mask(lengths: Tensor, size: int) -> Tensor:
    """lengths `[P]` -> `[P, size]` bool, True at positions < length."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def _extend_edges(x: Tensor, row_lengths: Tensor, col_lengths: Tensor) -> Tensor:
    """Fill every cell outside each pair's valid extent with its nearest valid cell (replication padding).

    x `[P, C, H, W]`, lengths `[P]` (>= 1) -> `[P, C, H, W]`.
    """
    p, c, h, w = x.shape
    rows = torch.minimum(torch.arange(h, device=x.device)[None, :], row_lengths[:, None] - 1)
    cols = torch.minimum(torch.arange(w, device=x.device)[None, :], col_lengths[:, None] - 1)
    x = x.gather(2, rows[:, None, :, None].expand(p, c, h, w))
    return x.gather(3, cols[:, None, None, :].expand(p, c, h, w))


class VideoComparator(nn.Module):
    """ViSiL's video comparator CNN on f2f matrices: `[P, Tq, Tt] -> [P, Tq//4, Tt//4]`, before Hardtanh.

    Three 3x3 convs (32, 64, 128 channels, ReLU, 2x2 max-pools after the first two) and a 1x1 conv to one
    channel.  padding="zero" (DnS students, selector) or "replicate" (ViSiL teacher).

    Each matrix p has a valid extent `row_lengths[p] x col_lengths[p]`; the rest is padding.  By default the
    result on the valid extent is exactly that of the unpadded matrix: cells outside it are reset to padding
    values before every conv and a pooled cell is valid only when its whole 2x2 window is (floor pooling, as
    on the unpadded matrix).  `reference_padding=True` instead keeps pooled windows that straddle the last
    valid row/column, as the reference implementation's masked pooling does (zero padding only).
    The returned valid extent is (row_lengths // 4, col_lengths // 4), or ceil-halved twice in reference mode;
    output cells outside it are unspecified (callers pool with the returned mask).  Conv outputs outside the
    extent are zeroed only in reference mode, where straddling pools read them: elsewhere nothing valid
    depends on them, and leaving them saves two masked passes over the largest activations.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, padding: str = "zero"):
        super().__init__()
        if padding not in ("zero", "replicate"):
            raise ValueError(f"padding must be 'zero' or 'replicate', got {padding!r}")
        self.padding = padding
        self.conv1 = nn.Conv2d(in_channels, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.conv3 = nn.Conv2d(64, 128, 3)
        self.fconv = nn.Conv2d(128, out_channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.conv1, self.conv2, self.conv3, self.fconv):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def _conv(self, conv: nn.Conv2d, x: Tensor, rows: Tensor | None, cols: Tensor | None,
              zero_outside: bool) -> Tensor:
        """Padded 3x3 conv + ReLU of the valid extent: x `[P, C, H, W]` -> `[P, C', H, W]`; cells outside the
        extent are zero when `zero_outside`, unspecified otherwise.  rows = cols = None: every cell is valid
        (nothing to reset: the same values without the masked passes)."""
        if rows is None or cols is None:
            if self.padding == "replicate":
                return F.relu(conv(F.pad(x, (1, 1, 1, 1), mode="replicate")))
            return F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))
        valid = _outer(_length_mask(rows, x.shape[2]), _length_mask(cols, x.shape[3]))
        if self.padding == "replicate":
            x = conv(F.pad(_extend_edges(x, rows, cols), (1, 1, 1, 1), mode="replicate"))
        else:  # zero padding inside the conv: one op where a separate Pad costs a copy of the activations
            x = F.conv2d(x.masked_fill(~valid, 0.0), conv.weight, conv.bias, padding=1)
        return F.relu(x.masked_fill(~valid, 0.0) if zero_outside else x)

    def _pooled_lengths(self, lengths: Tensor, size: int, reference_padding: bool) -> Tensor:
        halved = (lengths + 1) // 2 if reference_padding else lengths // 2
        return halved.clamp(max=size // 2)

    def forward(
        self,
        sim: Tensor,
        mask: Tensor | None = None,
        reference_padding: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """sim `[P, H, W]` (or `[P, 1, H, W]`), mask `[P, H, W]` (valid cells, a top-left rectangle per
        matrix; None: every cell) -> (output `[P, H//4, W//4]`, output mask `[P, H//4, W//4]` bool)."""
        if sim.ndim == 4:
            sim = sim.squeeze(1)
        if sim.ndim != 3:
            raise ValueError(f"similarity matrices must be [P, H, W], got shape {tuple(sim.shape)}")
        if reference_padding and self.padding != "zero":
            raise ValueError("reference_padding is only defined for the zero-padded comparator")
        x = sim[:, None]  # [P, 1, H, W]
        if mask is None:  # every cell valid: no extents to keep (the same values, without the masked passes)
            for conv in (self.conv1, self.conv2):
                x = F.max_pool2d(self._conv(conv, x, None, None, False), 2, 2)
            x = self.fconv(self._conv(self.conv3, x, None, None, False))[:, 0]  # [P, H//4, W//4]
            return x, torch.ones_like(x, dtype=torch.bool)
        p, h, w = sim.shape
        if tuple(mask.shape) != (p, h, w):
            raise ValueError(f"mask must have shape {(p, h, w)}, got {tuple(mask.shape)}")
        mask = mask != 0
        rows = mask.any(dim=2).sum(dim=1)
        cols = mask.any(dim=1).sum(dim=1)
        for conv in (self.conv1, self.conv2):
            x = F.max_pool2d(self._conv(conv, x, rows, cols, reference_padding), 2, 2)
            rows = self._pooled_lengths(rows, x.shape[2] * 2, reference_padding)
            cols = self._pooled_lengths(cols, x.shape[3] * 2, reference_padding)
        x = self.fconv(self._conv(self.conv3, x, rows, cols, reference_padding))[:, 0]
        out_mask = _outer(_length_mask(rows, x.shape[1]), _length_mask(cols, x.shape[2]))[:, 0]
        return x, out_mask
