"""The offline text-video student: TeachCLIP's head over EfficientNet-Lite0 frame features, a MiniLM text tower.

Nothing in it needs weights from outside the installed packages: frames are encoded by the EfficientNet-Lite0 of
the DnS extractor (`EfficientNetLite0.pooled_features`, 1280-d per frame), texts by the real all-MiniLM-L6-v2
(`networks.minilm`, 384-d sentence vectors), and only the small head below is trained (`distill.train_t2v`).

Video path (B videos, T frame slots, D = `dim`):
  frame_features  `[B, T, 1280]` float32, mask `[B, T]` (1 at real frames, real frames first)
  projected       = video_proj(frame_features)                                       `[B, T, D]`
  temporal_out    = transformerClip(projected + frame_position_embeddings[:T], padded keys masked) + projected
                    (CLIP residual blocks, width D, D // 64 heads; the residual skips the position embedding, as in
                    CLIP4Clip seqTransf)                                              `[B, T, D]`
  afa_logits      = frameLinear2(relu(frameLinear(temporal_out)))                    `[B, T]`
  video           = normalise(sum_t softmax_t(afa_logits / 0.1) * temporal_out_t / |temporal_out_t|)   `[B, D]`
                    the softmax over REAL frames only (TeachCLIP's "real_frames" AFA mode): a video's vector never
                    depends on the padding, hence never on its batch.
Text path: MiniLM sentence vector `[B, 384]` -> text_proj -> L2-normalised `[B, D]`.  MiniLM is frozen unless
`trainable_text_layers` > 0 (its last layers then train, and `head_state_dict` carries them).
Similarity = cosine; training logits = `exp(min(logit_scale, log 100)) * cosine`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from dnsvr.training.networks.checkpoints import CheckpointError
from dnsvr.training.networks.clip import HEAD_WIDTH, Transformer, count_blocks, load_strict
from dnsvr.training.networks.efficientnet import FRAME_FEATURE_DIM
from dnsvr.training.networks.minilm import LAYER_PREFIX, MiniLM, load_minilm
from dnsvr.training.networks.t2v_defaults import DEFAULT_DEPTH, DEFAULT_DIM, DEFAULT_MAX_FRAMES
from dnsvr.training.networks.teachclip import (
    AFA_TEMPERATURE,
    KEY_MASK_VALUE,
    MAX_LOGIT_SCALE,
    TEMPORAL_LAYER_NORM_EPS,
    TEMPORAL_PREFIX,
)
from torch import Tensor, nn

__all__ = ["DEFAULT_DEPTH", "DEFAULT_DIM", "DEFAULT_MAX_FRAMES", "OfflineTextVideoStudent", "OfflineVideoIntermediates"]

INITIAL_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature
INIT_STD = 0.02  # CLIP4Clip's initializer_range for the new Linear layers
TEXT_PREFIX = "text."


@dataclass
class OfflineVideoIntermediates:
    """The video path of a batch of B videos with T slots (T = the longest video's real frames).

    mask             `[B, T]` bool     True at real frames (a prefix of each row)
    temporal_out     `[B, T, D]`      the un-normalised per-frame outputs AFA weights (0 at padded slots)
    afa_logits       `[B, T]`         AFA head output (0 at padded slots)
    afa_weights_t01  `[B, T]`         softmax(afa_logits / 0.1) over the real frames: the aggregation weights
    afa_weights_t1   `[B, T]`         softmax(afa_logits) over the real frames: TeachCLIP's fine-loss weights
    video_embed      `[B, D]`         sum_t afa_weights_t01 * temporal_out_t / |temporal_out_t|, NOT normalised
    """

    mask: Tensor
    temporal_out: Tensor
    afa_logits: Tensor
    afa_weights_t01: Tensor
    afa_weights_t1: Tensor
    video_embed: Tensor


class OfflineTextVideoStudent(nn.Module):
    """TeachCLIP's AFA head over EfficientNet-Lite0 frame features + a projected MiniLM text tower (see the module
    docstring).  `minilm`: the text encoder (default: the package's all-MiniLM-L6-v2)."""

    def __init__(self, dim: int = DEFAULT_DIM, depth: int = DEFAULT_DEPTH, max_frames: int = DEFAULT_MAX_FRAMES,
                 minilm: MiniLM | None = None, trainable_text_layers: int = 0,
                 frame_dim: int = FRAME_FEATURE_DIM):
        super().__init__()
        if dim < HEAD_WIDTH or dim % HEAD_WIDTH:
            raise ValueError(f"dim must be a positive multiple of {HEAD_WIDTH} (attention heads are {HEAD_WIDTH} "
                             f"wide), got {dim}")
        if depth < 1 or max_frames < 1:
            raise ValueError(f"depth and max_frames must be >= 1, got {depth} and {max_frames}")
        self.text = minilm if minilm is not None else load_minilm()
        if not 0 <= trainable_text_layers <= self.text.config.layers:
            raise ValueError(f"trainable_text_layers must be in 0..{self.text.config.layers}, "
                             f"got {trainable_text_layers}")
        self.max_frames = max_frames
        self.trainable_text_layers = trainable_text_layers
        self.text_proj = nn.Linear(self.text.dim, dim)
        self.video_proj = nn.Linear(frame_dim, dim)
        self.frame_position_embeddings = nn.Embedding(max_frames, dim)
        self.transformerClip = Transformer(dim, depth, dim // HEAD_WIDTH, TEMPORAL_LAYER_NORM_EPS)
        self.frameLinear = nn.Linear(dim, dim)
        self.frameLinear2 = nn.Linear(dim, 1)
        self.logit_scale = nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE))
        self._init_head()
        first_trainable = self.text.config.layers - trainable_text_layers
        for name, parameter in self.text.named_parameters():
            parameter.requires_grad_(name.startswith(LAYER_PREFIX)
                                     and int(name[len(LAYER_PREFIX):].split(".")[0]) >= first_trainable)

    def _init_head(self) -> None:
        """CLIP4Clip's init_weights for new modules: Linear/Embedding weights ~ N(0, 0.02), biases 0 (LayerNorms
        and attention in-projections keep PyTorch's init).  Draws from the global generator: seed it first."""
        for module in (self.text_proj, self.video_proj, self.frame_position_embeddings, self.transformerClip,
                       self.frameLinear, self.frameLinear2):
            for sub in module.modules():
                if isinstance(sub, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(sub.weight, 0.0, INIT_STD)
                if isinstance(sub, nn.Linear) and sub.bias is not None:
                    nn.init.zeros_(sub.bias)

    @property
    def dim(self) -> int:
        return self.text_proj.out_features

    @property
    def depth(self) -> int:
        return len(self.transformerClip.resblocks)

    @property
    def frame_dim(self) -> int:
        return self.video_proj.in_features

    # ---- text -------------------------------------------------------------------------------------------------

    def sentence_vectors(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """MiniLM sentence vectors `[B, 384]` (no gradient when MiniLM is frozen)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable_text_layers > 0):
            return self.text(input_ids, attention_mask)

    def project_text(self, sentence: Tensor) -> Tensor:
        """MiniLM sentence vectors `[B, 384]` float32 (e.g. precomputed) -> text vectors `[B, D]`, L2-normalised."""
        if sentence.ndim != 2 or sentence.shape[1] != self.text_proj.in_features:
            raise ValueError(f"sentence vectors must be [B, {self.text_proj.in_features}], got {list(sentence.shape)}")
        return F.normalize(self.text_proj(sentence.to(self.text_proj.weight.device, torch.float32)), dim=-1)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Token ids and mask `[B, L]` int64 (`data.minilm_tokenizer`) -> text vectors `[B, D]`, L2-normalised."""
        return self.project_text(self.sentence_vectors(input_ids, attention_mask))

    # ---- video ------------------------------------------------------------------------------------------------

    def video_intermediates(self, frame_features: Tensor, mask: Tensor | None = None) -> OfflineVideoIntermediates:
        """The video path (`OfflineVideoIntermediates`) of frame features `[B, T, 1280]` float32 with mask `[B, T]`
        (1/True at real frames, real frames first; None = all real).  T may exceed `max_frames` by padded slots."""
        x, mask = self._checked_video(frame_features, mask)
        slots = int(mask.sum(dim=1).max())
        x, mask = x[:, :slots], mask[:, :slots]  # trailing slots are padding in every row
        padded = ~mask  # [B, T]
        projected = self.video_proj(x.masked_fill(padded[..., None], 0.0))  # [B, T, 1280] -> [B, T, D]
        positions = self.frame_position_embeddings.weight[:slots]  # [T, D]
        key_mask = padded.float() * KEY_MASK_VALUE  # [B, T]: 0 at real frames, -1e6 at padded slots
        key_mask = key_mask[:, None, :].expand(-1, slots, -1)  # [B, T] -> [B, T(query), T(key)]
        key_mask = key_mask.repeat_interleave(self.transformerClip.heads, dim=0)  # -> [B*heads, T, T]
        temporal_out = self.transformerClip(projected + positions, key_mask) + projected  # [B, T, D]
        temporal_out = temporal_out.masked_fill(padded[..., None], 0.0)
        afa_logits = self.frameLinear2(F.relu(self.frameLinear(temporal_out))).squeeze(-1)  # [B, T, 1] -> [B, T]
        afa_logits = afa_logits.masked_fill(padded, 0.0)
        softmax_logits = afa_logits.masked_fill(padded, float("-inf"))
        weights_t01 = (softmax_logits / AFA_TEMPERATURE).softmax(dim=1)  # [B, T]
        weights_t1 = softmax_logits.softmax(dim=1)  # [B, T]
        normed = F.normalize(temporal_out, dim=-1)  # [B, T, D] (0 at padded slots)
        video_embed = (normed * weights_t01[..., None]).sum(dim=1)  # [B, T, D] -> [B, D]
        return OfflineVideoIntermediates(mask=mask, temporal_out=temporal_out, afa_logits=afa_logits,
                                         afa_weights_t01=weights_t01, afa_weights_t1=weights_t1,
                                         video_embed=video_embed)

    def encode_video(self, frame_features: Tensor, mask: Tensor | None = None) -> Tensor:
        """Frame features `[B, T, 1280]` float32, mask `[B, T]` float32 (1 = real) -> video vectors `[B, D]`,
        L2-normalised: the vector retrieval stores."""
        return F.normalize(self.video_intermediates(frame_features, mask).video_embed, dim=-1)

    # ---- scores -----------------------------------------------------------------------------------------------

    @staticmethod
    def similarity(text: Tensor, video: Tensor) -> Tensor:
        """Cosine matrix `[Bt, Bv]` of text vectors `[Bt, D]` and video vectors `[Bv, D]`."""
        return F.normalize(text, dim=-1) @ F.normalize(video, dim=-1).T  # [Bt, D] @ [D, Bv] -> [Bt, Bv]

    def logit_scale_exp(self) -> Tensor:
        """`exp(min(logit_scale, log 100))`, a 0-d tensor (the clamp keeps a gradient below the bound)."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def logits(self, text: Tensor, video: Tensor) -> Tensor:
        """Training logits `[Bt, Bv]` = clamped `logit_scale.exp() * cosine`."""
        return self.logit_scale_exp() * self.similarity(text, video)

    # ---- weights ----------------------------------------------------------------------------------------------

    def head_state_dict(self) -> dict[str, Tensor]:
        """Every trained tensor: the head, plus the MiniLM layers that were fine-tuned (`text.encoder.layer.<i>.*`
        for the last `trainable_text_layers`); the frozen MiniLM weights come from its package."""
        trained = {f"{TEXT_PREFIX}{name}" for name, p in self.text.named_parameters() if p.requires_grad}
        return {k: v.detach().clone() for k, v in self.state_dict().items()
                if not k.startswith(TEXT_PREFIX) or k in trained}

    @classmethod
    def from_head_state_dict(cls, state_dict: Mapping[str, Tensor], minilm: MiniLM | None = None
                             ) -> OfflineTextVideoStudent:
        """A student in eval mode from `head_state_dict()`; dim, depth, max_frames, the frame and text widths and
        the fine-tuned MiniLM layers are read from the tensors.  Raises `CheckpointError` on any other layout."""
        try:
            dim, frame_dim = state_dict["video_proj.weight"].shape
            text_dim = state_dict["text_proj.weight"].shape[1]
            max_frames = state_dict["frame_position_embeddings.weight"].shape[0]
        except (KeyError, AttributeError, ValueError) as exc:
            raise CheckpointError(f"not an offline text-video student head: {exc!r}") from exc
        depth = count_blocks(list(state_dict), TEMPORAL_PREFIX)
        text_layers = {k[len(TEXT_PREFIX + LAYER_PREFIX):].split(".")[0] for k in state_dict
                       if k.startswith(TEXT_PREFIX + LAYER_PREFIX)}
        minilm = minilm if minilm is not None else load_minilm()
        if text_dim != minilm.dim:
            raise CheckpointError(f"the head projects {text_dim}-d text vectors, the MiniLM gives {minilm.dim}")
        try:
            model = cls(dim=dim, depth=depth, max_frames=max_frames, minilm=minilm,
                        trainable_text_layers=len(text_layers), frame_dim=frame_dim)
        except ValueError as exc:
            raise CheckpointError(f"not an offline text-video student head: {exc}") from exc
        text_sd = {TEXT_PREFIX + k: v for k, v in minilm.state_dict().items()}
        load_strict(model, {**text_sd, **{k: v.float() for k, v in state_dict.items()}},
                    "offline text-video student head")
        return model.eval()

    # ---- helpers ----------------------------------------------------------------------------------------------

    def _checked_video(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> (`[B, T, F]` float32, `[B, T]` bool) on the head's device, or ValueError naming the problem."""
        if x.ndim != 3 or x.shape[-1] != self.frame_dim or not x.is_floating_point():
            raise ValueError(f"frame features must be [B, T, {self.frame_dim}] float32, got {list(x.shape)} "
                             f"{x.dtype}")
        device = self.video_proj.weight.device
        x = x.to(device, torch.float32)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=device) if mask is None else mask.to(device) != 0
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"mask must be [B, T] = {list(x.shape[:2])}, got {list(mask.shape)}")
        if (mask[:, 1:] & ~mask[:, :-1]).any():
            raise ValueError("mask must mark the real frames first (a prefix of each row)")
        lengths = mask.sum(dim=1)
        if (lengths == 0).any():
            raise ValueError("every video needs at least one real frame")
        if (lengths > self.max_frames).any():
            raise ValueError(f"a video has {int(lengths.max())} frames, more than max_frames={self.max_frames}: "
                             "select frames first")
        return x, mask
