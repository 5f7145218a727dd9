"""Traceable forward passes of the served networks, one `nn.Module` per ONNX graph of `dnsvr.client.spec`.

Each wraps a loaded `dnsvr.training` network and reuses its layers (weights, attention, comparator, NetVLAD,
Chamfer pooling), but replaces the eager-only parts (Python branches on tensor values, stable sort, input
checks) with fixed tensor code, so one trace is valid for every batch size and frame count:

- padded frames are always zeroed and every mask is honoured (the comparator's valid extents, masked
  Chamfer pooling), so padding never changes a result;
- the short-video rule (1 -> 4, 2 -> 4, 3 -> 6 frames) is always applied by `repeat_short_videos`, which
  pads the frame axis to at least 6 frames;
- S^f_B codes are packed to bytes inside `fine_index_bin` (bits x [128, ..., 1] summed per byte) and
  unpacked inside `fine_similarity_bin` with a [256, 8] ±1 lookup table: the packing of
  `dnsvr.training.networks.codes`;
- `ComparatorGraph` is the learned part of `fine_similarity_bin` alone, on unpadded matrices of one
  candidate length (after the CPU Hamming kernel of `dnsvr.export.hamming`): the same comparator CNN as the
  float graph's `compare_frames`, without the masks.

Masks are bool `[B, T]` prefixes (True at real frames) with at least one real frame per row.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from dnsvr.client import spec
from dnsvr.training.networks.similarity import frame_chamfer, masked_mean
from torch import Tensor, nn

BIT_WEIGHTS = tuple(float(1 << (7 - i)) for i in range(8))  # MSB first: dimension d -> bit 7 - d % 8
REPEATED_MIN_FRAMES = 6  # the longest repeated short video (3 -> 6)


def zero_padded(x: Tensor, mask: Tensor) -> Tensor:
    """`[N, T, R, D]`, bool `[N, T]` -> the same with padded frames set to 0 (NaN/inf there cannot leak)."""
    return torch.where(mask[:, :, None, None], x, torch.zeros_like(x))


def repeated_lengths(lengths: Tensor) -> Tensor:
    """The short-video rule's lengths as fixed tensor code: `[N]` long (>= 1) -> `[N]`: 1 -> 4, 2 -> 4, 3 -> 6,
    longer unchanged (`dnsvr.training.networks.similarity.repeated_lengths`, without its loop)."""
    return torch.where(lengths == 3, lengths * 2, torch.where(lengths < 3, torch.full_like(lengths, 4), lengths))


def repeated_positions(line: Tensor) -> Tensor:
    """The frames of a video of L = len(`line`) real frames under the short-video rule: `[L]` -> long `[L']`,
    position p holding frame p mod L (L' = `repeated_lengths` of L)."""
    length = torch.ones_like(line, dtype=torch.long).sum()  # L, traced from the shape
    return torch.remainder(torch.arange(repeated_lengths(length), device=line.device), length)


def repeat_short_videos(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The short-video rule as fixed tensor code: `[N, T, R, D]`, bool `[N, T]` -> `[N, T', R, D]`, `[N, T']`.

    T' = max(T, 6).  A video with L < 4 real frames becomes its concatenation with itself (1 -> 4, 2 -> 4,
    3 -> 6 frames); longer videos are unchanged.  Frame p of the result is real frame p mod L (masks are
    prefixes), every other frame is 0: nothing of the padded input (not even NaN) reaches the output.
    """
    n, t = mask.shape[0], mask.shape[1]
    lengths = mask.long().sum(dim=1)
    repeated = repeated_lengths(lengths)
    frames_out = torch.clamp(torch.ones_like(mask[0], dtype=torch.long).sum(), min=REPEATED_MIN_FRAMES)
    positions = torch.arange(frames_out, device=mask.device)[None, :]
    new_mask = positions < repeated[:, None]
    source = torch.remainder(positions, torch.clamp(lengths, min=1)[:, None])
    flat = (source + torch.arange(n, device=mask.device)[:, None] * t).reshape(-1)
    frames = x.reshape(-1, x.shape[2], x.shape[3]).index_select(0, flat)
    frames = frames.reshape(n, -1, x.shape[2], x.shape[3])
    return frames * new_mask[:, :, None, None].to(frames.dtype), new_mask  # gathered frames are all real


def pack_bits(codes: Tensor) -> Tensor:
    """±1 (or any real: bit = value > 0) `[..., 8B]` -> uint8 `[..., B]`, MSB first (`codes.pack_codes`)."""
    bits = (codes > 0).to(torch.float32).reshape(*codes.shape[:-1], -1, 8)
    weights = torch.tensor(BIT_WEIGHTS, dtype=torch.float32, device=codes.device)
    return (bits * weights).sum(dim=-1).to(torch.uint8)


def unpack_table() -> Tensor:
    """`[256, 8]` float32: row b holds the ±1 values of byte b's bits, MSB first (`codes.unpack_codes`)."""
    byte = torch.arange(256)[:, None]
    shifts = torch.arange(7, -1, -1)[None, :]
    return ((byte >> shifts) & 1).to(torch.float32) * 2.0 - 1.0


def unpack_bits(packed: Tensor, table: Tensor | None = None) -> Tensor:
    """uint8 `[..., B]` -> float32 ±1 `[..., 8B]` (`codes.unpack_codes`): one lookup in `unpack_table()`
    (pass it in to keep it a constant of the graph) per byte."""
    table = unpack_table() if table is None else table
    return table[packed.long()].reshape(*packed.shape[:-1], -1)


def query_region_chamfer(query: Tensor, candidates: Tensor, scale: float) -> Tensor:
    """`region_chamfer` of one query against K candidates as one batched matmul.

    query `[Tq, R, D]`, candidates `[K, Tt, R, D]` -> `[K, Tq, Tt]`: region dot products / scale, max over
    candidate regions, mean over query regions.
    """
    regions, dims = query.shape[1], query.shape[2]
    sim = torch.matmul(query.reshape(-1, dims), candidates.reshape(candidates.shape[0], -1, dims).transpose(1, 2))
    sim = sim.reshape(candidates.shape[0], query.shape[0], regions, -1, regions).amax(dim=-1).mean(dim=2)
    return sim / scale if scale != 1.0 else sim


class FeatureExtractorGraph(nn.Module):
    """uint8 frames `[T, 224, 224, 3]` -> features `[T, 9, 512]` for the ResNet50 or EfficientNet extractor.

    `extractor`: a `FeatureExtractor` (ResNet50 L3-iMAC + PCA) or an `EfficientNetLite0Extractor`.  At the
    fixed 224x224 input every tapped map pools straight to the 3x3 region grid, so the adaptive pooling of
    the eager extractors is the identity here (checked at construction) and the graph has no shape logic.
    """

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor
        self.is_resnet = hasattr(extractor, "normalizer")
        with torch.no_grad():
            probe = torch.zeros(1, 3, spec.FRAME_SIZE, spec.FRAME_SIZE)
            grids = {tuple(m.shape[-2:]) for m in self._pooled_maps(probe)}
        if grids != {(3, 3)}:
            raise ValueError(f"the extractor's tapped maps pool to grids {sorted(grids)}, not one 3x3 grid")

    def _normalized(self, frames: Tensor) -> Tensor:
        if self.is_resnet:
            return self.extractor.normalizer(frames)
        from dnsvr.training.networks.efficientnet import normalize_frames

        return normalize_frames(frames)

    def _pooled_maps(self, x: Tensor) -> list[Tensor]:
        """Normalised images `[T, 3, 224, 224]` -> per tap, L2-normalised max-pooled maps `[T, C_i, 3, 3]`."""
        if self.is_resnet:
            from dnsvr.training.networks.resnet50 import REGION_KERNELS

            stages = self.extractor.cnn.stages(x)
            return [F.normalize(F.max_pool2d(stages[name], k, math.ceil(k / 2)), p=2, dim=1)
                    for name, k in REGION_KERNELS.items()]
        return self._tapped_maps(self.extractor.cnn.stages(x, last=self.extractor.taps[-1]))

    def _tapped_maps(self, stages: list[Tensor]) -> list[Tensor]:
        """EfficientNet-Lite0's stage outputs (1..at least the last tap) -> the tapped stages' region maps."""
        from dnsvr.training.networks.efficientnet import STAGE_STRIDES, region_vectors

        return [region_vectors(stages[t - 1], STAGE_STRIDES[t - 1]) for t in self.extractor.taps]

    def _regions(self, maps: list[Tensor]) -> Tensor:
        """Per tap `[T, C_i, 3, 3]` -> the frames' region features `[T, 9, D]` (normalised, PCA when the
        extractor has one)."""
        maps = [F.normalize(m, p=2, dim=1) for m in maps]
        regions = F.normalize(torch.cat(maps, dim=1).flatten(2).transpose(1, 2), p=2, dim=-1)
        pca = getattr(self.extractor, "pca", None)
        return pca(regions) if pca is not None else regions

    def forward(self, frames: Tensor) -> Tensor:
        return self._regions(self._pooled_maps(self._normalized(frames)))


class PooledFeatureExtractorGraph(FeatureExtractorGraph):
    """uint8 frames `[T, 224, 224, 3]` -> (features `[T, 9, 512]`, pooled `[T, 1280]`) from one pass of
    EfficientNet-Lite0 through all its stages: `FeatureExtractorGraph`'s region features, and each frame's
    pre-classifier feature (`EfficientNetLite0.pool_head` of stage 7), which the offline text-video student
    reads.  On CPU it costs what the features alone cost, within the noise (docs/export.md)."""

    def __init__(self, extractor: nn.Module):
        super().__init__(extractor)
        if self.is_resnet:
            raise ValueError("pooled frame features come from EfficientNet-Lite0: this pack's extractor is ResNet50")

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        stages = self.extractor.cnn.stages(self._normalized(frames))  # all 7 stages
        return self._regions(self._tapped_maps(stages)), self.extractor.cnn.pool_head(stages[-1])


def encoder_layer(layer: nn.TransformerEncoderLayer, x: Tensor, padding: Tensor) -> Tensor:
    """A post-norm ReLU `nn.TransformerEncoderLayer` in eval, written out so that it traces for any batch and
    frame count: x `[N, T, D]`, padding `[N, T]` bool (True = ignored key) -> `[N, T, D]`."""
    attention = layer.self_attn
    heads, dims = attention.num_heads, attention.embed_dim
    q, k, v = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (y.reshape(x.shape[0], -1, heads, dims // heads).transpose(1, 2) for y in (q, k, v))
    scores = torch.einsum("nhid,nhjd->nhij", q, k) / math.sqrt(dims // heads)
    scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    context = torch.einsum("nhij,nhjd->nhid", scores.softmax(dim=-1), v)
    x = layer.norm1(x + attention.out_proj(context.transpose(1, 2).reshape(x.shape[0], -1, dims)))
    return layer.norm2(x + layer.linear2(F.relu(layer.linear1(x))))


class CoarseEmbedGraph(nn.Module):
    """S^c `index_video`: features `[B, T, 9, 512]`, mask `[B, T]` -> `[B, C]` L2-normalised."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student
        for layer in getattr(student, "transformer", nn.Module()).modules():
            if isinstance(layer, nn.TransformerEncoderLayer) and (
                layer.norm_first or layer.activation_relu_or_gelu != 1 or not layer.self_attn.batch_first
            ):
                raise ValueError("coarse_embed exports post-norm, ReLU, batch-first Transformer layers only")

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        s = self.student
        x = zero_padded(features, mask)
        keep = mask[:, :, None].to(x.dtype)
        if hasattr(s, "attention"):
            x, _ = s.attention(x)
        x = F.normalize(x.sum(dim=2), p=2, dim=-1) * keep
        if hasattr(s, "transformer"):
            for layer in s.transformer.layers:
                x = encoder_layer(layer, x, ~mask)
            if s.transformer.norm is not None:
                x = s.transformer.norm(x)
            x = x * keep
        if hasattr(s, "netvlad"):
            x = s.netvlad(x, mask)
        else:
            x = masked_mean(x, mask[:, :, None], dim=1)
        return F.normalize(x, p=2, dim=-1)


class FineIndexGraph(nn.Module):
    """S^f `index_video`: features `[B, T, 9, 512]`, mask `[B, T]` -> S^f_B packed codes uint8
    `[B, T, 9, 64]` (0 bytes at padded frames) or S^f_A weighted features float32 `[B, T, 9, 512]`."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student
        self.binary = student.fg_type == "bin"

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        x = self.student.index_video(zero_padded(features, mask))
        x = zero_padded(x, mask)
        return pack_bits(x) if self.binary else x


def compare_frames(student: nn.Module, sim: Tensor, query_mask: Tensor, candidate_mask: Tensor) -> Tensor:
    """The learned part of a fine student's pair score: frame-to-frame similarities of the (repeated) videos
    `[K, Tq, Tt]`, query_mask `[Tq]`, candidate_mask `[K, Tt]` -> `[K]`: masked cells zeroed, the video
    comparator on each pair's valid extent, Hardtanh, then the frame Chamfer over its output masks."""
    sim_mask = query_mask[None, :, None] & candidate_mask[:, None, :]
    sim = torch.where(sim_mask, sim, torch.zeros_like(sim))
    sim, sim_mask = student.visil_head(sim, sim_mask)
    return frame_chamfer(student.htanh(sim), sim_mask.any(dim=2), sim_mask.any(dim=1))


class FineSimilarityGraph(nn.Module):
    """One query against K candidates with the fine student's comparator -> (`[K]` scores in [-1, 1], f2f).

    query `[Tq, 9, W]`, query_mask `[Tq]`, candidates `[K, Tt, 9, W]`, candidate_mask `[K, Tt]`: W = 64
    packed uint8 bytes (S^f_B, unpacked here; the frame-to-frame matrix is divided by 512) or 512 float32
    indexed features (S^f_A).  f2f `[K, Tq, Tt]`: the region-Chamfer similarities of the real frames, 0
    elsewhere (what `ComparatorGraph` reads, and copy localisation); the short-video rule is applied to that
    matrix, so a pair's score is its unpadded score.
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.binary = student.fg_type == "bin"
        self.scale = float(student.binarization.W.shape[1]) if self.binary else 1.0  # code length (512)
        self.comparator = MaskedComparator(student)
        self.register_buffer("unpack_table", unpack_table(), persistent=False)

    def forward(self, query: Tensor, query_mask: Tensor, candidates: Tensor,
                candidate_mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.binary:
            query, candidates = unpack_bits(query, self.unpack_table), unpack_bits(candidates, self.unpack_table)
        query = zero_padded(query[None], query_mask[None])[0]
        candidates = zero_padded(candidates, candidate_mask)
        f2f = query_region_chamfer(query, candidates, self.scale)
        real = query_mask[None, :, None] & candidate_mask[:, None, :]
        f2f = torch.where(real, f2f, torch.zeros_like(f2f))
        return self.comparator(f2f, query_mask, candidate_mask), f2f


class MaskedComparator(nn.Module):
    """The learned part of `FineSimilarityGraph`, on padded matrices.

    f2f `[K, Tq, Tt]`: the similarities of the real frames, not repeated (0 elsewhere); query_mask `[Tq]`,
    candidate_mask `[K, Tt]` -> `[K]`.  The short-video rule is applied to the matrix: `repeat_short_videos`
    on its rows (by the query's length), then on its columns (by each candidate's), which gives exactly the
    matrix of the repeated videos (cell (p, q) of it is cell (p mod Lq, q mod Lt)).
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, f2f: Tensor, query_mask: Tensor, candidate_mask: Tensor) -> Tensor:
        rows, q_mask = repeat_short_videos(f2f.transpose(0, 1)[None], query_mask[None])  # [1, Tq', K, Tt]
        cols, t_mask = repeat_short_videos(rows[0].permute(1, 2, 0)[..., None], candidate_mask)  # [K, Tt', Tq', 1]
        return compare_frames(self.student, cols[..., 0].transpose(1, 2), q_mask[0], t_mask)


class ComparatorGraph(nn.Module):
    """The learned part of `FineSimilarityGraph` on matrices without padding (`spec.FINE_COMPARATOR`,
    `comparator.onnx`), for the CPU path of S^f_B: its frame-to-frame similarities come from a Hamming kernel
    (`dnsvr.export.hamming`), which runs this graph once per candidate length.

    f2f `[K, Lq, Lt]`, every cell real (K candidates of Lt frames, a query of Lq) -> `[K]`: what
    `MaskedComparator` gives for the same cells inside any padding.  The short-video rule on both axes (cell
    (p, q) of the repeated matrix is cell (p mod Lq, q mod Lt)), the comparator with no extents to keep (no
    masked passes: ~30 % of the masked graph's time on CPU), Hardtanh, then the frame Chamfer.
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, f2f: Tensor) -> Tensor:
        rows, cols = repeated_positions(f2f[0, :, 0]), repeated_positions(f2f[0, 0, :])  # [Lq'], [Lt']
        sim = f2f.index_select(1, rows).index_select(2, cols)  # [K, Lq', Lt']
        sim, _ = self.student.visil_head(sim)  # [K, Lq' // 4, Lt' // 4]
        best = self.student.htanh(sim).amax(dim=2)  # [K, Lq' // 4]: max over the candidate's frames
        return best.sum(dim=1) / torch.ones_like(best[0]).sum()  # mean over the query's, as masked_mean divides


class SelectorIndexGraph(nn.Module):
    """Selector `index_video`: features `[B, T, 9, 512]`, mask `[B, T]` -> self-similarity `[B, 1]`."""

    def __init__(self, selector: nn.Module):
        super().__init__()
        self.selector = selector

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        s = self.selector
        x, mask = repeat_short_videos(features, mask)
        x, _ = s.attention(x)
        pooled = x.mean(dim=2)
        sim = torch.einsum("nid,njd->nij", pooled, pooled)
        sim_mask = mask[:, :, None] & mask[:, None, :]
        sim = torch.where(sim_mask, sim, torch.zeros_like(sim))
        sim, sim_mask = s.visil_head(sim, sim_mask)
        return masked_mean(sim, sim_mask, dim=(1, 2))[:, None]


class SelectorScoreGraph(nn.Module):
    """Selector MLP: pair_features `[K, 3]` -> scores `[K]` in (0, 1)."""

    def __init__(self, selector: nn.Module):
        super().__init__()
        self.selector = selector

    def forward(self, pair_features: Tensor) -> Tensor:
        return self.selector.mlp(pair_features)[:, 0]


GRAPH_CLASSES: dict[str, type[nn.Module]] = {
    spec.FEATURE_EXTRACTOR.name: FeatureExtractorGraph,
    spec.FEATURE_EXTRACTOR_POOLED.name: PooledFeatureExtractorGraph,
    spec.COARSE_EMBED.name: CoarseEmbedGraph,
    spec.FINE_INDEX_BIN.name: FineIndexGraph,
    spec.FINE_INDEX_ATT.name: FineIndexGraph,
    spec.SELECTOR_INDEX.name: SelectorIndexGraph,
    spec.SELECTOR_SCORE.name: SelectorScoreGraph,
    spec.FINE_SIMILARITY_BIN.name: FineSimilarityGraph,
    spec.FINE_SIMILARITY_ATT.name: FineSimilarityGraph,
}


def build_graph(name: str, network: nn.Module, afa: str = "official") -> nn.Module:
    """The traceable graph of served network `name` around its eager `network` (a text-video student's through
    its kind, `dnsvr.export.text_kinds`; `afa`: a TeachCLIP student's AFA mode)."""
    if name in spec.TEXT_NETWORKS:
        from dnsvr.export.text_kinds import text_export

        return text_export(name).build_graph(name, network, afa)
    return GRAPH_CLASSES[name](network)
