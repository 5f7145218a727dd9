"""CodeCache: the fine codes of recently re-ranked videos, kept in the search model's process (issue 12).

Keyed by (video_id, generation, view) (view 0: the full frame's codes; i: crop view i's, `CoarseHits.code_views`).
Every index run of a video writes its frames under a fresh generation and
the frames of one (video_id, generation) are never changed afterwards, so an entry can never be stale: a
re-indexed video's coarse hit carries its new generation and misses the old entry, and a deleted video is
never a coarse hit, so its entries are never looked up (both just age out).  LRU, bounded by the bytes of the
arrays it holds; thread-safe.  `offer` keeps codes only where they fit without dropping anything: how the
background warmer (`dnsvr.serving.pipelines.code_warmer`) fills the room the searches have not used.

    cache = CodeCache(budget_bytes(parameters.get("code_cache_mb")))
    found = cache.lookup([(video_id, generation, view), ...])   # {key: [T, 9, 64] uint8 / [T, 9, 512] float32}
    cache.put((video_id, generation, view), codes)
    kept = cache.offer((video_id, generation, view), codes)    # False: no room left (nothing dropped)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

CodeKey = tuple[str, int, int]  # (video_id, generation, view)


def parameter_amount(text: str | None, rule: str) -> float:
    """A model parameter holding a finite number >= 0 -> that number; empty or absent (a config written before
    the parameter existed): 0.  Raises ValueError with `rule` ("<parameter> must be ...") and the value."""
    value = (text or "").strip()
    try:
        amount = float(value) if value else 0.0
    except ValueError:
        raise ValueError(f"{rule}, got {text!r}") from None
    if not amount >= 0 or amount == float("inf"):
        raise ValueError(f"{rule}, got {text!r}")
    return amount


def budget_bytes(megabytes: str | None) -> int:
    """The `code_cache_mb` model parameter (MiB ≥ 0, fractions allowed) -> bytes; empty or absent: 0, no cache.
    Raises ValueError naming the parameter otherwise."""
    return int(parameter_amount(megabytes, "code_cache_mb must be a number of MiB >= 0 (0: no cache)") * (1 << 20))


def _read_only_copy(codes: np.ndarray) -> np.ndarray:
    """What the cache keeps of `codes`: a copy the caller cannot change and nobody can write to."""
    stored = np.array(codes, copy=True)
    stored.setflags(write=False)
    return stored


class CodeCache:
    """Least-recently-used fine codes, at most `budget` bytes of arrays (sum of `nbytes`) in all.

    Entries are read-only copies, never changed; an array larger than the whole budget is not kept, and a
    budget of 0 keeps nothing.
    """

    def __init__(self, budget: int) -> None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
            raise ValueError(f"a code cache budget is a number of bytes >= 0, got {budget!r}")
        self.budget = budget
        self._entries: OrderedDict[CodeKey, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def lookup(self, keys: Iterable[CodeKey]) -> dict[CodeKey, np.ndarray]:
        """{key: read-only codes [T, 9, W]} of the `keys` held; each one found becomes the most recently used."""
        found: dict[CodeKey, np.ndarray] = {}
        with self._lock:
            for key in keys:
                codes = self._entries.get(key)
                if codes is not None:
                    self._entries.move_to_end(key)
                    found[key] = codes
        return found

    @property
    def held_bytes(self) -> int:
        """Bytes of the arrays held now (at most `budget`)."""
        return self._bytes

    def missing(self, keys: Iterable[CodeKey]) -> list[CodeKey]:
        """The `keys` not held, in their order; unlike `lookup`, no entry becomes more recently used."""
        with self._lock:
            return [key for key in keys if key not in self._entries]

    def offer(self, key: CodeKey, codes: np.ndarray) -> bool:
        """Keep a read-only copy of `codes` under `key` (the least recently used entry, so that what searches
        read outlives it) if it fits in the budget beside what is held -> whether the cache holds `key` now.
        Nothing is dropped to make room, and nothing is copied where it does not fit."""
        with self._lock:
            if key in self._entries:
                return True
            if self._bytes + codes.nbytes > self.budget:
                return False
            self._entries[key] = _read_only_copy(codes)
            self._entries.move_to_end(key, last=False)
            self._bytes += codes.nbytes
        return True

    def put(self, key: CodeKey, codes: np.ndarray) -> None:
        """Keep a read-only copy of `codes` [T, 9, W] under `key` (the most recently used), dropping the least
        recently used entries until the budget holds; an array over the whole budget is not kept."""
        if codes.nbytes > self.budget:
            return
        stored = _read_only_copy(codes)
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous.nbytes
            self._entries[key] = stored
            self._bytes += stored.nbytes
            while self._bytes > self.budget:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
