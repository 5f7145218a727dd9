"""Triton python (BLS) model `dnsvr_search`: DnS retrieval for one query video or indexed id.

Copied as `<repository>/dnsvr_search/1/model.py` by `install_pipelines`.
    video BYTES [1] | frames uint8 [T, 224, 224, 3] | video_id BYTES [1] (exactly one), top_k int32 [1],
    rerank BYTES [1] (policy, default "fraction:0.1"), candidates int32 [1] (K', default max(top_k, 100)),
    filter BYTES [1] (Milvus expression over the per-video fields)
    -> video_ids BYTES [n], scores / coarse_scores / selector_scores float32 [n], reranked bool [n],
       timings BYTES [1] (JSON, ms per stage)
dnsvr_embed (or the stored embedding of `video_id`, which is then left out of the results) -> Milvus coarse
top-K' -> selector_score -> the policy's pairs -> fine codes from Milvus -> fine_similarity in batches ->
fine score (s/2 + 0.5) where re-ranked, coarse score elsewhere.  Logic: dnsvr.serving.pipelines.search.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils
from dnsvr.client import spec
from dnsvr.serving.pipelines.search import ModelCalls, Stopwatch, embedding_of_indexed, search
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.serving.store.schema import check_video_id
from dnsvr.serving.store.video_store import StoreError, StoreUnavailable, VideoNotFound
from dnsvr.serving.triton.base import (
    BadRequest,
    bytes_tensor,
    call,
    embed,
    error_response,
    int_input,
    optional_input,
    parameters,
    repository_root,
    text_input,
)
from dnsvr.training.ranking import RerankPolicy


def _selector_score(pairs: np.ndarray) -> np.ndarray:
    return call(spec.SELECTOR_SCORE.name, {"pair_features": pairs}, ["scores"])["scores"]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = parameters(args)
        self.store = ServiceStore(repository_root(args), params)
        self.consistency = os.environ.get("DNSVR_SEARCH_CONSISTENCY") or params.get("consistency") or "Session"
        similarity_model = spec.fine_kind(self.store.fine_kind).similarity_model

        def fine_similarity(query, query_mask, candidates, candidate_mask) -> np.ndarray:
            feeds = {"query": query, "query_mask": query_mask, "candidates": candidates,
                     "candidate_mask": candidate_mask}
            return call(similarity_model, feeds, ["similarity"])["similarity"]

        self.calls = ModelCalls(_selector_score, fine_similarity)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                responses.append(self._search(request))
            except Exception as error:
                responses.append(error_response("dnsvr_search", error))
        return responses

    def _search(self, request) -> pb_utils.InferenceResponse:
        began = time.perf_counter()
        top_k = int_input(request, "top_k")
        if not 1 <= top_k <= spec.MAX_TOP_K:
            raise BadRequest(f"top_k must be in 1..{spec.MAX_TOP_K}, got {top_k}")
        candidates = int_input(request, "candidates", default=0)
        if not 0 <= candidates <= spec.MAX_CANDIDATES:
            raise BadRequest(f"candidates must be in 0..{spec.MAX_CANDIDATES} (0: default), got {candidates}")
        try:
            policy = RerankPolicy.parse(text_input(request, "rerank"))
        except ValueError as error:
            raise BadRequest(str(error)) from None
        watch = Stopwatch()
        query_id = text_input(request, "video_id")
        given = [name for name in ("video", "frames") if optional_input(request, name) is not None]
        if (query_id is None) == (not given) or len(given) > 1:
            raise BadRequest("send exactly one of 'video', 'frames' or 'video_id'")
        with watch.stage("embed"):
            if query_id is not None:
                store = self.store.existing()
                if store is None:
                    raise VideoNotFound(check_video_id(query_id))
                query = embedding_of_indexed(store, check_video_id(query_id))
            else:
                query = embed({given[0]: optional_input(request, given[0])})
                store = self.store.get(len(query.coarse))
        expression = text_input(request, "filter") or None
        try:
            ranking, stages = search(store, self.calls, query, top_k, policy, candidates or None, expression,
                                     exclude_id=query_id, consistency=self.consistency)
        except StoreUnavailable:
            raise
        except StoreError as error:
            if expression is None:
                raise
            raise BadRequest(f"filter {expression!r} was rejected by the store: {error}") from None
        watch.stages.update(stages)
        watch.stages["total"] = (time.perf_counter() - began) * 1000.0
        return pb_utils.InferenceResponse(output_tensors=[
            bytes_tensor("video_ids", list(ranking.ids)),
            pb_utils.Tensor("scores", ranking.scores.astype(np.float32)),
            pb_utils.Tensor("reranked", ranking.reranked.astype(bool)),
            pb_utils.Tensor("coarse_scores", ranking.coarse_scores.astype(np.float32)),
            pb_utils.Tensor("selector_scores", ranking.selector_scores.astype(np.float32)),
            bytes_tensor("timings", [json.dumps(watch.stages)]),
        ])

    def finalize(self) -> None:
        self.store.close()
