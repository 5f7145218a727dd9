"""Traceable forward passes of the text-video student (`TeachCLIPStudent`): the two ONNX graphs of text search.

    TextEncoderGraph       token_ids int64 `[B, L]`                    -> embedding float32 `[B, D]` (unit norm)
    VideoTextEmbedGraph    frames uint8 `[B, T, S, S, 3]`, mask `[B, T]` -> embedding float32 `[B, D]` (unit norm)

They reuse the student's layers and replace its eager-only parts (input checks, Python branches on the mask)
with fixed tensor code, so one trace serves every batch size and frame count:

- the CLIP normalisation (`/ 255`, mean/std) runs inside the video graph on the uint8 crops of
  `dnsvr.training.data.clip_frames.resize_and_crop`;
- "official" AFA (the default; `TeachCLIPStudent` docs): every video is padded inside the graph to the
  student's `max_frames` slots holding the embedding of the all-zero normalised image (a constant of the
  graph), and the AFA softmax runs over all slots, as TeachCLIP's loaders and evaluation do;
  "real_frames": the softmax runs over the real frames only (any padding is then inert);
- the key mask of the temporal transformer is TeachCLIP's additive `(1 - mask) * -1e6`;
- CLIP's blocks are written out (`block_forward`): `nn.MultiheadAttention` traces its batch size and length
  into reshapes, which would fix them in the graph.

T must not exceed `max_frames` (the server selects frames first: `clip_frames.select_frame_indices`).
Masks are bool prefixes with at least one real frame per row.  `example_feeds` and `reference_output` give
the parity check (`dnsvr.export.parity`) its inputs and the eager answer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from dnsvr.client import spec
from dnsvr.training.data.clip_frames import CLIP_MEAN, CLIP_STD, normalize_frames
from dnsvr.training.networks.clip import ResidualAttentionBlock, Transformer, VisionTransformer
from dnsvr.training.networks.teachclip import AFA_MODES, AFA_TEMPERATURE, KEY_MASK_VALUE, AFAMode, TeachCLIPStudent
from torch import Tensor, nn


def block_forward(block: ResidualAttentionBlock, x: Tensor, heads: int, attn_mask: Tensor | None) -> Tensor:
    """One CLIP pre-LN block, batch-first: x `[N, L, D]`, an additive mask broadcasting to `[N, heads, L, L]`
    (`[L, L]` causal, `[N, 1, 1, L]` per key) -> `[N, L, D]`."""
    attention = block.attn
    h = block.ln_1(x)
    q, k, v = F.linear(h, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)  # 3 x [N, L, D]
    q, k, v = (y.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2) for y in (q, k, v))  # [N, H, L, D/H]
    scores = torch.matmul(q, k.transpose(-1, -2)) / float(attention.head_dim) ** 0.5  # [N, H, L, L]
    if attn_mask is not None:
        scores = scores + attn_mask
    context = torch.matmul(scores.softmax(dim=-1), v)  # [N, H, L, D/H]
    context = context.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)  # [N, H, L, D/H] -> [N, L, D]
    x = x + attention.out_proj(context)
    return x + block.mlp(block.ln_2(x))


def transformer_forward(transformer: Transformer, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """`clip.Transformer` batch-first, traceable for any N and L: `[N, L, D]` -> `[N, L, D]`."""
    for block in transformer.resblocks:
        x = block_forward(block, x, transformer.heads, attn_mask)
    return x


def image_forward(visual: VisionTransformer, images: Tensor) -> Tensor:
    """CLIP's ViT: normalised images `[N, 3, S, S]` -> `[N, D]` (token 0 after ln_post, @ proj)."""
    x = visual.conv1(images).flatten(2).transpose(1, 2)  # [N, width, g, g] -> [N, g*g, width]
    cls = visual.class_embedding.expand(x.shape[0], 1, -1)  # [width] -> [N, 1, width]
    x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding)  # [N, g*g + 1, width]
    x = transformer_forward(visual.transformer, x)
    return visual.ln_post(x[:, 0]) @ visual.proj  # [N, width] @ [width, D] -> [N, D]


class TextEncoderGraph(nn.Module):
    """CLIP's text encoder read at the first EOT, L2-normalised: token_ids `[B, L]` int64 -> `[B, D]` float32.

    The causal mask is built for the given L (0-padding after EOT cannot matter, as in the official code)."""

    def __init__(self, student: TeachCLIPStudent):
        super().__init__()
        self.student = student
        context = student.clip.config.context_length
        causal = torch.full((context, context), float("-inf")).triu(1)  # [C, C]: -inf above the diagonal
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, token_ids: Tensor) -> Tensor:
        clip = self.student.clip
        length = token_ids.shape[1]
        x = clip.token_embedding(token_ids) + clip.positional_embedding[:length]  # [B, L, width]
        x = clip.ln_final(transformer_forward(clip.transformer, x, self.causal[:length, :length]))
        first_eot = token_ids.argmax(dim=-1)  # [B]: EOT is the largest id
        eot = x.gather(1, first_eot[:, None, None].expand(-1, 1, x.shape[-1]))[:, 0]  # [B, L, w] -> [B, w]
        return F.normalize(eot @ clip.text_projection, dim=-1)  # [B, w] @ [w, D] -> [B, D]


