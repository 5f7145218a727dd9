"""The networks the BLS pipelines call, as plain functions over Triton requests (`ModelCalls`)."""

from __future__ import annotations

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.search import Embedding, ModelCalls
from dnsvr.serving.triton.base import call


def embed(video: dict[str, np.ndarray]) -> Embedding:
    """dnsvr_embed on one video ({"video": bytes} or {"frames": uint8}) -> Embedding."""
    return Embedding.from_outputs(call("dnsvr_embed", video, ["coarse", "fine", "selector"]))


def model_calls(fine: str) -> ModelCalls:
    """dnsvr_embed, selector_score and the fine student `fine`'s similarity model."""
    similarity_model = spec.fine_kind(fine).similarity_model

    def selector_score(rows: np.ndarray) -> np.ndarray:
        return call(spec.SELECTOR_SCORE.name, {"pair_features": rows}, ["scores"])["scores"]

    def fine_similarity(query, query_mask, candidates, candidate_mask) -> np.ndarray:
        feeds = {"query": query, "query_mask": query_mask, "candidates": candidates,
                 "candidate_mask": candidate_mask}
        return call(similarity_model, feeds, ["similarity"])["similarity"]

    return ModelCalls(embed, selector_score, fine_similarity)
