"""How each kind of text-video student (`dnsvr.client.spec.TEXT_KINDS`) is exported: one entry per kind.

    text_export(network name) -> the TextExport of the student kind that network belongs to
    TEXT_EXPORTS[kind].build_graph(name, student, afa)                -> the traceable graph of one of its networks
                      .example_feeds(name, student, lengths, frames, seed) -> valid random inputs of that graph
                      .reference_output(name, student, feeds, afa)    -> the eager student's answer (parity)
                      .settings(student, afa)                         -> the manifest's "text" (what serving needs)
                      .extractor                                      -> the pack extractor it needs (None: any)

"teachclip" (`dnsvr.export.text_graphs`): CLIP BPE tokens, the CLIP crops video_features makes, AFA "official"
(TeachCLIP's padded softmax) or "real_frames".  "offline_minilm_effnet" (`dnsvr.export.offline_text_graphs`):
MiniLM WordPiece tokens, the pooled EfficientNet-Lite0 features of the DnS frames (`feature_extractor_pooled`),
AFA over the real frames.  Settings of both: kind, afa, max_frames (frames per video), embed_dim, max_words
(tokens per query); a TeachCLIP student's also image_size (its crops).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from dnsvr.client import spec
from dnsvr.export import offline_text_graphs, text_graphs
from torch import nn


@dataclass(frozen=True)
class TextExport:
    """What exporting a text-video student of `kind` takes (see the module docstring)."""

    kind: spec.TextKind
    build_graph: Callable[[str, nn.Module, str], nn.Module]
    example_feeds: Callable[..., dict[str, np.ndarray]]
    reference_output: Callable[[str, nn.Module, dict[str, np.ndarray], str], np.ndarray]
    settings: Callable[[nn.Module, str], dict]
    extractor: str | None = None


def _teachclip_settings(student: nn.Module, afa: str) -> dict:
    from dnsvr.training.data.clip_tokenizer import DEFAULT_MAX_WORDS

    return {"kind": spec.TEACHCLIP.name, "afa": afa, "max_frames": student.max_frames,
            "image_size": student.clip.config.image_resolution, "embed_dim": student.embed_dim,
            "max_words": DEFAULT_MAX_WORDS}


def _offline_settings(student: nn.Module, afa: str) -> dict:
    from dnsvr.training.data.minilm_tokenizer import DEFAULT_MAX_LEN

    return {"kind": spec.OFFLINE_MINILM_EFFNET.name, "afa": "real_frames", "max_frames": student.max_frames,
            "embed_dim": student.dim, "max_words": DEFAULT_MAX_LEN}


TEXT_EXPORTS: dict[str, TextExport] = {
    spec.TEACHCLIP.name: TextExport(spec.TEACHCLIP, text_graphs.build_graph, text_graphs.example_feeds,
                                    text_graphs.reference_output, _teachclip_settings),
    spec.OFFLINE_MINILM_EFFNET.name: TextExport(
        spec.OFFLINE_MINILM_EFFNET, offline_text_graphs.build_graph, offline_text_graphs.example_feeds,
        offline_text_graphs.reference_output, _offline_settings, extractor="efficientnet_lite0"),
}


def text_export(network: str) -> TextExport:
    """The TextExport whose student serves network `network` (KeyError for any other network)."""
    for entry in TEXT_EXPORTS.values():
        if network in entry.kind.networks:
            return entry
    raise KeyError(f"'{network}' is not a text-video network ({', '.join(spec.TEXT_NETWORKS)})")