class VideoTextEmbedGraph(nn.Module):
    """The student's video vector from uint8 crops: frames `[B, T, S, S, 3]`, mask `[B, T]` -> `[B, D]` unit norm."""

    def __init__(self, student: TeachCLIPStudent, afa: AFAMode = "official"):
        super().__init__()
        if afa not in AFA_MODES:
            raise ValueError(f"afa must be one of {AFA_MODES}, got {afa!r}")
        self.student = student
        self.official = afa == "official"
        self.max_frames = student.max_frames
        size = student.clip.config.image_resolution
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)  # [1, 3, 1, 1]
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            zero_image = student.clip.encode_image(torch.zeros(1, 3, size, size))  # [1, D]
        self.register_buffer("padding", zero_image[0], persistent=False)  # [D]: a padded slot of the loaders

    def forward(self, frames: Tensor, mask: Tensor) -> Tensor:
        s = self.student
        b, t = frames.shape[0], frames.shape[1]
        pixels = frames.flatten(0, 1).permute(0, 3, 1, 2).float().div(255)  # [B*T, S, S, 3] -> [B*T, 3, S, S]
        features = image_forward(s.clip.visual, (pixels - self.mean) / self.std)  # [B*T, D]
        features = features.reshape(b, t, -1)  # [B*T, D] -> [B, T, D]
        if self.official:  # pad to max_frames slots of the zero image's embedding
            padding = self.padding.expand(b, self.max_frames, -1)  # [D] -> [B, max_frames, D]
            features = torch.where(mask[:, :, None], features, padding[:, :1])
            features = torch.cat([features, padding], dim=1)[:, :self.max_frames]  # [B, max_frames, D]
            no_frames = torch.zeros_like(padding[:, :, 0], dtype=torch.bool)  # [B, max_frames]
            mask = torch.cat([mask, no_frames], dim=1)[:, :self.max_frames]  # [B, max_frames]
        else:
            features = torch.where(mask[:, :, None], features, torch.zeros_like(features))
        slots = features.shape[1]
        positions = s.frame_position_embeddings.weight[:slots]  # [slots, D]
        key_mask = (1.0 - mask.float()) * KEY_MASK_VALUE  # [B, slots]: 0 real, -1e6 padded
        key_mask = key_mask[:, None, None, :]  # [B, 1, 1, slots(key)]: the same for every head and query
        temporal_out = transformer_forward(s.transformerClip, features + positions, key_mask) + features
        logits = s.frameLinear2(F.relu(s.frameLinear(temporal_out)))[..., 0]  # [B, slots, 1] -> [B, slots]
        if not self.official:
            logits = logits.masked_fill(~mask, float("-inf"))
        weights = (logits / AFA_TEMPERATURE).softmax(dim=1)  # [B, slots]
        normed = temporal_out / temporal_out.norm(dim=-1, keepdim=True)  # [B, slots, D]
        video = (normed * weights[..., None]).sum(dim=1)  # [B, slots, D] -> [B, D]
        return F.normalize(video, dim=-1)


def build_graph(name: str, student: TeachCLIPStudent, afa: AFAMode = "official") -> nn.Module:
    """The graph of network `name`: text_encoder, or video_text_embed with AFA mode `afa`."""
    if name == spec.TEXT_ENCODER.name:
        return TextEncoderGraph(student)
    if name == spec.VIDEO_TEXT_EMBED.name:
        return VideoTextEmbedGraph(student, afa)
    raise KeyError(f"'{name}' is not a text-video graph")


def example_feeds(name: str, student: TeachCLIPStudent, lengths: list[int], frames: int | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Valid random inputs of a text-video graph.

    text_encoder: one caption per entry of `lengths` with that many BPE tokens between SOT and EOT, 0-padded
    to the longest (+2).  video_text_embed: videos with `lengths` real frames of random uint8 crops, padded
    with 0 to `frames` slots.
    """
    rng = np.random.default_rng(seed)
    if name == spec.TEXT_ENCODER.name:
        from dnsvr.training.data.clip_tokenizer import EOT_ID, SOT_ID

        width = max(lengths) + 2
        ids = np.zeros((len(lengths), width), np.int64)
        for row, length in enumerate(lengths):
            ids[row, :length + 2] = [SOT_ID, *rng.integers(1, SOT_ID, length), EOT_ID]
        return {"token_ids": ids}
    if name == spec.VIDEO_TEXT_EMBED.name:
        frames = frames or max(lengths)
        size = student.clip.config.image_resolution
        mask = np.arange(frames)[None, :] < np.asarray(lengths)[:, None]  # [B, frames]
        crops = rng.integers(0, 256, (len(lengths), frames, size, size, 3), dtype=np.uint8)
        return {"frames": crops * mask[:, :, None, None, None].astype(np.uint8), "mask": mask}
    raise KeyError(f"'{name}' is not a text-video graph")


def reference_output(name: str, student: TeachCLIPStudent, feeds: dict[str, np.ndarray],
                     afa: AFAMode = "official") -> np.ndarray:
    """The eager student's public API on `feeds`: `encode_text` or `encode_video` (normalised vectors)."""
    with torch.no_grad():
        if name == spec.TEXT_ENCODER.name:
            return student.encode_text(torch.from_numpy(feeds["token_ids"])).numpy()
        if name == spec.VIDEO_TEXT_EMBED.name:
            crops, mask = feeds["frames"], torch.from_numpy(feeds["mask"])
            pixels = normalize_frames(crops.reshape(-1, *crops.shape[2:]))  # [B*T, 3, S, S]
            pixels = pixels.reshape(*crops.shape[:2], *pixels.shape[1:])  # -> [B, T, 3, S, S]
            return student.encode_video(pixels, mask, afa=afa).numpy()
    raise KeyError(f"'{name}' is not a text-video graph")
