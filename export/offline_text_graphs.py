"""Traceable forward passes of the offline text-video student (`OfflineTextVideoStudent`): its two ONNX graphs.

    MiniLMTextEncoderGraph  input_ids, attention_mask int64 `[B, L]`                 -> embedding float32 `[B, D]`
    EffnetVideoEmbedGraph   frame_features float32 `[B, T, 1280]`, mask bool `[B, T]` -> embedding float32 `[B, D]`

Both vectors are L2-normalised.  The text graph traces the student's own `encode_text` (MiniLM's layers read
every size from the tensors, so one trace serves any B and L).  The video graph is `video_intermediates`
without its eager-only parts (input checks, the cut to the longest real video, a Python int): padded slots are
zeroed before the projection, their keys masked additively with TeachCLIP's `KEY_MASK_VALUE`, their AFA logits
set to -inf, so padding never changes a vector; CLIP's blocks are written out (`text_graphs.transformer_forward`).
The frame features are `EfficientNetLite0.pooled_features` of the frames the server selects
(`feature_extractor_pooled`); T must not exceed the student's `max_frames`, and masks are bool prefixes with at
least one real frame per row.  `example_feeds` and `reference_output` give the parity check its inputs and the
eager answer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from dnsvr.client import spec
from dnsvr.export.text_graphs import transformer_forward
from dnsvr.training.networks.offline_t2v import OfflineTextVideoStudent
from dnsvr.training.networks.teachclip import AFA_TEMPERATURE, KEY_MASK_VALUE
from torch import Tensor, nn

FIRST_WORD_ID = 1000  # ids below are [PAD], [unused*], [CLS], [SEP], [MASK] ... in BERT's uncased vocabulary


class MiniLMTextEncoderGraph(nn.Module):
    """MiniLM sentence vector -> projection, L2-normalised: ids, mask `[B, L]` int64 -> `[B, D]` float32."""

    def __init__(self, student: OfflineTextVideoStudent):
        super().__init__()
        self.student = student

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.student.encode_text(input_ids, attention_mask)


class EffnetVideoEmbedGraph(nn.Module):
    """The student's video vector: frame_features `[B, T, 1280]`, mask `[B, T]` bool -> `[B, D]` unit norm."""

    def __init__(self, student: OfflineTextVideoStudent):
        super().__init__()
        self.student = student

    def forward(self, frame_features: Tensor, mask: Tensor) -> Tensor:
        s = self.student
        real = mask[:, :, None]  # [B, T, 1]
        projected = s.video_proj(torch.where(real, frame_features, torch.zeros_like(frame_features)))  # [B, T, D]
        positions = s.frame_position_embeddings.weight[:frame_features.shape[1]]  # [T, D]
        key_mask = ((~mask).float() * KEY_MASK_VALUE)[:, None, None, :]  # [B, 1, 1, T(key)]: 0 real, -1e6 padded
        temporal_out = transformer_forward(s.transformerClip, projected + positions, key_mask) + projected
        logits = s.frameLinear2(F.relu(s.frameLinear(temporal_out)))[..., 0]  # [B, T, 1] -> [B, T]
        weights = (logits.masked_fill(~mask, float("-inf")) / AFA_TEMPERATURE).softmax(dim=1)  # [B, T]
        video = (F.normalize(temporal_out, dim=-1) * weights[..., None]).sum(dim=1)  # [B, T, D] -> [B, D]
        return F.normalize(video, dim=-1)


GRAPHS = {spec.TEXT_ENCODER_MINILM.name: MiniLMTextEncoderGraph,
          spec.VIDEO_TEXT_EMBED_EFFNET.name: EffnetVideoEmbedGraph}


def build_graph(name: str, student: OfflineTextVideoStudent, afa: str = "real_frames") -> nn.Module:
    """The graph of network `name` (its AFA is always over the real frames: `afa` is not used)."""
    return GRAPHS[name](student)


def special_ids() -> tuple[int, int, int]:
    """[CLS], [SEP] and [PAD] in the MiniLM package's WordPiece vocabulary."""
    from dnsvr.training.networks.minilm import read_minilm_archive
    from tokenizers import Tokenizer

    vocabulary = Tokenizer.from_str(read_minilm_archive().tokenizer_json)
    cls, sep, pad = (vocabulary.token_to_id(token) for token in ("[CLS]", "[SEP]", "[PAD]"))
    return cls, sep, pad


def example_feeds(name: str, student: OfflineTextVideoStudent, lengths: list[int], frames: int | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Valid random inputs of an offline-student graph.

    text_encoder_minilm: one text per entry of `lengths` with that many WordPiece ids between [CLS] and [SEP],
    0-padded ([PAD]) to the longest (+2).  video_text_embed_effnet: videos with `lengths` real frames of
    non-negative features (as ReLU6 means are), padded with 0 to `frames` slots.
    """
    rng = np.random.default_rng(seed)
    if name == spec.TEXT_ENCODER_MINILM.name:
        cls, sep, pad = special_ids()
        width = max(lengths) + 2
        ids = np.full((len(lengths), width), pad, np.int64)
        mask = np.zeros((len(lengths), width), np.int64)
        vocabulary = student.text.config.vocab_size
        for row, length in enumerate(lengths):
            ids[row, :length + 2] = [cls, *rng.integers(FIRST_WORD_ID, vocabulary, length), sep]
            mask[row, :length + 2] = 1
        return {"input_ids": ids, "attention_mask": mask}
    if name == spec.VIDEO_TEXT_EMBED_EFFNET.name:
        frames = frames or max(lengths)
        mask = np.arange(frames)[None, :] < np.asarray(lengths)[:, None]  # [B, frames]
        features = rng.uniform(0.0, 3.0, (len(lengths), frames, student.frame_dim)).astype(np.float32)
        return {"frame_features": features * mask[:, :, None], "mask": mask}
    raise KeyError(f"'{name}' is not a graph of the offline text-video student")


def reference_output(name: str, student: OfflineTextVideoStudent, feeds: dict[str, np.ndarray],
                     afa: str = "real_frames") -> np.ndarray:
    """The eager student's public API on `feeds`: `encode_text` or `encode_video` (normalised vectors)."""
    t = {key: torch.from_numpy(value) for key, value in feeds.items()}
    with torch.no_grad():
        if name == spec.TEXT_ENCODER_MINILM.name:
            return student.encode_text(t["input_ids"], t["attention_mask"]).numpy()
        if name == spec.VIDEO_TEXT_EMBED_EFFNET.name:
            return student.encode_video(t["frame_features"], t["mask"].float()).numpy()
    raise KeyError(f"'{name}' is not a graph of the offline text-video student")
