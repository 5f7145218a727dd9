"""Masked Chamfer similarities, the short-video repetition rule and the shared masked pooling.

Shapes: a video is `[T, R, D]` float32 (frames, regions, dims); a zero-padded batch is `[N, T, R, D]` with a
frame mask `[N, T]` (bool, or 0/1 float) that is True at real frames.  Everything here honours the masks
exactly: what padded positions contain never reaches an output.
"""

from __future__ import annotations

import torch
from torch import Tensor

MIN_FRAMES = 4


def as_batch(x: Tensor, mask: Tensor | None = None, name: str = "video") -> tuple[Tensor, Tensor, bool]:
    """`[T, R, D]` or `[N, T, R, D]` (+ mask `[N, T]`) -> (`[N, T, R, D]`, bool mask `[N, T]`, was 3-D).

    Padded frames are set to 0, so nothing they held (even NaN) can reach an output.  Raises ValueError on a
    wrong rank, a mask of the wrong shape or a video with no real frame, TypeError on non-float features.
    """
    if x.ndim == 3:
        if mask is not None:
            mask = mask.reshape(1, -1)
        x, single = x.unsqueeze(0), True
    elif x.ndim == 4:
        single = False
    else:
        raise ValueError(f"{name} must be [T, R, D] or [N, T, R, D], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} features must be floating point, got {x.dtype}")
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    else:
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"{name} mask must have shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        mask = mask.to(device=x.device) != 0
    if x.shape[1] == 0 or not bool(mask.any(dim=1).all()):
        raise ValueError(f"{name}: every video needs at least one real frame (mask all False or T == 0)")
    if not bool(mask.all()):
        x = x.masked_fill(~mask.reshape(*mask.shape, *([1] * (x.ndim - 2))), 0.0)
    return x, mask, single


def repeated_lengths(lengths: Tensor) -> Tensor:
    """Lengths under the short-video rule, doubled until >= MIN_FRAMES (1 -> 4, 2 -> 4, 3 -> 6): `[N]`."""
    out = lengths.clone()
    while bool((out < MIN_FRAMES).any()):
        out = torch.where(out < MIN_FRAMES, out * 2, out)
    return out


def canonical_frames(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Put each video's real frames first and apply the short-video repetition rule.

    A video with L < 4 real frames is concatenated with itself until it has at least 4 (1 -> 4, 2 -> 4,
    3 -> 6), as the reference's data loaders do, so the comparator always has a non-empty output.  Real
    frames that are not a prefix of the mask are moved to the front, in order.  Padded positions become 0.
    x `[N, T, ...]`, mask `[N, T]` bool -> (`[N, T', ...]`, `[N, T']` bool), T' = max(T, longest repeated).
    Returns the inputs unchanged when every video already is a prefix of >= 4 frames.
    """
    lengths = mask.sum(dim=1)
    n, t = mask.shape
    is_prefix = bool((mask == (torch.arange(t, device=mask.device)[None, :] < lengths[:, None])).all())
    if is_prefix and bool((lengths >= MIN_FRAMES).all()):
        return x, mask
    new_lengths = repeated_lengths(lengths)
    new_t = max(t, int(new_lengths.max()))
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
    positions = torch.arange(new_t, device=x.device)[None, :]
    new_mask = positions < new_lengths[:, None]
    source = order.gather(1, torch.where(new_mask, positions % lengths[:, None], 0))
    index = source.reshape(n, new_t, *([1] * (x.ndim - 2))).expand(n, new_t, *x.shape[2:])
    frames = x.gather(1, index).masked_fill(~new_mask.reshape(n, new_t, *([1] * (x.ndim - 2))), 0.0)
    return frames, new_mask


def check_same_dims(query: Tensor, target: Tensor) -> None:
    """Raise ValueError unless query and target features have the same dimensionality (last axis)."""
    if query.shape[-1] != target.shape[-1]:
        raise ValueError(f"query has {query.shape[-1]}-d features, target {target.shape[-1]}-d: must match")


def masked_max(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Max of `x` over `dim` among positions where `mask` (broadcastable to x) is True; 0 where none is."""
    mask = mask.expand_as(x)
    lowest = torch.finfo(x.dtype).min
    out = torch.where(mask, x, torch.full_like(x, lowest)).amax(dim=dim)
    return torch.where(mask.any(dim=dim), out, torch.zeros_like(out))


def masked_mean(x: Tensor, mask: Tensor, dim: int | tuple[int, ...]) -> Tensor:
    """Mean of `x` over `dim` among positions where `mask` (broadcastable to x) is True; 0 where none is."""
    mask = mask.expand_as(x)
    total = torch.where(mask, x, torch.zeros_like(x)).sum(dim=dim)
    count = mask.sum(dim=dim).to(x.dtype)
    return total / count.clamp(min=1)


def region_chamfer(query: Tensor, target: Tensor, scale: float = 1.0) -> Tensor:
    """Frame-to-frame matrices of all pairs: region dot products, max over target regions, mean over query.

    query `[Nq, Tq, R, D]`, target `[Nt, Tt, R', D]` -> `[Nq, Nt, Tq, Tt]` (dot products divided by `scale`).
    """
    sim = torch.einsum("aird,bjsd->abijrs", query, target)
    sim = sim.amax(dim=-1).mean(dim=-1)
    return sim / scale if scale != 1.0 else sim


def frame_chamfer(f2f: Tensor, query_mask: Tensor, target_mask: Tensor) -> Tensor:
    """Video-level Chamfer of f2f matrices: max over valid target frames, mean over valid query frames.

    f2f `[..., Tq, Tt]`, query_mask `[..., Tq]`, target_mask `[..., Tt]` (bool) -> `[...]`.
    """
    best = masked_max(f2f, target_mask.unsqueeze(-2), dim=-1)
    return masked_mean(best, query_mask, dim=-1)


def chamfer_similarity(
    query: Tensor,
    target: Tensor,
    query_mask: Tensor | None = None,
    target_mask: Tensor | None = None,
) -> Tensor:
    """Teacher-free fine-grained similarity (ViSiL's Chamfer without the learned comparator).

    Region-level Chamfer (max over target regions, mean over query regions) gives the frame-to-frame matrix;
    frame-level Chamfer (max over valid target frames, mean over valid query frames) gives the score.
    Features are assumed L2-normalised.

    query `[Tq, R, D]` or `[Nq, Tq, R, D]` (+ mask `[Nq, Tq]`), target `[Tt, R, D]` or `[Nt, Tt, R, D]`
    (+ mask `[Nt, Tt]`) -> `[Nq, Nt]` float; a 3-D side drops its axis (two 3-D videos -> a 0-d tensor).
    """
    q, q_mask, q_single = as_batch(query, query_mask, "query")
    t, t_mask, t_single = as_batch(target, target_mask, "target")
    check_same_dims(q, t)
    f2f = region_chamfer(q, t)
    sim = frame_chamfer(f2f, q_mask[:, None, :], t_mask[None, :, :])
    if t_single:
        sim = sim.squeeze(1)
    if q_single:
        sim = sim.squeeze(0)
    return sim
