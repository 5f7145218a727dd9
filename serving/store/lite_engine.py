"""Milvus Lite 3.2.2's engine with its table of open collections guarded by a lock.

`milvus_lite.db.MilvusLite.get_collection` looks a collection up in its table and, when it is absent, builds a
`Collection` over the directory and stores it, with no lock.  Two requests that reach a freshly started server
at once (a client reconnecting after a restart, and any `list_collections`, which opens every collection) may
each build one over the same directory.  The table keeps one; a write the other one acknowledged is invisible to
every later request, until the next restart replays it from the write-ahead log.  Seen as: a video upserted just
after a restart acknowledged, its row missing, so the upsert's own clean-up deleted its new frames (1 run in
10-40 of `tests/test_store_video_store.py::test_a_refused_connection_is_tried_again_for_reconnect_s`, where the
launcher's readiness probe was the second request).

`guard_collection_table()` wraps every `MilvusLite` method that reads or changes that table in one re-entrant
lock per engine.  The store calls it before it opens an embedded `.db` (served by threads of its own process);
`python -m dnsvr.serving.store.lite_engine server ...` is `milvus-lite server ...` with the guard, the command
`MilvusLiteServer` runs.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

# The MilvusLite methods that read or change its table of open collections (`_collections`).
TABLE_METHODS = ("get_collection", "create_collection", "drop_collection", "rename_collection",
                 "restore_snapshot", "truncate_collection", "drop_database", "alter_database_properties", "close")
_GUARD_LOCK = threading.Lock()  # creates each engine's own lock once


def _engine_lock(engine: Any) -> threading.RLock:
    lock = engine.__dict__.get("_dnsvr_table_lock")
    if lock is None:
        with _GUARD_LOCK:
            lock = engine.__dict__.setdefault("_dnsvr_table_lock", threading.RLock())
    return lock


def _guarded(method: Callable) -> Callable:
    @functools.wraps(method)
    def under_lock(engine: Any, *args: Any, **kwargs: Any) -> Any:
        with _engine_lock(engine):
            return method(engine, *args, **kwargs)

    under_lock.dnsvr_guarded = True
    return under_lock


def guard_collection_table() -> None:
    """Put `TABLE_METHODS` of `milvus_lite.db.MilvusLite` under one lock per engine (idempotent)."""
    from milvus_lite.db import MilvusLite

    with _GUARD_LOCK:
        for name in TABLE_METHODS:
            method = getattr(MilvusLite, name, None)
            if method is not None and not getattr(method, "dnsvr_guarded", False):
                setattr(MilvusLite, name, _guarded(method))


def main(argv: list[str] | None = None) -> int:
    """`milvus-lite` (its own command line, e.g. `server --data-dir D --host H --port P`) with the guard."""
    guard_collection_table()
    from milvus_lite.cmdline import main as milvus_lite_main

    return milvus_lite_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
