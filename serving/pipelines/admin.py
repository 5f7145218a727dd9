"""What `dnsvr_delete` and `dnsvr_stats` do, free of Triton.

    delete_request(inputs, stores) -> {"deleted": bool [1]} (False when the id was not indexed)
    stats_request(inputs, stores) -> {"report": BYTES [1]}, a JSON object:
        health: store URI (redacted), Milvus server version, model version, the pack's default re-rank fusion,
                the crop views each indexed video gets (`index_views`, 0: full frames alone) and whether their
                fine codes are stored too (`view_codes`), its segment views (`index_segments`), the near-duplicate
                threshold of an index call that names none, videos (a store round trip)
        stats:  the above + videos, frames, frame rows, payload bytes per video, store layout, text-video vectors,
                crop and segment views per stored video and their rows, manifest (with the text-video student's
                settings)
"""

from __future__ import annotations

import json

import numpy as np
from dnsvr.export.manifest import read_manifest
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs, bytes_array
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.serving.store.schema import check_video_id

REPORTS = ("stats", "health")


def delete_request(inputs: RequestInputs, stores: ServiceStore) -> dict[str, np.ndarray]:
    """Remove one video (row first, then its frames)."""
    video_id = check_video_id(inputs.text("video_id", required=True))
    store = stores.existing()
    deleted = store.delete(video_id) if store is not None else False
    return {"deleted": np.array([deleted])}


def stats_request(inputs: RequestInputs, stores: ServiceStore) -> dict[str, np.ndarray]:
    """The `health` or `stats` report (module docstring) as JSON."""
    what = inputs.text("request", required=True)
    if what not in REPORTS:
        raise BadRequest(f"request must be 'stats' or 'health', got {what!r}")
    report = {"store_uri": stores.settings.display_uri, "model_version": stores.model_version,
              "fine": stores.fine_kind, "default_fusion": stores.default_fusion, "text_search": stores.text is not None,
              "index_views": stores.views, "view_codes": stores.view_codes, "index_segments": stores.segments,
              "duplicate_threshold": stores.duplicate_threshold}
    store = stores.existing()
    if store is None:
        report.update(store_exists=False, videos=0, frames=0, milvus_version=stores.get(create=False).server_version)
    else:  # a real round trip to the store (server_version is cached after the first call)
        report.update(store_exists=True, milvus_version=store.server_version,
                      videos=store.count(consistency="Bounded"))
    if what == "stats" and store is not None:
        stats = store.stats()
        report.update(videos=stats.videos, frames=stats.frames, frame_rows=stats.frame_rows,
                      payload_bytes_per_video=stats.payload_bytes_per_video, disk_bytes=stats.disk_bytes,
                      layout=stats.meta.layout, coarse_dim=stats.meta.coarse_dim, text_dim=stats.meta.text_dim,
                      text_rows=stats.text_rows, views=stats.meta.views, segments=stats.meta.segments,
                      view_rows=stats.view_rows)
    if what == "stats":
        manifest = read_manifest(stores.repository)
        report["models"] = {"served": manifest.get("served", []), "source": manifest.get("source"),
                            "pack_version": manifest.get("pack_version"), "opset": manifest.get("opset"),
                            "text": manifest.get("text")}
    return {"report": bytes_array([json.dumps(report)])}
