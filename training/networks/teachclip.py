"""The TeachCLIP student: CLIP4Clip "seqTransf" (CLIP + temporal transformer) with TeachCLIP's AFA head.

Video path (TeachCLIP `modules/modeling.py:get_video_output`), D = CLIP's embed dim (= its text width):
  frame_features  `[B, T, D]`  CLIP image embedding of every frame slot
  temporal_transformer_out = transformerClip(frame_features + frame_position_embeddings[:T]), keys of padded slots
                  masked additively with `(1 - mask) * -1e6`
  temporal_out    = temporal_transformer_out + frame_features   (residual WITHOUT the position embedding)
  afa_logits      = frameLinear2(relu(frameLinear(temporal_out)))   `[B, T]`
  video_embed     = sum_t softmax_t(afa_logits / 0.1) * temporal_out_t / |temporal_out_t|   `[B, D]`, unnormalised
Text path: CLIP's text encoder at the first EOT (the tokenizer's attention mask is not used, as in the official
code).  Similarity = cosine; training logits = `logit_scale.exp() * cosine`.

Two AFA modes (`afa=`):
  "official"     (default) the official padded batch: every video is padded to `max_frames` slots holding the CLIP
                 embedding of an all-zero image, and the AFA softmax runs over all `max_frames` slots, padded ones
                 included.  A video's vector depends on its length but never on its batch.  Reproduces the golden
                 `video_embed`, `afa_weights_t01`, `afa_weights_t1`, `sim`, `logits_train`.
  "real_frames"  the AFA softmax restricted to real frames: a video's vector equals that of the official code run
                 on the video alone, unpadded (golden `alone_*`); padded slots of the intermediates are 0.
Frame selection (at most `max_frames` frames) is preprocessing (`dnsvr.training.data.clip_frames`): a longer
video is an error.

Checkpoints (`dnsvr.training.networks.checkpoints.load_checkpoint`, kinds `teachclip_student` and `clip`, or
`TeachCLIPStudent.from_state_dict`): a TeachCLIP / CLIP4Clip seqTransf student
(`clip.*`, fp16 CLIP weights, + head), or a bare OpenAI CLIP state dict (a student with a fresh head initialised as
CLIP4Clip does).  Anything else raises `CheckpointError`.  Tensors are widened to float32, never rounded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from dnsvr.training.networks.clip import (
    CLIP,
    NON_TENSOR_KEYS,
    CheckpointError,
    CLIPConfig,
    Transformer,
    count_blocks,
    float32_state_dict,
    load_strict,
)
from torch import Tensor, nn

AFA_TEMPERATURE = 0.1
TEMPORAL_LAYER_NORM_EPS = 1e-12  # CLIP4Clip's TF-style LayerNorm (until_module.LayerNorm)
KEY_MASK_VALUE = -1e6  # additive attention mask on the keys of padded frame slots
DEFAULT_MAX_FRAMES = 12
DEFAULT_TEMPORAL_LAYERS = 4
MAX_LOGIT_SCALE = math.log(100.0)
HEAD_INIT_SEED = 0
HEAD_INIT_STD = 0.02  # CLIP4Clip's init_weights: initializer_range of its cross config
CLIP_PREFIX = "clip."
TEMPORAL_PREFIX = "transformerClip.resblocks."
DNS_KEY_PREFIXES = ("visil_head.", "video_comperator.", "binarization.", "netvlad.", "transformer.layers.",
                    "mlp.model.", "attention.context_vector.", "cnn.conv1.", "pca.")

AFAMode = Literal["official", "real_frames"]
AFA_MODES = ("official", "real_frames")


@dataclass
class VideoIntermediates:
    """Every stage of the video path for a batch of B videos with T slots (T = max_frames in "official" mode).

    frame_features            `[B, T, D]` float32  CLIP image embeddings (padded slots: the all-zero image in
                                                    "official" mode, 0 in "real_frames" mode)
    mask                      `[B, T]` bool        True at real frames (a prefix of each row)
    temporal_transformer_out  `[B, T, D]` float32  transformerClip output, before the residual
    temporal_out              `[B, T, D]` float32  + frame_features: the per-frame features AFA weights
    temporal_out_normed       `[B, T, D]` float32  temporal_out / its L2 norm
    afa_logits                `[B, T]` float32     AFA head output
    afa_weights_t01           `[B, T]` float32     softmax(afa_logits / 0.1): the aggregation weights
    afa_weights_t1            `[B, T]` float32     softmax(afa_logits): the weights of TeachCLIP's fine loss
    video_embed               `[B, D]` float32     sum_t afa_weights_t01 * temporal_out_normed, NOT normalised
    mean_pooled_embed         `[B, D]` float32     the non-AFA "meanP" path: masked mean of temporal_out_normed,
                                                    L2-normalised (golden `logits_meanP`; not used for retrieval)
    In "real_frames" mode every per-slot value at a padded slot is 0 and the softmaxes run over real frames only.
    """

    frame_features: Tensor
    mask: Tensor
    temporal_transformer_out: Tensor
    temporal_out: Tensor
    temporal_out_normed: Tensor
    afa_logits: Tensor
    afa_weights_t01: Tensor
    afa_weights_t1: Tensor
    video_embed: Tensor
    mean_pooled_embed: Tensor


class TeachCLIPStudent(nn.Module):
    """CLIP4Clip seqTransf + AFA; parameter names are those of TeachCLIP checkpoints (`load_state_dict` strict).

    `max_frames` is the number of slots every video is padded to in "official" mode (12 in TeachCLIP's MSR-VTT,
    MSVD and VATEX configs; 64 for the long-video sets) and the most frames a video may have.
    """

    def __init__(self, clip_config: CLIPConfig, temporal_layers: int = DEFAULT_TEMPORAL_LAYERS,
                 max_frames: int = DEFAULT_MAX_FRAMES):
        super().__init__()
        width = clip_config.transformer_width
        if clip_config.embed_dim != width:
            raise ValueError(f"seqTransf needs CLIP's embed dim ({clip_config.embed_dim}) to equal its text width "
                             f"({width}): the temporal transformer runs on the frame embeddings")
        if not 1 <= max_frames <= clip_config.context_length:
            raise ValueError(f"max_frames must be in 1..{clip_config.context_length} (frame positions), "
                             f"got {max_frames}")
        self.max_frames = max_frames
        self.clip = CLIP(clip_config)
        self.frame_position_embeddings = nn.Embedding(clip_config.context_length, width)
        self.transformerClip = Transformer(width, temporal_layers, clip_config.transformer_heads,
                                           TEMPORAL_LAYER_NORM_EPS)
        self.frameLinear = nn.Linear(width, width)
        self.frameLinear2 = nn.Linear(width, 1)

    @property
    def embed_dim(self) -> int:
        return self.clip.config.embed_dim

    @property
    def temporal_layers(self) -> int:
        return len(self.transformerClip.resblocks)

    # ---- text -------------------------------------------------------------------------------------------------

    def encode_text(self, token_ids: Tensor, mask: Tensor | None = None, *, normalize: bool = True) -> Tensor:
        """Token ids `[B, L]` int64 (`clip_tokenizer.encode`) -> text vectors `[B, D]` float32.

        normalize=True (default): L2-normalised, the query vector of retrieval (golden `text_embed_normed`);
        normalize=False: the raw CLIP embedding (golden `text_embed`).  `mask` (the tokenizer's attention mask) is
        accepted for symmetry and ignored: the official encoder reads the first EOT under a causal mask, so
        padding after it cannot matter.
        """
        del mask  # unused by the official text encoder (see the docstring)
        if token_ids.ndim != 2 or token_ids.dtype != torch.int64:
            raise ValueError(f"token_ids must be [B, L] int64, got {list(token_ids.shape)} {token_ids.dtype}")
        text = self.clip.encode_text(token_ids.to(self.frameLinear.weight.device))
        return F.normalize(text, dim=-1) if normalize else text

    # ---- video ------------------------------------------------------------------------------------------------

    def encode_frames(self, pixels: Tensor) -> Tensor:
        """Normalised frames `[B, T, 3, S, S]` (or one video `[T, 3, S, S]`) float32 -> `[B, T, D]` float32.

        Every slot is encoded as given (a padded slot of `frames.preprocess_video` is the all-zero image).
        """
        pixels = self._checked_pixels(pixels[None] if pixels.ndim == 4 else pixels)
        b, t = pixels.shape[:2]
        features = self.clip.encode_image(pixels.flatten(0, 1))  # [B*T, 3, S, S] -> [B*T, D]
        return features.view(b, t, -1)  # [B*T, D] -> [B, T, D]

    def encode_video(self, frames_or_features: Tensor, mask: Tensor | None = None, *, afa: AFAMode = "official",
                     normalize: bool = True) -> Tensor:
        """Video vectors `[B, D]` float32 from pixels or precomputed frame features (see `video_intermediates`).

        normalize=True (default): L2-normalised, the vector retrieval stores (golden `video_embed_normed`, or
        `alone_video_embed_normed` with afa="real_frames"); normalize=False: TeachCLIP's `get_video_output`
        (golden `video_embed` / `alone_video_embed`).
        """
        video = self.video_intermediates(frames_or_features, mask, afa=afa).video_embed
        return F.normalize(video, dim=-1) if normalize else video

    def video_intermediates(self, frames_or_features: Tensor, mask: Tensor | None = None, *,
                            afa: AFAMode = "official") -> VideoIntermediates:
        """Every stage of the video path (`VideoIntermediates`).

        Input: pixels `[B, T, 3, S, S]` / `[T, 3, S, S]` float32 (normalised: `data.clip_frames`) or frame features
        `[B, T, D]` / `[T, D]` float32 (`encode_frames`); mask `[B, T]` / `[T]` (bool or 0/1, True at real
        frames, real frames first; None = all real).  T may exceed `max_frames` only by padded slots.
        """
        if afa not in AFA_MODES:
            raise ValueError(f"afa must be one of {AFA_MODES}, got {afa!r}")
        official = afa == "official"
        x, mask = self._batched(frames_or_features, mask)
        slots = self.max_frames if official else int(mask.sum(dim=1).max())
        x, mask = _fit_slots(x, mask, slots)
        features = self._frame_features(x, mask, official)

        positions = self.frame_position_embeddings.weight[:slots]  # [T, D]
        key_mask = (1.0 - mask.float()) * KEY_MASK_VALUE  # [B, T]: 0 at real frames, -1e6 at padded slots
        key_mask = key_mask[:, None, :].expand(-1, slots, -1)  # [B, T] -> [B, T(query), T(key)]
        key_mask = key_mask.repeat_interleave(self.transformerClip.heads, dim=0)  # -> [B*heads, T, T]
        transformer_out = self.transformerClip(features + positions, key_mask)  # [B, T, D]
        temporal_out = transformer_out + features  # [B, T, D]
        afa_logits = self.frameLinear2(F.relu(self.frameLinear(temporal_out))).squeeze(-1)  # [B, T, 1] -> [B, T]
        normed = temporal_out / temporal_out.norm(dim=-1, keepdim=True)  # [B, T, D]
        softmax_logits = afa_logits
        if not official:  # padded slots do not exist: 0 in every per-slot value, out of the softmaxes
            padded = ~mask  # [B, T]
            transformer_out, temporal_out, normed = (
                v.masked_fill(padded[..., None], 0.0) for v in (transformer_out, temporal_out, normed))
            afa_logits = afa_logits.masked_fill(padded, 0.0)
            softmax_logits = afa_logits.masked_fill(padded, float("-inf"))
        weights_t01 = (softmax_logits / AFA_TEMPERATURE).softmax(dim=1)  # [B, T]
        weights_t1 = softmax_logits.softmax(dim=1)  # [B, T]
        video_embed = (normed * weights_t01[..., None]).sum(dim=1)  # [B, T, D] -> [B, D]
        real = mask[..., None].float()  # [B, T, 1]
        mean_pooled = (normed * real).sum(dim=1) / real.sum(dim=1)  # [B, T, D] -> [B, D]
        return VideoIntermediates(
            frame_features=features, mask=mask, temporal_transformer_out=transformer_out, temporal_out=temporal_out,
            temporal_out_normed=normed, afa_logits=afa_logits, afa_weights_t01=weights_t01,
            afa_weights_t1=weights_t1, video_embed=video_embed,
            mean_pooled_embed=F.normalize(mean_pooled, dim=-1),
        )

    # ---- scores -----------------------------------------------------------------------------------------------

    @staticmethod
    def similarity(text: Tensor, video: Tensor) -> Tensor:
        """Cosine matrix `[Bt, Bv]` of text vectors `[Bt, D]` and video vectors `[Bv, D]` (normalised or not);
        TeachCLIP's evaluation (golden `sim` / `alone_sim`)."""
        return F.normalize(text, dim=-1) @ F.normalize(video, dim=-1).T  # [Bt, D] @ [D, Bv] -> [Bt, Bv]

    def logit_scale_exp(self) -> Tensor:
        """`clip.logit_scale.exp()`, a 0-d tensor (golden `logit_scale_exp`)."""
        return self.clip.logit_scale.exp()

    def logits(self, text: Tensor, video: Tensor) -> Tensor:
        """Training logits `[Bt, Bv]` = `logit_scale.exp() * cosine` (golden `logits_train`).

        As in the official forward, the scale is not clamped here; the official training loop clamps the
        parameter to <= log(100) after every optimiser step: call `clamp_logit_scale_()` there.
        """
        return self.logit_scale_exp() * self.similarity(text, video)

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp `clip.logit_scale` in place to <= log(100), as TeachCLIP's train.py does after each step."""
        self.clip.logit_scale.clamp_(max=MAX_LOGIT_SCALE)

    # ---- checkpoints ------------------------------------------------------------------------------------------

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor], *, max_frames: int = DEFAULT_MAX_FRAMES,
                        temporal_layers: int | None = None) -> TeachCLIPStudent:
        """A student in float32, eval mode, from a TeachCLIP student state dict or a bare OpenAI CLIP one.

        TeachCLIP / CLIP4Clip seqTransf (`clip.*` + head): loaded strictly; the temporal depth is the number of
        `transformerClip.resblocks.<i>` (`temporal_layers`, if given, must agree).
        Bare CLIP (no prefix): a student with a fresh head, as CLIP4Clip's `from_pretrained` makes it:
        `frame_position_embeddings` = CLIP's text `positional_embedding`, temporal block i = CLIP text block i for
        i < min(depth, text layers) (same width by construction); the other temporal blocks and the AFA layers
        follow CLIP4Clip's `init_weights` (Linear weights ~ N(0, 0.02), biases 0, LayerNorms 1/0, attention
        in-projection xavier-uniform as `nn.MultiheadAttention`), drawn from a generator seeded with 0, so the
        head is the same on every call.  Depth: `temporal_layers` or 4.
        Anything else: `CheckpointError`.
        """
        kind = checkpoint_kind(state_dict)
        if kind == "clip":
            depth = DEFAULT_TEMPORAL_LAYERS if temporal_layers is None else temporal_layers
            state_dict = _student_state_dict_from_clip(state_dict, depth)
        else:
            depth = count_blocks(state_dict, TEMPORAL_PREFIX)
            if depth == 0:
                raise CheckpointError("a CLIP4Clip checkpoint without transformerClip blocks: only the seqTransf "
                                      "similarity head (TeachCLIP's student) is supported")
            if temporal_layers is not None and temporal_layers != depth:
                raise CheckpointError(f"the checkpoint has {depth} temporal blocks, temporal_layers={temporal_layers}")
        sd = float32_state_dict(state_dict)
        clip_sd = {k[len(CLIP_PREFIX):]: v for k, v in sd.items() if k.startswith(CLIP_PREFIX)}
        config = CLIPConfig.from_state_dict(clip_sd)
        try:
            with torch.device("meta"):
                model = cls(config, temporal_layers=depth, max_frames=max_frames)
        except ValueError as exc:
            raise CheckpointError(f"not a TeachCLIP student: {exc}") from exc
        load_strict(model, sd, f"TeachCLIP student ({kind} state dict)")
        return model.eval()

    # ---- helpers ----------------------------------------------------------------------------------------------

    def _checked_pixels(self, pixels: Tensor) -> Tensor:
        size = self.clip.config.image_resolution
        if pixels.ndim != 5 or tuple(pixels.shape[2:]) != (3, size, size):
            raise ValueError(f"pixels must be [B, T, 3, {size}, {size}], got {list(pixels.shape)}")
        if not pixels.is_floating_point():
            raise TypeError(f"pixels must be normalised float32 frames (data.clip_frames), got {pixels.dtype}")
        return pixels.to(self.frameLinear.weight.device, torch.float32)

    def _batched(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> (`[B, T, 3, S, S]` pixels or `[B, T, D]` features, `[B, T]` bool mask on the input's device)."""
        if x.ndim in (2, 4):  # one video
            x = x[None]
            mask = None if mask is None else mask[None]
        if x.ndim == 5:
            x = self._checked_pixels(x)
        elif x.ndim == 3:
            if x.shape[-1] != self.embed_dim or not x.is_floating_point():
                raise ValueError(f"frame features must be [B, T, {self.embed_dim}] float32, got "
                                 f"{list(x.shape)} {x.dtype}")
            x = x.to(self.frameLinear.weight.device, torch.float32)
        else:
            raise ValueError(f"expected pixels [B, T, 3, S, S] / [T, 3, S, S] or features [B, T, D] / [T, D], "
                             f"got {list(x.shape)}")
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"mask must be [B, T] = {list(x.shape[:2])}, got {list(mask.shape)}")
        mask = mask.to(x.device) != 0
        if (mask[:, 1:] & ~mask[:, :-1]).any():
            raise ValueError("mask must mark the real frames first (a prefix of each row), as the loaders do")
        lengths = mask.sum(dim=1)
        if (lengths == 0).any():
            raise ValueError("every video needs at least one real frame")
        if (lengths > self.max_frames).any():
            raise ValueError(f"a video has {int(lengths.max())} frames, more than max_frames={self.max_frames}: "
                             "select frames in preprocessing (clip_frames.select_frame_indices)")
        return x, mask

    def _frame_features(self, x: Tensor, mask: Tensor, official: bool) -> Tensor:
        """`[B, T, D]` features: real slots from `x` (encoded if pixels), padded slots canonical, whatever `x`
        held there: the all-zero image's embedding in official mode (the loaders' zero padding), else 0."""
        if x.ndim == 3:
            real = x[mask]  # [B, T, D] -> [n_real, D]
        else:
            real = self.clip.encode_image(x[mask])  # [n_real, 3, S, S] -> [n_real, D]
        if official and not mask.all():
            size = self.clip.config.image_resolution
            zero_image = torch.zeros(1, 3, size, size, device=real.device)  # [1, 3, S, S]
            padding = self.clip.encode_image(zero_image)[0]  # [D]
        else:
            padding = real.new_zeros(real.shape[-1])  # [D]
        features = padding.expand(*mask.shape, -1).clone()  # [D] -> [B, T, D]
        features[mask] = real
        return features


def _fit_slots(x: Tensor, mask: Tensor, slots: int) -> tuple[Tensor, Tensor]:
    """Drop trailing padded slots beyond `slots`, or add padded slots up to it (content is replaced later)."""
    t = x.shape[1]
    if t >= slots:
        return x[:, :slots], mask[:, :slots]
    pad_x = x.new_zeros(x.shape[0], slots - t, *x.shape[2:])  # [B, slots - T, ...]
    pad_mask = mask.new_zeros(mask.shape[0], slots - t)  # [B, slots - T]
    return torch.cat([x, pad_x], dim=1), torch.cat([mask, pad_mask], dim=1)


def checkpoint_kind(state_dict: object) -> Literal["teachclip", "clip"]:
    """"teachclip" (a `clip.`-prefixed CLIP4Clip seqTransf student) or "clip" (a bare OpenAI CLIP state dict).

    Raises `CheckpointError` for anything else, naming what it found.
    """
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise CheckpointError(f"expected a state dict (a mapping of names to tensors), got {type(state_dict).__name__}")
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"not a state dict of named tensors: entries {bad[:5]} are not str -> Tensor")
    keys = list(state_dict)
    if any(k.startswith(DNS_KEY_PREFIXES) for k in keys):
        raise CheckpointError("a DnS (video-to-video) network checkpoint, not a text-to-video one: load it with "
                              "dnsvr's DnS checkpoint loader")
    if any(k.startswith(CLIP_PREFIX) for k in keys):
        return "teachclip"
    if "visual.proj" in state_dict or "text_projection" in state_dict:
        return "clip"
    raise CheckpointError(f"unknown checkpoint layout: neither a TeachCLIP student (clip.* keys) nor an OpenAI CLIP "
                          f"state dict (visual.*, text_projection); first keys: {keys[:5]}")


