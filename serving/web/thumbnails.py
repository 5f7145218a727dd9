"""Frames of uploaded queries, kept in memory (as JPEG) for a bounded number of recent queries.

The query's filmstrip: the page decodes a few frames of each upload itself (the hits' thumbnails come from the
service, which stored one per video when it indexed it).  Keys are random tokens made here; a request names a
key and a frame number, never a path.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict

import numpy as np
from dnsvr.serving.pipelines.thumbnails import jpeg_bytes

DEFAULT_MAX_QUERIES = 32


class ThumbnailStore:
    """The JPEG frames of the `max_queries` most recent queries; older ones are dropped (thread-safe)."""

    def __init__(self, max_queries: int = DEFAULT_MAX_QUERIES) -> None:
        self.max_queries = max_queries
        self._queries: OrderedDict[str, list[bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, frames: list[np.ndarray]) -> str:
        """Keep `frames` as JPEGs; returns the new key."""
        encoded = [jpeg_bytes(frame) for frame in frames]
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._queries[key] = encoded
            while len(self._queries) > self.max_queries:
                self._queries.popitem(last=False)
        return key

    def get(self, key: str, index: int) -> bytes | None:
        """Frame `index` of query `key`, or None when either is unknown (or dropped)."""
        with self._lock:
            frames = self._queries.get(key)
            if frames is None or not 0 <= index < len(frames):
                return None
            return frames[index]

    def __len__(self) -> int:
        with self._lock:
            return len(self._queries)
