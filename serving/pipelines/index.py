"""What `dnsvr_index` does between its model calls, free of Triton: embed one video, check the collection for
near-duplicates when asked, write it to the store unless skipped.

    index_request(inputs, stores, calls) -> {"frame_count": int64 [1], "stored": bool [1],
        "duplicate_ids": BYTES [n], "duplicate_scores": float32 [n], "timings": BYTES [1] JSON ms}
    index_video(store, video_id, embedding, source_uri, metadata) -> upsert (re-indexing an id replaces it; with a
        text-video student its vector is written with the rest, with the pack's crop grid the crop views' vectors
        and fine codes video_views made, with its frame windows the segment views' vectors, and the thumbnail
        dnsvr_embed made)

Request: video_id BYTES [1], video BYTES [1] | frames uint8 [T, 224, 224, 3], source_uri BYTES [1] (optional),
metadata BYTES [1] (optional, a JSON object), on_duplicate BYTES [1] (optional: keep | report | skip, default
keep) and duplicate_threshold float32 [1] (optional, in [0, 1]; default: the pack's, `stores.duplicate_threshold`;
`dnsvr.client.duplicates`).  The id, metadata
and duplicate policy are checked before the video is embedded, and everything again by the store before
anything is written (the store's generation switch: a re-index never shows a mix of old and new frames).
With report or skip the collection is searched first (`dnsvr.serving.pipelines.duplicates`); skip writes
nothing when a near-duplicate is found.  The check only reads, so a failure anywhere leaves the store as it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from dnsvr.serving.pipelines.duplicates import duplicate_policy, find_duplicates
from dnsvr.serving.pipelines.requests import RequestInputs, Stopwatch, bytes_array
from dnsvr.serving.pipelines.search import Embedding, ModelCalls
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.serving.store.schema import IndexedVideo, check_video_id
from dnsvr.serving.store.video_store import VideoStore


def index_video(store: VideoStore, video_id: str, embedding: Embedding, source_uri: str = "",
                metadata: dict[str, Any] | None = None) -> None:
    """Insert or replace `video_id` (validated by the store first; nothing is written on bad input)."""
    store.upsert(IndexedVideo(video_id=video_id, coarse=embedding.coarse, selector=embedding.selector,
                              fine_codes=embedding.fine, source_uri=source_uri, metadata=metadata or {},
                              text=embedding.text, thumbnail=embedding.thumbnail, views=embedding.views,
                              view_codes=embedding.view_codes, segments=embedding.segments))


def index_request(inputs: RequestInputs, stores: ServiceStore, calls: ModelCalls) -> dict[str, np.ndarray]:
    """One `dnsvr_index` request -> its outputs (module docstring)."""
    watch = Stopwatch()
    video_id = check_video_id(inputs.text("video_id", required=True))
    metadata = inputs.json_object("metadata")
    source_uri = inputs.text("source_uri") or ""
    policy = duplicate_policy(inputs, stores.duplicate_threshold)
    with watch.stage("embed"):
        embedding = calls.embed(inputs.video())
    store = stores.get(len(embedding.coarse))
    duplicates = []
    if policy.checks:
        with watch.stage("duplicate_check"):
            duplicates = find_duplicates(store, calls, embedding, video_id, policy.threshold,
                                         stores.default_fusion, stores.calibration)
    stored = policy.stores(len(duplicates))
    if stored:
        if calls.views is not None:  # only for a video that is stored: a query or a skipped copy needs none
            with watch.stage("crop_views"):
                embedding.views, embedding.view_codes = calls.views(inputs.video())
        if calls.segments is not None:
            with watch.stage("segment_views"):
                embedding.segments = calls.segments(embedding.features)
        with watch.stage("store"):
            index_video(store, video_id, embedding, source_uri, metadata)
    return {"frame_count": np.array([embedding.frame_count], np.int64),
            "stored": np.array([stored], bool),
            "duplicate_ids": bytes_array([duplicate.video_id for duplicate in duplicates]),
            "duplicate_scores": np.array([duplicate.score for duplicate in duplicates], np.float32),
            "timings": watch.report()}
