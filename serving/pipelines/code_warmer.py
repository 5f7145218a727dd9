"""CodeWarmer: fills a search model's CodeCache with the store's fine codes in the background (issue 12).

A search re-ranks its candidates with their fine codes; those the instance's `CodeCache` holds cost nothing,
the others are read from the store while the first ones are scored (on 2 cores the read takes the CPU the fine
student needs: at 10k videos a search took 71 ms at 5 % re-ranked and 164 at 20 % without the warmer, 50 and
139 with it, `benchmarks/results/revision_ab_code_warmer_5.md`, `_20.md`).  The
warmer reads every stored video's full-frame codes (view 0) into the room the searches have not used, while
this instance answers no request, and scans again when, `period_s` seconds later, the store's count of videos
has changed, until the cache is full (a re-indexed video's new codes wait for a search to read them).  A
collection whose codes fit the budget (60-frame videos: ~34.6 KB each, so 10k videos in 330 MiB) is then
searched without code reads; a larger one keeps the first videos the scan meets (the searches' own reads
replace them, least recently used first).

Entries are keyed by (video_id, generation, 0), as the search looks them up, so a re-indexed video's new codes
are a new key and its old ones are never served (`CodeCache`); `offer` never drops an entry to make room.

    warmer = CodeWarmer(stores.existing, cache, period_s=60.0)   # a daemon thread; stores.existing: store or None
    with warmer.busy():                                          # around each request: the warmer waits
        ...
    warmer.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice

from dnsvr.serving.pipelines.code_cache import CodeCache, parameter_amount
from dnsvr.serving.store.video_store import StoreError, VideoStore

WARM_BATCH_VIDEOS = 64  # videos read a query: ~2.2 MB of 60-frame codes, ~28 ms at 10k (scratch timing)
IDLE_S = 0.05  # a batch starts only after the instance answered no request for this long


def warm_period(text: str | None) -> float:
    """The `code_cache_warm_s` model parameter -> seconds between the warmer's scans (0: no warmer); empty or
    absent: 0.  Raises ValueError naming the parameter."""
    return parameter_amount(text, "code_cache_warm_s must be a number of seconds >= 0 (0: no warming)")


@dataclass
class WarmReport:
    """One scan: videos listed, videos whose codes it added, and whether it stopped on a full cache."""

    videos: int = 0
    added: int = 0
    full: bool = False


class CodeWarmer:
    """A daemon thread keeping `cache` filled from the store `open_store()` returns (None: nothing stored yet).

    `busy()` marks a request in progress: batches wait until none has run for `idle_s`.  `warm_once` is the
    scan itself (the thread calls it every `period_s` seconds while the store's video count differs from the
    last whole scan's, until a scan finds the cache full); a store error ends the scan, and the next one tries
    again.
    """

    def __init__(self, open_store: Callable[[], VideoStore | None], cache: CodeCache, period_s: float,
                 batch: int = WARM_BATCH_VIDEOS, idle_s: float = IDLE_S, start: bool = True) -> None:
        if period_s <= 0:
            raise ValueError(f"a warmer's period must be > 0 seconds, got {period_s!r}")
        self.open_store = open_store
        self.cache = cache
        self.period_s = period_s
        self.batch = batch
        self.idle_s = idle_s
        self.last_report: WarmReport | None = None
        self.last_error: Exception | None = None  # what ended the last scan early, if anything
        self._requests = 0
        self._last_request = 0.0
        self._state = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="code-cache-warmer", daemon=True)
        if start:
            self._thread.start()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """While a request is answered: the warmer starts no batch."""
        with self._state:
            self._requests += 1
        try:
            yield
        finally:
            with self._state:
                self._requests -= 1
                self._last_request = time.monotonic()
                self._state.notify_all()

    def _wait_idle(self) -> bool:
        """Block until no request has run for `idle_s` -> False if the warmer was closed meanwhile."""
        with self._state:
            while not self._stop.is_set():
                quiet = time.monotonic() - self._last_request
                if self._requests == 0 and quiet >= self.idle_s:
                    return True
                self._state.wait(self.idle_s if self._requests else self.idle_s - quiet)
        return False

    def warm_once(self, store: VideoStore) -> WarmReport:
        """One scan of the store's videos: the codes of those not held are read, `batch` videos a query, and
        offered to the cache until one does not fit -> what it did."""
        report = WarmReport()
        rows = store.code_rows()
        while True:
            if not self._wait_idle():
                return report
            page = list(islice(rows, self.batch))
            if not page:
                return report
            report.videos += len(page)
            wanted = {(video_id, generation, 0): frame_count for video_id, generation, frame_count in page}
            missing = self.cache.missing(wanted)
            if not missing:
                continue
            codes = store.read_codes({key[0]: (key[1], wanted[key]) for key in missing})
            for key in missing:
                if key[0] not in codes:  # re-indexed or deleted since the page was read: the next scan sees it
                    continue
                if not self.cache.offer(key, codes[key[0]]):
                    report.full = True
                    return report
                report.added += 1

    def _run(self) -> None:
        scanned = None  # the store's video count when the last whole scan began
        while not self._stop.is_set():
            try:
                store = self.open_store()
                count = store.count() if store is not None else None
                if count is not None and count != scanned:
                    self.last_report, self.last_error = self.warm_once(store), None
                    if self.last_report.full:
                        return
                    scanned = count if not self._stop.is_set() else None
            except StoreError as error:  # unavailable now, or changed under the scan: the next scan tries again
                self.last_error = error
            self._stop.wait(self.period_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (between batches) and wait for it up to `timeout_s`."""
        self._stop.set()
        with self._state:
            self._state.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
