"""CLIP (ViT image encoder + causal text transformer) built from an OpenAI-layout state dict, in float32.

The architecture follows OpenAI CLIP's `model.py` (and TeachCLIP's `module_clip.py`, identical for the ViT):
pre-LN residual attention blocks (`nn.MultiheadAttention`, MLP width*4 with QuickGELU), LayerNorm computed in
float32.  `CLIPConfig.from_state_dict` infers every hyper-parameter from the tensor shapes with the rules of CLIP's
`build_model`; `build_clip` builds the network, casts every tensor to float32 and loads it strictly.
Only the ViT image encoder is supported (TeachCLIP asserts it); a ResNet CLIP is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from dnsvr.training.networks.checkpoints import CheckpointError
from torch import Tensor, nn

CLIP_LAYER_NORM_EPS = 1e-5
HEAD_WIDTH = 64  # CLIP's attention heads are 64 wide: heads = width // 64
NON_TENSOR_KEYS = ("input_resolution", "context_length", "vocab_size")  # scalars of OpenAI's JIT archives


class LayerNorm(nn.LayerNorm):
    """`nn.LayerNorm` computed in float32 whatever the input dtype; the result has the input's dtype."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    """CLIP's GELU approximation `x * sigmoid(1.702 x)`."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`, on sequence-first `[L, N, D]` input."""

    def __init__(self, width: int, heads: int, layer_norm_eps: float = CLIP_LAYER_NORM_EPS):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width, eps=layer_norm_eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = LayerNorm(width, eps=layer_norm_eps)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """`[L, N, D]` (+ additive float mask `[L, L]` or `[N * heads, L, L]`) -> `[L, N, D]`."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of `ResidualAttentionBlock`s (`resblocks.<i>`), batch-first outside, sequence-first inside."""

    def __init__(self, width: int, layers: int, heads: int, layer_norm_eps: float = CLIP_LAYER_NORM_EPS):
        super().__init__()
        self.width = width
        self.heads = heads
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, layer_norm_eps) for _ in range(layers))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """`[N, L, D]` (+ additive float mask `[L, L]` or `[N * heads, L, L]`) -> `[N, L, D]`."""
        x = x.permute(1, 0, 2)  # [N, L, D] -> [L, N, D]
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x.permute(1, 0, 2)  # [L, N, D] -> [N, L, D]


class VisionTransformer(nn.Module):
    """CLIP's ViT: patches -> class token + positions -> ln_pre -> blocks -> ln_post(token 0) @ proj."""

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int):
        super().__init__()
        self.input_resolution = input_resolution
        grid = input_resolution // patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images `[N, 3, S, S]` float32 -> embeddings `[N, output_dim]` float32."""
        x = self.conv1(images)  # [N, width, grid, grid]
        x = x.flatten(2).permute(0, 2, 1)  # [N, width, grid*grid] -> [N, grid*grid, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [width] -> [N, 1, width]
        x = torch.cat([cls, x], dim=1)  # [N, grid*grid + 1, width]
        x = self.ln_pre(x + self.positional_embedding.to(x.dtype))
        x = self.transformer(x)
        return self.ln_post(x[:, 0, :]) @ self.proj  # [N, width] @ [width, output_dim] -> [N, output_dim]


