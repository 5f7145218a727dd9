"""The networks the BLS pipelines call, as plain functions over Triton requests (`ModelCalls`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.search import Embedding, ModelCalls
from dnsvr.serving.pipelines.views import segment_vectors
from dnsvr.serving.triton.base import call
from dnsvr.training.data.segments import SegmentLayout


def embedder(text: bool, thumbnail: bool = False, features: bool = False
             ) -> Callable[[dict[str, np.ndarray]], Embedding]:
    """dnsvr_embed on one video ({"video": bytes} or {"frames": uint8}) -> Embedding; `text`: the pack has a
    text-video student, whose vector dnsvr_embed then also returns; `thumbnail`: return the video's thumbnail
    too (what indexing stores); `features`: its full-frame features too (what segment views are embedded from)."""
    outputs = ["coarse", "fine", "selector", *(["text_video"] if text else []), *(["thumbnail"] if thumbnail else []),
               *(["features", "mask"] if features else [])]

    def embed(video: dict[str, np.ndarray]) -> Embedding:
        return Embedding.from_outputs(call("dnsvr_embed", video, outputs))

    return embed


def embed_text(text: str) -> np.ndarray:
    """dnsvr_text_embed on one text query -> its unit vector [D] float32."""
    query = np.array([text.encode("utf-8")], dtype=np.object_)
    return call("dnsvr_text_embed", {"text": query}, ["embedding"])["embedding"][0]


def coarse_embed(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """coarse_embed on features [n, T, 9, 512] and mask [n, T] -> unit S^c vectors [n, C] float32."""
    return call(spec.COARSE_EMBED.name, {"features": features, "mask": mask}, ["embedding"])["embedding"]


def crop_views(video: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """video_views on one video ({"video": bytes} or {"frames": uint8}) -> its crop views' S^c vectors [B, C] and
    fine codes [B, T, 9, W] (None where the repository's store keeps none: `view_codes` of no view)."""
    outputs = call("video_views", video, ["views", "view_codes"])
    codes = outputs["view_codes"][0]
    return outputs["views"][0], codes if len(codes) else None


def model_calls(fine: str, text: bool = False, thumbnail: bool = False, views: bool = False,
                segments: SegmentLayout | None = None) -> ModelCalls:
    """dnsvr_embed (`embedder(text, thumbnail)`), selector_score, the fine student `fine`'s similarity model,
    with `views` (indexing by the pack's crop grid) video_views and with `segments` (indexing by the pack's frame
    windows) coarse_embed on each window of the features dnsvr_embed then also returns."""
    similarity_model = spec.fine_kind(fine).similarity_model

    def selector_score(rows: np.ndarray) -> np.ndarray:
        return call(spec.SELECTOR_SCORE.name, {"pair_features": rows}, ["scores"])["scores"]

    def fine_similarity(query, query_mask, candidates, candidate_mask) -> tuple[np.ndarray, np.ndarray]:
        feeds = {"query": query, "query_mask": query_mask, "candidates": candidates,
                 "candidate_mask": candidate_mask}
        outputs = call(similarity_model, feeds, ["similarity", "f2f"])
        return outputs["similarity"], outputs["f2f"]

    def segment_views(features: np.ndarray) -> np.ndarray:
        return segment_vectors(features, segments, coarse_embed)

    return ModelCalls(embedder(text, thumbnail, segments is not None), selector_score, fine_similarity,
                      crop_views if views else None, segment_views if segments is not None else None)
