"""DnS selector network: decides which query-target pairs the fine-grained student re-ranks.

`index_video`: a video's self-similarity score ("how much does it repeat itself"), `[N, 1]`.
`forward`: MLP over rows `[sn_query, sn_target, coarse_similarity]`, `[K, 3] -> [K, 1]` in (0, 1).
"""

from __future__ import annotations

import torch
from dnsvr.training.networks.layers import Attention, VideoComparator
from dnsvr.training.networks.similarity import as_batch, canonical_frames, masked_mean
from torch import Tensor, nn


class SelectorMLP(nn.Module):
    """`[K, input_size] -> [K, 1]`: (Linear, BatchNorm1d, ReLU, Dropout) x (1 + num_layers), Linear, Sigmoid.
    """

    def __init__(self, input_size: int, hidden_size: int = 100, num_layers: int = 1):
        super().__init__()
        blocks: list[nn.Module] = []
        width = input_size
        for _ in range(num_layers + 1):
            blocks += [nn.Linear(width, hidden_size, bias=False), nn.BatchNorm1d(hidden_size), nn.ReLU(),
                       nn.Dropout()]
            width = hidden_size
        blocks += [nn.Linear(hidden_size, 1), nn.Sigmoid()]
        self.model = nn.Sequential(*blocks)
        for m in self.model.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class SelectorNetwork(nn.Module):
    """The DnS selector.  `attention`/`binarization` only name which official weights it was trained with
    (dns_selector_cg-fg_att / cg-fg_bin); the architecture is the same."""

    def __init__(
        self,
        dims: int = 512,
        hidden_size: int = 100,
        num_layers: int = 1,
        attention: bool = False,
        binarization: bool = False,
        reference_padding: bool = False,
    ):
        super().__init__()
        self.reference_padding = reference_padding
        self.attention = Attention(dims, norm=False)
        self.visil_head = VideoComparator(padding="zero")
        self.mlp = SelectorMLP(3, hidden_size, num_layers)

    def get_network_name(self) -> str:
        return "selector_network"

    def frame_to_frame_similarity(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """`[T, R, D]` / `[N, T, R, D]` (+ mask `[N, T]`) -> (self-similarity `[N, T, T]`: mean over both
        region axes of attention-weighted region dot products, 0 at masked cells; its mask `[N, T, T]` bool).
        Short videos are repeated first (1 -> 4, 2 -> 4, 3 -> 6 frames)."""
        x, mask, _ = as_batch(x, mask)
        x, mask = canonical_frames(x, mask)
        x, _ = self.attention(x)
        pooled = x.mean(dim=2)
        sim = torch.einsum("nid,njd->nij", pooled, pooled)
        sim_mask = mask[:, :, None] & mask[:, None, :]
        return sim.masked_fill(~sim_mask, 0.0), sim_mask

    def index_video(
        self, x: Tensor, mask: Tensor | None = None, reference_padding: bool | None = None
    ) -> Tensor:
        """Region features `[T, R, D]` / `[N, T, R, D]` (+ mask `[N, T]`) -> self-similarity `[N, 1]`."""
        ref = self.reference_padding if reference_padding is None else reference_padding
        sim, sim_mask = self.frame_to_frame_similarity(x, mask)
        sim, sim_mask = self.visil_head(sim, sim_mask, reference_padding=ref)
        return masked_mean(sim, sim_mask, dim=(1, 2))[:, None]

    def forward(self, x: Tensor) -> Tensor:
        """`[K, 3]` rows (query score, target score, coarse similarity) -> `[K, 1]` selection probability."""
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"selector input must be [K, 3], got shape {tuple(x.shape)}")
        return self.mlp(x)