@dataclass(frozen=True)
class CLIPConfig:
    """CLIP hyper-parameters (ViT image encoder); every one is fixed by the state dict's shapes."""

    embed_dim: int
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_patch_size: int
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int

    @property
    def vision_heads(self) -> int:
        return self.vision_width // HEAD_WIDTH

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> CLIPConfig:
        """The rules of OpenAI CLIP `build_model` on an unprefixed CLIP state dict.

        Raises `CheckpointError` for a ResNet CLIP or a state dict without the keys the rules read.
        """
        sd = state_dict
        if any(k.startswith("visual.layer1.") for k in sd):
            raise CheckpointError("a ResNet (ModifiedResNet) CLIP: only ViT CLIPs are supported (as in TeachCLIP)")
        needed = ("visual.conv1.weight", "visual.positional_embedding", "text_projection", "positional_embedding",
                  "token_embedding.weight", "ln_final.weight")
        missing = [k for k in needed if k not in sd]
        if missing:
            raise CheckpointError(f"not a CLIP state dict: missing {', '.join(missing)}")
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        width = sd["ln_final.weight"].shape[0]
        vision_width = sd["visual.conv1.weight"].shape[0]
        return cls(
            embed_dim=sd["text_projection"].shape[1],
            image_resolution=patch * grid,
            vision_layers=sum(1 for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")),
            vision_width=vision_width,
            vision_patch_size=patch,
            context_length=sd["positional_embedding"].shape[0],
            vocab_size=sd["token_embedding.weight"].shape[0],
            transformer_width=width,
            transformer_heads=width // HEAD_WIDTH,
            transformer_layers=count_blocks(sd, "transformer.resblocks."),
        )


def count_blocks(keys: Mapping[str, Tensor] | list[str], prefix: str) -> int:
    """Number of distinct `<prefix><i>.` block indices among the keys."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in keys if (m := pattern.match(k))})


class CLIP(nn.Module):
    """CLIP's two encoders; `encode_image` and `encode_text` return unnormalised `[N, embed_dim]` embeddings."""

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config.image_resolution, config.vision_patch_size, config.vision_width,
                                        config.vision_layers, config.vision_heads, config.embed_dim)
        self.transformer = Transformer(config.transformer_width, config.transformer_layers, config.transformer_heads)
        self.token_embedding = nn.Embedding(config.vocab_size, config.transformer_width)
        self.positional_embedding = nn.Parameter(torch.zeros(config.context_length, config.transformer_width))
        self.ln_final = LayerNorm(config.transformer_width)
        self.text_projection = nn.Parameter(torch.zeros(config.transformer_width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]))

    def encode_image(self, images: Tensor) -> Tensor:
        """Normalised images `[N, 3, S, S]` float32 (S = image_resolution) -> `[N, embed_dim]` float32."""
        return self.visual(images)

    def text_token_states(self, token_ids: Tensor) -> Tensor:
        """Token ids `[N, L]` int64 (L <= context_length) -> every token's state after `ln_final`, `[N, L, width]`
        float32 (not projected).  The causal mask is built for the actual length L, so zero-padding the ids to any
        length changes no state up to the first EOT."""
        length = token_ids.shape[1]
        if length > self.config.context_length:
            raise ValueError(f"{length} tokens exceed CLIP's context length {self.config.context_length}")
        x = self.token_embedding(token_ids) + self.positional_embedding[:length]  # [N, L, width]
        causal = torch.full((length, length), float("-inf"), device=x.device).triu_(1)  # [L, L], -inf above diag
        return self.ln_final(self.transformer(x, causal))  # [N, L, width]

    def encode_text(self, token_ids: Tensor) -> Tensor:
        """Token ids `[N, L]` int64 (L <= context_length) -> `[N, embed_dim]` float32, read at the first EOT.

        The EOT token has the largest id, hence `argmax` finds its first occurrence.
        """
        x = self.text_token_states(token_ids)  # [N, L, width]
        eot = x[torch.arange(x.shape[0], device=x.device), token_ids.argmax(dim=-1)]  # [N, width]
        return eot @ self.text_projection  # [N, width] @ [width, embed_dim] -> [N, embed_dim]


def float32_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A copy with every floating-point tensor in float32 (float16 values widen exactly; nothing is rounded)."""
    return {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone() for k, v in state_dict.items()}


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], what: str) -> None:
    """`module.load_state_dict(state_dict, strict=True, assign=True)`, with a `CheckpointError` naming the
    missing, unexpected and wrongly shaped keys.  `assign` lets a module built on the meta device take the tensors
    themselves (no random initialisation, no copy)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:10])}{' ...' if len(unexpected) > 10 else ''}")
    wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if wrong:
        problems.append(f"wrong shapes: {', '.join(wrong[:10])}")
    if problems:
        raise CheckpointError(f"{what}: {'; '.join(problems)}")
    module.load_state_dict(state_dict, strict=True, assign=True)


def build_clip(state_dict: Mapping[str, Tensor]) -> CLIP:
    """An unprefixed OpenAI-layout CLIP state dict -> `CLIP` in float32, eval mode.

    The JIT archives' scalar entries (`input_resolution`, `context_length`, `vocab_size`) are dropped.
    """
    sd = float32_state_dict({k: v for k, v in state_dict.items() if k not in NON_TENSOR_KEYS})
    config = CLIPConfig.from_state_dict(sd)
    with torch.device("meta"):
        model = CLIP(config)
    load_strict(model, sd, "CLIP state dict")
    return model.eval()