def _student_state_dict_from_clip(clip_state_dict: Mapping[str, Tensor], depth: int) -> dict[str, Tensor]:
    """A full student state dict: CLIP's tensors under `clip.` plus the fresh head (see `from_state_dict`)."""
    sd = {k: v for k, v in clip_state_dict.items() if k not in NON_TENSOR_KEYS}
    config = CLIPConfig.from_state_dict(sd)
    width = config.transformer_width
    generator = torch.Generator().manual_seed(HEAD_INIT_SEED)

    def normal(*shape: int) -> Tensor:
        return torch.empty(shape).normal_(0.0, HEAD_INIT_STD, generator=generator)

    head: dict[str, Tensor] = {"frame_position_embeddings.weight": sd["positional_embedding"]}
    for i in range(depth):
        block = f"{TEMPORAL_PREFIX}{i}."
        if i < config.transformer_layers:
            source = f"transformer.resblocks.{i}."
            head.update({block + k[len(source):]: v for k, v in sd.items() if k.startswith(source)})
            continue
        head.update({
            block + "attn.in_proj_weight": nn.init.xavier_uniform_(torch.empty(3 * width, width), generator=generator),
            block + "attn.in_proj_bias": torch.zeros(3 * width),
            block + "attn.out_proj.weight": normal(width, width),
            block + "attn.out_proj.bias": torch.zeros(width),
            block + "ln_1.weight": torch.ones(width),
            block + "ln_1.bias": torch.zeros(width),
            block + "mlp.c_fc.weight": normal(4 * width, width),
            block + "mlp.c_fc.bias": torch.zeros(4 * width),
            block + "mlp.c_proj.weight": normal(width, 4 * width),
            block + "mlp.c_proj.bias": torch.zeros(width),
            block + "ln_2.weight": torch.ones(width),
            block + "ln_2.bias": torch.zeros(width),
        })
    head.update({
        "frameLinear.weight": normal(width, width),
        "frameLinear.bias": torch.zeros(width),
        "frameLinear2.weight": normal(1, width),
        "frameLinear2.bias": torch.zeros(1),
    })
    return {**{CLIP_PREFIX + k: v for k, v in sd.items()}, **head}
