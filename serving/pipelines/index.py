"""What `dnsvr_index` does between its model calls, free of Triton: embed one video, write it to the store.

    index_request(inputs, stores, embed) -> {"frame_count": int64 [1], "timings": BYTES [1] JSON ms}
    index_video(store, video_id, embedding, source_uri, metadata) -> upsert (re-indexing an id replaces it; with a
        text-video student its vector is written with the rest)

Request: video_id BYTES [1], video BYTES [1] | frames uint8 [T, 224, 224, 3], source_uri BYTES [1] (optional),
metadata BYTES [1] (optional, a JSON object).  The id and metadata are checked before the video is embedded,
and everything again by the store before anything is written (the store's generation switch: a re-index
never shows a mix of old and new frames).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from dnsvr.serving.pipelines.requests import RequestInputs, Stopwatch
from dnsvr.serving.pipelines.search import Embedding
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.serving.store.schema import IndexedVideo, check_video_id
from dnsvr.serving.store.video_store import VideoStore


def index_video(store: VideoStore, video_id: str, embedding: Embedding, source_uri: str = "",
                metadata: dict[str, Any] | None = None) -> None:
    """Insert or replace `video_id` (validated by the store first; nothing is written on bad input)."""
    store.upsert(IndexedVideo(video_id=video_id, coarse=embedding.coarse, selector=embedding.selector,
                              fine_codes=embedding.fine, source_uri=source_uri, metadata=metadata or {},
                              text=embedding.text))


def index_request(inputs: RequestInputs, stores: ServiceStore,
                  embed: Callable[[dict[str, np.ndarray]], Embedding]) -> dict[str, np.ndarray]:
    """One `dnsvr_index` request -> its outputs (module docstring)."""
    watch = Stopwatch()
    video_id = check_video_id(inputs.text("video_id", required=True))
    metadata = inputs.json_object("metadata")
    source_uri = inputs.text("source_uri") or ""
    with watch.stage("embed"):
        embedding = embed(inputs.video())
    with watch.stage("store"):
        index_video(stores.get(len(embedding.coarse)), video_id, embedding, source_uri, metadata)
    return {"frame_count": np.array([embedding.frame_count], np.int64), "timings": watch.report()}
