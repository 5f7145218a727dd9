"""DnS student networks: the fine-grained ViSiL-style students (S^f_A, S^f_B) and the coarse student S^c.

Inputs are region features: one video `[T, R, D]` float32, or a zero-padded batch `[N, T, R, D]` with a frame
mask `[N, T]` (bool or 0/1 float, True at real frames).  A pair's score never depends on what else is in the
batch nor on the padded content (see `VideoComparator` and `canonical_frames`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from dnsvr.training.networks.codes import unpack_codes
from dnsvr.training.networks.layers import Attention, BinarizationLayer, NetVLAD, VideoComparator
from dnsvr.training.networks.similarity import (
    as_batch,
    canonical_frames,
    check_same_dims,
    frame_chamfer,
    masked_mean,
    region_chamfer,
)
from torch import Tensor, nn


def _outer_mask(query_mask: Tensor, target_mask: Tensor) -> Tensor:
    """`[Nq, Tq]`, `[Nt, Tt]` bool -> `[Nq*Nt, Tq, Tt]` (pair p = i*Nt + j)."""
    outer = query_mask[:, None, :, None] & target_mask[None, :, None, :]
    return outer.flatten(0, 1)


class FineGrainedStudent(nn.Module):
    """S^f: region-level Chamfer frame-to-frame matrix -> video comparator CNN -> Hardtanh -> Chamfer score.

    attention=True is S^f_A (region attention on the features), binarization=True is S^f_B (±1 codes, the
    frame-to-frame similarity divided by the code length).  reference_padding=True reproduces the reference's
    padded-batch numbers (pooled windows straddling the last real frame); the default gives every pair its
    unpadded score whatever the batch.
    """

    def __init__(
        self,
        dims: int = 512,
        attention: bool = False,
        binarization: bool = False,
        reference_padding: bool = False,
    ):
        super().__init__()
        if attention and binarization:
            raise ValueError("attention=True and binarization=True are exclusive: pick one student type")
        self.dims = dims
        self.reference_padding = reference_padding
        if binarization:
            self.fg_type = "bin"
            self.binarization = BinarizationLayer(dims)
        elif attention:
            self.fg_type = "att"
            self.attention = Attention(dims, norm=False)
        else:
            self.fg_type = "none"
        self.visil_head = VideoComparator(padding="zero")
        self.htanh = nn.Hardtanh()
        self.chunk_elements: int | None = 1 << 25

    def get_network_name(self) -> str:
        return f"fg_{self.fg_type}_student"

    def index_video(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Region features `[T, R, D]` or `[N, T, R, D]` (+ mask `[N, T]`) -> indexed features, same shape.

        S^f_A: attention-weighted features; S^f_B: ±1 codes (sign(L2norm(x) @ W) in eval).  0 at padding.
        """
        if self.fg_type == "bin":
            x = self.binarization(x)
        elif self.fg_type == "att":
            x, _ = self.attention(x)
        if mask is not None:
            x = x.masked_fill((mask == 0).reshape(*mask.shape, 1, 1), 0.0)
        return x

    def _prepare(self, query, target, query_mask, target_mask):
        q, q_mask, _ = as_batch(query, query_mask, "query")
        t, t_mask, _ = as_batch(target, target_mask, "target")
        check_same_dims(q, t)
        q, q_mask = canonical_frames(q, q_mask)
        t, t_mask = canonical_frames(t, t_mask)
        return q, t, q_mask, t_mask

    def _f2f(self, q: Tensor, t: Tensor, q_mask: Tensor, t_mask: Tensor) -> tuple[Tensor, Tensor]:
        scale = float(t.shape[-1]) if self.fg_type == "bin" else 1.0
        sim = region_chamfer(q, t, scale).flatten(0, 1)
        sim_mask = _outer_mask(q_mask, t_mask)
        return sim.masked_fill(~sim_mask, 0.0), sim_mask

    def frame_to_frame_similarity(
        self,
        query: Tensor,
        target: Tensor,
        query_mask: Tensor | None = None,
        target_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Indexed query `[Nq, Tq, R, D]`, target `[Nt, Tt, R, D]` (or 3-D) + masks -> (f2f `[Nq*Nt, Tq, Tt]`,
        mask `[Nq*Nt, Tq, Tt]` bool), pair p = i*Nt + j; masked cells are 0.  Short videos are repeated
        first."""
        return self._f2f(*self._prepare(query, target, query_mask, target_mask))

    def similarity_matrix(
        self,
        query: Tensor,
        target: Tensor,
        query_mask: Tensor | None = None,
        target_mask: Tensor | None = None,
        reference_padding: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """-> (Hardtanh(comparator output) `[Nq*Nt, Tq//4, Tt//4]`, its valid mask, same shape, bool)."""
        ref = self.reference_padding if reference_padding is None else reference_padding
        sim, sim_mask = self.frame_to_frame_similarity(query, target, query_mask, target_mask)
        sim, sim_mask = self.visil_head(sim, sim_mask, reference_padding=ref)
        return self.htanh(sim), sim_mask

    def calculate_video_similarity(
        self,
        query: Tensor,
        target: Tensor,
        query_mask: Tensor | None = None,
        target_mask: Tensor | None = None,
        reference_padding: bool | None = None,
    ) -> Tensor:
        """Indexed query `[Tq, R, D]` / `[Nq, Tq, R, D]`, target `[Tt, R, D]` / `[Nt, Tt, R, D]` (+ masks)
        -> `[Nq, Nt]` scores in [-1, 1] (Nq = 1 / Nt = 1 for a 3-D input).

        Targets are processed in chunks of about `chunk_elements` floats of intermediate memory (exact: a
        pair's score does not depend on its chunk); set `chunk_elements = None` for one pass (e.g. export).
        """
        ref = self.reference_padding if reference_padding is None else reference_padding
        q, t, q_mask, t_mask = self._prepare(query, target, query_mask, target_mask)
        n_q, n_t = q.shape[0], t.shape[0]
        per_pair = q.shape[1] * t.shape[1] * max(q.shape[2] * t.shape[2], self.visil_head.conv3.out_channels)
        step = n_t if self.chunk_elements is None else max(1, self.chunk_elements // (n_q * per_pair))
        scores = []
        for start in range(0, n_t, step):
            chunk = slice(start, start + step)
            sim, sim_mask = self._f2f(q, t[chunk], q_mask, t_mask[chunk])
            sim, sim_mask = self.visil_head(sim, sim_mask, reference_padding=ref)
            sim = frame_chamfer(self.htanh(sim), sim_mask.any(dim=2), sim_mask.any(dim=1))
            scores.append(sim.view(n_q, -1))
        return torch.cat(scores, dim=1)

    def similarity_from_codes(
        self,
        query_codes: np.ndarray | Tensor,
        target_codes: np.ndarray | Tensor,
        query_mask: Tensor | np.ndarray | None = None,
        target_mask: Tensor | np.ndarray | None = None,
    ) -> Tensor:
        """S^f_B scores from packed codes (`dnsvr.training.networks.codes` packing, 64 bytes per 512-bit region).

        query `[Tq, R, B]` uint8 (or `[Nq, Tq, R, B]`), targets `[K, T, R, B]` uint8 (or `[T, R, B]`), masks
        `[Nq, Tq]` / `[K, T]` -> `[Nq, K]` float32 (a 3-D side drops its axis: one query vs K -> `[K]`).
        """
        if self.fg_type != "bin":
            raise ValueError("similarity_from_codes needs the binarization student (binarization=True)")
        device = self.visil_head.conv1.weight.device

        def to_codes(packed):
            packed = packed.cpu().numpy() if isinstance(packed, Tensor) else np.asarray(packed)
            return torch.from_numpy(unpack_codes(packed)).to(device)

        def to_mask(mask):
            return None if mask is None else torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor)
                                                             else mask).to(device)

        q, t = to_codes(query_codes), to_codes(target_codes)
        sim = self.calculate_video_similarity(q, t, to_mask(query_mask), to_mask(target_mask))
        if t.ndim == 3:
            sim = sim[:, 0]
        if q.ndim == 3:
            sim = sim[0]
        return sim


class CoarseGrainedStudent(nn.Module):
    """S^c: region attention -> frame vectors -> Transformer encoder -> NetVLAD -> one L2-normalised vector.

    `[T, R, D]` or `[N, T, R, D]` (+ mask `[N, T]`) -> `[N, outdims]`.  Repeating a short video does not
    change its vector (self-attention and NetVLAD are invariant to it), so no repetition rule is needed here.
    """

    def __init__(
        self,
        dims: int = 512,
        attention: bool = True,
        transformer: bool = True,
        transformer_heads: int = 8,
        transformer_feedforward_dims: int = 2048,
        transformer_layers: int = 1,
        netvlad: bool = True,
        netvlad_clusters: int = 64,
        netvlad_outdims: int | None = 1024,
    ):
        super().__init__()
        self.dims = dims
        if attention:
            self.attention = Attention(dims, norm=False)
        if transformer:
            layer = nn.TransformerEncoderLayer(dims, transformer_heads, transformer_feedforward_dims,
                                               batch_first=True)
            self.transformer = nn.TransformerEncoder(layer, transformer_layers, nn.LayerNorm(dims),
                                                     enable_nested_tensor=False)
        self.apply(self._init_weights)
        if netvlad:
            self.netvlad = NetVLAD(dims, netvlad_clusters, outdims=netvlad_outdims)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def get_network_name(self) -> str:
        return "cg_student"

    def index_video_intermediates(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Like `index_video`, also returning every stage (for tests and debugging):
        attention_weights `[N, T, R]`, frame_vectors `[N, T, D]`, transformer_output `[N, T, D]`,
        netvlad_output `[N, outdims]`, indexed `[N, outdims]`, mask `[N, T]` bool.  Padded frames hold 0."""
        x, mask, _ = as_batch(x, mask)
        out = {"mask": mask}
        keep = mask[:, :, None].to(x.dtype)
        if hasattr(self, "attention"):
            x, weights = self.attention(x)
            out["attention_weights"] = weights[..., 0] * keep
        x = F.normalize(x.sum(dim=2), p=2, dim=-1) * keep
        out["frame_vectors"] = x
        if hasattr(self, "transformer"):
            x = self.transformer(x, src_key_padding_mask=~mask) * keep
            out["transformer_output"] = x
        if hasattr(self, "netvlad"):
            x = self.netvlad(x, mask)
            out["netvlad_output"] = x
        else:
            x = masked_mean(x, mask[:, :, None], dim=1)
        out["indexed"] = F.normalize(x, p=2, dim=-1)
        return out

    def index_video(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """`[T, R, D]` or `[N, T, R, D]` (+ mask `[N, T]`) -> `[N, outdims]` L2-normalised (N = 1 for 3-D)."""
        return self.index_video_intermediates(x, mask)["indexed"]

    def calculate_video_similarity(self, query: Tensor, target: Tensor) -> Tensor:
        """`[Nq, C]`, `[Nt, C]` (or `[C]`) -> `[Nq, Nt]` cosine similarities."""
        return torch.atleast_2d(query) @ torch.atleast_2d(target).T
