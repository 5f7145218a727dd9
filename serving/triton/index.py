"""Triton python (BLS) model `dnsvr_index`: video id + video -> dnsvr_embed -> Milvus upsert.

Copied as `<repository>/dnsvr_index/1/model.py` by `install_pipelines`.
    video_id BYTES [1], video BYTES [1] | frames uint8 [T, 224, 224, 3], source_uri BYTES [1] (optional),
    metadata BYTES [1] (optional, a JSON object) -> frame_count int64 [1], timings BYTES [1] (JSON, ms)
Re-indexing an id replaces it (the store's generation switch: never a mix of old and new frames).  The id,
metadata and vectors are validated before anything is written.  Store location: config parameters
`store_uri`/`store_prefix`, else DNSVR_MILVUS_URI etc. (see dnsvr.serving.pipelines.store_access).
"""

from __future__ import annotations

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils
from dnsvr.serving.pipelines.search import Stopwatch, index_video
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.serving.store.schema import check_video_id
from dnsvr.serving.triton.base import (
    BadRequest,
    bytes_tensor,
    embed,
    error_response,
    parameters,
    repository_root,
    text_input,
    video_inputs,
)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.store = ServiceStore(repository_root(args), parameters(args))

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                responses.append(self._index(request))
            except Exception as error:
                responses.append(error_response("dnsvr_index", error))
        return responses

    def _index(self, request) -> pb_utils.InferenceResponse:
        began = time.perf_counter()
        video_id = check_video_id(text_input(request, "video_id", required=True))
        metadata_text = text_input(request, "metadata") or "{}"
        try:
            metadata = json.loads(metadata_text)
        except json.JSONDecodeError as error:
            raise BadRequest(f"metadata is not valid JSON: {error}") from None
        if not isinstance(metadata, dict):
            raise BadRequest("metadata must be a JSON object")
        watch = Stopwatch()
        with watch.stage("embed"):
            embedding = embed(video_inputs(request))
        with watch.stage("store"):
            index_video(self.store.get(len(embedding.coarse)), video_id, embedding,
                        text_input(request, "source_uri") or "", metadata)
        watch.stages["total"] = (time.perf_counter() - began) * 1000.0
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("frame_count", np.array([embedding.frame_count], np.int64)),
            bytes_tensor("timings", [json.dumps(watch.stages)]),
        ])

    def finalize(self) -> None:
        self.store.close()
