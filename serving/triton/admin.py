"""Triton python models `dnsvr_delete` and `dnsvr_stats` (one source, the model's name picks the role).

Copied as `<repository>/dnsvr_delete/1/model.py` and `<repository>/dnsvr_stats/1/model.py`.
    dnsvr_delete: video_id BYTES [1] -> deleted bool [1] (False when the id was not indexed)
    dnsvr_stats:  request BYTES [1] ("stats" | "health") -> report BYTES [1], a JSON object:
        health: store URI (redacted), Milvus server version, model version, videos (a store round trip)
        stats:  the above + videos, frames, frame rows, payload bytes per video, store layout, manifest
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from dnsvr.serving.pipelines.store_access import ServiceStore, read_manifest
from dnsvr.serving.store.schema import check_video_id
from dnsvr.serving.triton.base import (
    BadRequest,
    bytes_tensor,
    error_response,
    parameters,
    repository_root,
    text_input,
)


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.name = args["model_name"]
        self.repository = repository_root(args)
        self.store = ServiceStore(self.repository, parameters(args))

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                handler = self._delete if self.name == "dnsvr_delete" else self._report
                responses.append(handler(request))
            except Exception as error:
                responses.append(error_response(self.name, error))
        return responses

    def _delete(self, request) -> pb_utils.InferenceResponse:
        video_id = check_video_id(text_input(request, "video_id", required=True))
        store = self.store.existing()
        deleted = store.delete(video_id) if store is not None else False
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("deleted", np.array([deleted]))])

    def _report(self, request) -> pb_utils.InferenceResponse:
        what = text_input(request, "request", required=True)
        if what not in ("stats", "health"):
            raise BadRequest(f"request must be 'stats' or 'health', got {what!r}")
        report = {"store_uri": self.store.settings.display_uri, "model_version": self.store.model_version,
                  "fine": self.store.fine_kind}
        store = self.store.existing()
        if store is None:
            report.update(store_exists=False, videos=0, frames=0)
            probe = self.store.get(create=False)
            report["milvus_version"] = probe.server_version
        else:  # a real round trip to the store (server_version is cached after the first call)
            report.update(store_exists=True, milvus_version=store.server_version,
                          videos=store.count(consistency="Bounded"))
        if what == "stats" and store is not None:
            stats = store.stats()
            report.update(videos=stats.videos, frames=stats.frames, frame_rows=stats.frame_rows,
                          payload_bytes_per_video=stats.payload_bytes_per_video, disk_bytes=stats.disk_bytes,
                          layout=stats.meta.layout, coarse_dim=stats.meta.coarse_dim)
        if what == "stats":
            manifest = read_manifest(self.repository)
            report["models"] = {"served": manifest.get("served", []), "source": manifest.get("source"),
                                "pack_version": manifest.get("pack_version"), "opset": manifest.get("opset")}
        return pb_utils.InferenceResponse(output_tensors=[bytes_tensor("report", [json.dumps(report)])])

    def finalize(self) -> None:
        self.store.close()
