"""VideoStore: coarse vectors, selector scores and fine-grained codes of indexed videos in Milvus.

One interface over embedded Milvus Lite (a `.db` path, or a `milvus-lite server` URI) and real Milvus servers
(http(s)://host:port + token); the layout of the frame collection is hidden (see store_schema).

Write protocol (crash-safe: at worst orphan frames, which `check(repair=True)` removes):
    upsert: frames (and the text-video vector, in a store made for text search, and the crop and segment views,
            in one made for them) of a new generation -> per-video row pointing at that generation (the switch)
            -> delete the video's frames, text vectors and views of any other generation.  Readers only follow a row's
            generation, so a re-index, shorter or longer, never shows a mix of old and new frames, and text or
            coarse search never returns a replaced vector.
    delete: per-video row first, then its frames, text vector and crop views.
A video's JPEG thumbnail (stores of schema 2 on) lives in its row: it switches and goes with it.
Text search (`search_text`): the text collection's inner-product top-k, each hit kept only if the video's row
points at its generation (and passes the caller's filter over the per-video fields).  Coarse search in a store
made for crop or segment views reads the view collection the same way: a video scores by its best view.
Consistency: ranking reads (`search_coarse`, `read_codes`, `fetch_codes`) default to Session: as cheap as Bounded (~5 ms
vs ~200 ms for Strong on Milvus 2.3.5) and they see this client's own writes; a row seen implies its frames
are seen (frames are written first).  Another process's writes become visible within the Bounded window; pass
`consistency="Strong"` where that matters.  Bookkeeping reads (upsert, delete, get, count, check) use Strong.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import heapq
import json
import operator
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from dnsvr.client.ids import id_problem
from dnsvr.serving.store.expressions import (
    at_most,
    both,
    checked_filter,
    either,
    equals,
    greater,
    integer_literal,
    is_in,
    is_not_in,
    less,
)
from dnsvr.serving.store.lite_engine import guard_collection_table
from dnsvr.serving.store.schema import (
    MAX_QUERY_ROWS,
    META_KEY,
    VIEW_FRAME_STRIDE,
    IndexedVideo,
    InvalidVideo,
    StoreMeta,
    check_unit_vector,
    check_video,
    check_video_id,
    decode_row,
    frame_rows,
    frame_schema,
    generation_time,
    make_meta,
    meta_row,
    meta_schema,
    new_generations,
    text_schema,
    video_schema,
    view_rows,
    views_schema,
)
from dnsvr.serving.store.search_columns import SearchColumns, search_columns
from dnsvr.serving.store.settings import StoreSettings, is_lite_file
from dnsvr.training.paths import private_temp_dir

T = TypeVar("T")
INSERT_BYTE_BUDGET = 8 << 20
ROW_KEY_FIELDS = ("video_id", "generation", "frame_start", "view")  # one row of a generation-protocol collection
KEY_QUERY_VALUES = 4_096  # frame_start values per query of `_not_stored`
DELETE_BATCH = 1_000
SCOPE_IDS = 4_096  # a filter that at most this many videos pass restricts a best-row search to them by id
COARSE_FIELDS = ("video_id", "selector", "generation", "frame_count")  # what a coarse hit carries to ranking
LOWEST_SCORE = -2.0  # under any inner product of unit vectors: a range search's floor that leaves out no row
CAPPED_READS = 8  # reads of a best-row search (`_best_per_video`, `_best_view_per_video`), growth included
# scalar indexes of the frame and text collections on a server: field -> index type (`_add_scalar_indexes`)
SCALAR_INDEXES = (("video_id", "Trie"), ("generation", "STL_SORT"))
ORPHAN_DELETE_BATCH = 200
CREATION_WAIT_S = 30.0
_LITE_TURN = threading.local()  # whether this thread holds its store's turn (`VideoStore._lite_turn`)
RECONNECT_EVERY_S = 0.25  # between refused connections, within `StoreSettings.reconnect_s`
REFUSED_MARKERS = ("fail connecting", "connection refused", "failed to connect to all addresses")
VIDEO_FIELDS = ["video_id", "coarse", "selector", "frame_count", "generation", "model_version", "source_uri",
                "indexed_at", "metadata"]
ANSWERLESS_CODES = (1, 2)  # pymilvus: unexpected error, connect failed (statuses the server answered have others)
UNAVAILABLE_MARKERS = ("unavailable", "fail connecting", "deadline", "timeout", "timed out", "connection",
                       "socket closed", "not ready")


class StoreError(RuntimeError):
    """A store operation failed; the message names the operation and the (redacted) URI."""


class StoreUnavailable(StoreError):
    """The Milvus server is down, unreachable or timed out. The next call reconnects."""

    tag = "unavailable"  # how a served pipeline reports it (dnsvr.client.errors)


class StoreMismatch(StoreError):
    """The collections were built for another model-pack version, dimension, representation or layout."""


class NoTextVectors(StoreError):
    """Text search on a store made without text-video vectors (a model pack without a text-video student)."""

    tag = "no_text_search"  # how a served pipeline reports it (dnsvr.client.errors)


class VideoNotFound(KeyError):
    """No video with this id in the store (args[0]: the id)."""

    tag = "not_found"  # how a served pipeline reports it (dnsvr.client.errors)

    def __str__(self) -> str:
        return f"video {self.args[0]!r} is not indexed"


@dataclass
class CoarseHits:
    """Top-k of a coarse search, best first: ids [k], inner-product scores [k] float32, the candidates'
    selector scalars [k] float32 (what the selector network needs besides the query's own), the
    generations [k] int64 and frame counts [k] int64 their rows point at, and code_views [k] int64: the view
    whose fine codes to compare (what `read_codes` needs).  code_views is each hit's best view (0: its full
    frame, i: crop view i) where the store keeps the crop views' codes (`StoreMeta.has_view_codes`), else 0."""

    ids: list[str]
    scores: np.ndarray
    selectors: np.ndarray
    generations: np.ndarray
    frame_counts: np.ndarray
    code_views: np.ndarray


@dataclass
class RankingRow:
    """An indexed video's row as search by id reads it: coarse [C] float32, selector scalar, the generation its
    frames are written under and their count."""

    coarse: np.ndarray
    selector: float
    generation: int
    frame_count: int


@dataclass
class TextHits:
    """Top-k of a text search, best first: ids [k] and inner-product (cosine) scores [k] float32."""

    ids: list[str]
    scores: np.ndarray


@dataclass
class FetchedCodes:
    """Fine codes of K videos, in request order, zero-padded to the longest.

    codes: [K, Tmax, 9, 64] uint8 or [K, Tmax, 9, 512] float32; frame_counts: [K] int64 (0 for a missing id);
    missing: requested ids not in the store.
    """

    codes: np.ndarray
    frame_counts: np.ndarray
    missing: list[str]


@dataclass
class StoreStats:
    """Sizes of the store; payload = coarse + selector + fine codes + text-video vector + crop views' vectors and
    codes (what the networks produced); `frames` counts each video's frames once, `frame_rows` every view's."""

    videos: int
    frames: int
    frame_rows: int
    payload_bytes_per_video: float
    disk_bytes: int | None
    meta: StoreMeta
    text_rows: int = 0
    view_rows: int = 0

    @property
    def disk_bytes_per_video(self) -> float | None:
        return self.disk_bytes / self.videos if self.disk_bytes is not None and self.videos else None


@dataclass
class CheckReport:
    """Orphan frame, text-vector and crop-view rows (no per-video row points at their generation), videos with
    incomplete frames, no text-video vector (in a store made for text search) or not all their crop views (in a
    store made for them), and videos whose id breaks the id rule (written before it existed: they cannot be
    reached through the API)."""

    videos: int
    frame_rows: int
    orphan_rows: int
    orphan_video_ids: list[str]
    incomplete_video_ids: list[str]
    skipped_recent_rows: int
    invalid_video_ids: list[str] = field(default_factory=list)
    repaired: bool = False
    orphan_text_rows: int = 0
    orphan_view_rows: int = 0

    @property
    def clean(self) -> bool:
        return (not self.orphan_rows and not self.orphan_text_rows and not self.orphan_view_rows
                and not self.incomplete_video_ids and not self.invalid_video_ids)


def settle_scipy_check() -> None:
    """Have pymilvus look for scipy.sparse now, in this thread.

    pymilvus does it on first use, as it prepares data for a request (`SciPyHelper`). It executes scipy.sparse's
    `__init__` again in a module object of its own, outside the import system's bookkeeping, and two threads of
    one process doing that at once can meet scipy's submodules half imported. A served search failed that way
    once ("partially initialized module 'scipy.sparse._lil'", `serving_bench.py` at 10k, stop 41; which two
    threads met was not found). Run here, as a store first connects and under its connection lock, the check is
    done before any thread reads or writes through the store.
    """
    from pymilvus.client.utils import SciPyHelper

    SciPyHelper.is_scipy_sparse(None)


class VideoStore:
    """Per-video rows + per-frame codes (+ text-video vectors) in Milvus collections, created on first use.

    model_version / coarse_dim / representation / text_dim / views / view_codes / segments: what this caller writes
    and expects (text_dim 0: no text-video vectors; views 0: no crop views; view_codes: each crop view's fine codes
    kept too; segments 0: no segment views); None adopts whatever the existing collections hold (admin tools).  A
    mismatch with existing collections raises StoreMismatch.
    """

    def __init__(
        self,
        settings: StoreSettings | str | None = None,
        *,
        model_version: str | None = None,
        coarse_dim: int | None = None,
        representation: str | None = None,
        text_dim: int | None = None,
        views: int | None = None,
        view_codes: bool | None = None,
        segments: int | None = None,
        create: bool = True,
    ):
        if settings is None or isinstance(settings, str):
            settings = StoreSettings.resolve(uri=settings)
        self.settings = settings
        self.video_collection = f"{settings.prefix}_videos"
        self.frame_collection = f"{settings.prefix}_frames"
        self.meta_collection = f"{settings.prefix}_meta"
        self.text_collection = f"{settings.prefix}_text"
        self.view_collection = f"{settings.prefix}_views"
        self._wanted = (model_version, coarse_dim, representation, text_dim, views, view_codes, segments)
        self._create = create
        self._client: Any = None
        self._connecting = threading.Lock()
        self._meta: StoreMeta | None = None
        self._server_version: str | None = None

    # ---- connection ------------------------------------------------------------------------------

    def _connect(self) -> Any:
        with self._connecting:  # deletes run on two threads: one client, however they race
            if self._client is None:
                from pymilvus import MilvusClient

                if self.settings.embedded:  # served by threads of this process: guard its engine first
                    guard_collection_table()

                self._client = MilvusClient(**self.settings.client_kwargs())
                settle_scipy_check()
            return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a client whose server is gone must not raise
                pass
            self._client = None

    def __enter__(self) -> VideoStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _call(self, operation: str, action: Callable[[Any], T]) -> T:
        """Run `action(client)`, translating pymilvus/gRPC failures into StoreUnavailable / StoreError.

        A collection found released (the server restarted since it was loaded) is loaded again, once.  A
        connection found broken is replaced by a new client and the action run once more; while that new
        connection is refused (a supervised server restarting: nothing of the action was sent), it is tried
        again every RECONNECT_EVERY_S for up to `settings.reconnect_s`; then StoreUnavailable.
        """
        with self._lite_turn():
            return self._call_in_turn(operation, action)

    def _call_in_turn(self, operation: str, action: Callable[[Any], T]) -> T:
        """`_call`'s body, within the turn `_lite_turn` gives."""
        reloaded = reconnected = False
        retry_until = 0.0
        while True:
            try:
                return action(self._connect())
            except (StoreError, InvalidVideo, VideoNotFound):
                raise
            except Exception as error:
                text = str(error).lower()
                if self._meta is not None and not reloaded and ("released" in text or "not loaded" in text):
                    self._load_collections(self._meta)
                    reloaded = True
                    continue
                message = str(error)
                if self.settings.token:
                    message = message.replace(self.settings.token, "***")
                where = self.settings.display_uri
                if not _is_unavailable(error):
                    raise StoreError(f"{operation} failed on Milvus at {where}: {message}") from error
                self.close()
                if not reconnected:
                    reconnected, retry_until = True, time.monotonic() + self.settings.reconnect_s
                    continue
                if _refused(error) and time.monotonic() + RECONNECT_EVERY_S <= retry_until:
                    time.sleep(RECONNECT_EVERY_S)
                    continue
                raise StoreUnavailable(f"Milvus at {where} unavailable ({operation}): {message}") from None

    def _collections(self, meta: StoreMeta) -> list[str]:
        """The data collections of a store like `meta` (meta collection first, the per-video one last)."""
        return [self.meta_collection, *self._generation_collections(meta), self.video_collection]

    def _generation_collections(self, meta: StoreMeta) -> list[str]:
        """The collections whose rows follow the generation protocol: frames, then text vectors and views (crop
        and segment views) where the store holds them."""
        return [self.frame_collection, *([self.text_collection] if meta.text_dim else []),
                *([self.view_collection] if meta.view_vectors else [])]

    def _load_collections(self, meta: StoreMeta) -> None:
        for name in self._collections(meta):
            self._load(name)

    def _has(self, name: str) -> bool:
        return self._call("has_collection", lambda c: c.has_collection(name))

    def _load(self, name: str) -> None:
        """Load a collection; one that another machine's creator has made but not indexed yet is waited for."""
        deadline = time.monotonic() + CREATION_WAIT_S
        while True:
            try:
                return self._call("load_collection", lambda c: c.load_collection(name))
            except StoreError as error:
                if "index not found" not in str(error) or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    @property
    def server_version(self) -> str:
        if self._server_version is None:
            self._server_version = self._call("get_server_version", lambda c: str(c.get_server_version()))
        return self._server_version

    @property
    def supports_binary_vectors(self) -> bool:
        """Milvus Lite 3.x has no binary vectors; real Milvus servers do."""
        return not _is_lite(self.server_version)

    # ---- collections -----------------------------------------------------------------------------

    @property
    def meta(self) -> StoreMeta:
        """The collections' metadata; opens or creates them on first use."""
        if self._meta is None:
            self._meta = self._open_collections()
        return self._meta

    def _open_collections(self) -> StoreMeta:
        with self._creation_lock():
            return self._open_or_create()

    @contextlib.contextmanager
    def _machine_lock(self, purpose: str) -> Iterator[None]:
        """An exclusive lock on this store (URI and prefix) for `purpose` among the processes and threads of this
        machine: an flock on a file (each `open` its own lock holder), `lock_path_for`'s."""
        path = lock_path_for(self.settings.uri, self.settings.prefix, purpose)
        path.parent.mkdir(parents=True, exist_ok=True)  # a new Lite file's folder, made before Lite makes the file
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _creation_lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialise opening (and so creating) this store among the processes of this machine.

        Triton starts several python model instances, each its own process, and parallel indexers may meet a
        store that does not exist yet; Milvus Lite fails ("already exists", "File exists") when two of them
        create a collection at once.  Creators on other machines are covered by `_create_collection` instead.
        """
        return self._machine_lock("create")

    @contextlib.contextmanager
    def _lite_turn(self) -> Iterator[None]:
        """On Milvus Lite (and before the server is known), one call to this store at a time on this machine;
        re-entrant on a thread.  Milvus Lite 3.2.2 does not order concurrent calls on a collection (its own notes
        say so): four writers at once, each its own client as Triton's model instances are, lost every frame row
        of 2-5 of 101 videos; serialising only the writes still lost some; every call serialised, none
        (`benchmarks/lite_concurrency.py`).  A Milvus server orders concurrent calls itself."""
        served = self._server_version is not None and not _is_lite(self._server_version)
        if served or getattr(_LITE_TURN, "held", False):
            yield
            return
        with self._machine_lock("lite-call"):
            _LITE_TURN.held = True
            try:
                yield
            finally:
                _LITE_TURN.held = False

    def _open_or_create(self) -> StoreMeta:
        meta = self._read_meta()
        if meta is None:
            if not self._create:
                raise StoreError(f"no video store {self.settings.prefix!r} at {self.settings.display_uri}")
            if self._has(self.video_collection):
                meta = self._read_meta()  # another process may have created the whole store meanwhile
                if meta is None:
                    raise StoreMismatch(f"{self.video_collection!r} at {self.settings.display_uri} exists, "
                                        f"{self.meta_collection!r} does not: not a dnsvr store")
            else:
                self._write_meta(self._new_meta())
                meta = self._read_meta()  # a concurrent creator may have written last: check what won
                if meta is None:
                    raise StoreError(f"the metadata written to {self.meta_collection!r} at "
                                     f"{self.settings.display_uri} cannot be read back")
        self._check_wanted(meta)
        self._create_collections(meta)
        self._load_collections(meta)
        return meta

    def _read_meta(self) -> StoreMeta | None:
        """The StoreMeta row of `{prefix}_meta`, or None when there is no store yet."""
        if not self._has(self.meta_collection):
            return None
        self._load(self.meta_collection)
        rows = self._call("get meta", lambda c: c.query(self.meta_collection, filter=equals("key", META_KEY),
                                                          output_fields=["value"], consistency_level="Strong"))
        if not rows:
            return None
        meta = StoreMeta.from_json(rows[0]["value"])
        if meta is None:
            raise StoreMismatch(f"{self.meta_collection!r} at {self.settings.display_uri} holds no dnsvr "
                                f"store metadata: {rows[0]['value'][:200]!r}")
        return meta

    def _write_meta(self, meta: StoreMeta) -> None:
        from pymilvus import MilvusClient

        self._create_collection(self.meta_collection, meta_schema(MilvusClient), ("placeholder", "FLAT", "L2", {}),
                                "Strong")
        self._load(self.meta_collection)
        self._call("write meta", lambda c: c.upsert(self.meta_collection, [meta_row(meta)]))

    def _check_wanted(self, meta: StoreMeta) -> None:
        model_version, coarse_dim, representation, text_dim, views, view_codes, segments = self._wanted
        problems = []
        if model_version is not None and model_version != meta.model_version:
            problems.append(f"model-pack version {meta.model_version!r} (this caller: {model_version!r})")
        if coarse_dim is not None and coarse_dim != meta.coarse_dim:
            problems.append(f"coarse dimension {meta.coarse_dim} (this caller: {coarse_dim})")
        if representation is not None and representation != meta.representation:
            problems.append(f"representation {meta.representation!r} (this caller: {representation!r})")
        if text_dim is not None and text_dim != meta.text_dim:
            problems.append(f"text-video vectors of dimension {meta.text_dim} (0: none; this caller: {text_dim})")
        if views is not None and views != meta.views:
            problems.append(f"{meta.views} crop views per video (0: full frames alone; this caller: {views})")
        if view_codes is not None and meta.views and bool(view_codes) != meta.view_codes:
            problems.append(f"the crop views' fine codes {'kept' if meta.view_codes else 'not kept'} (this caller: "
                            f"{'kept' if view_codes else 'not kept'}; `dnsvr export --view-codes`)")
        if segments is not None and segments != meta.segments:
            problems.append(f"{meta.segments} segment views per video (0: none; this caller: {segments})")
        layout = self.settings.layout
        if layout != "auto" and layout != meta.layout:
            problems.append(f"layout {meta.layout!r} (settings: {layout!r})")
        if problems:
            raise StoreMismatch(
                f"store {self.video_collection!r} at {self.settings.display_uri} was built with "
                + "; ".join(problems) + ". Use another --prefix or re-index into a new store; vectors of "
                "different models must not be mixed."
            )

    def _new_meta(self) -> StoreMeta:
        model_version, coarse_dim, representation, text_dim, views, view_codes, segments = self._wanted
        if model_version is None or coarse_dim is None or representation is None:
            raise StoreError(
                f"no video store {self.settings.prefix!r} at {self.settings.display_uri} yet: creating one "
                "needs model_version, coarse_dim and representation"
            )
        layout = self.settings.layout
        if layout == "auto":  # chunk on this machine (Lite, a Unix socket), vector on a server over the network
            local = not self.supports_binary_vectors or self.settings.uri.lower().startswith("unix:")
            layout = "chunk" if local else "vector"
        elif layout == "vector" and representation == "binary" and not self.supports_binary_vectors:
            raise StoreError(f"{self.server_version} has no binary vectors: use layout 'chunk' or 'auto'")
        return make_meta(model_version, coarse_dim, representation, layout, text_dim or 0, views or 0,
                         bool(views and view_codes), segments or 0)

    def _create_collections(self, meta: StoreMeta) -> None:
        """Create the frame (and text, view), then the video collection, where missing (after a crash during
        creation too)."""
        from pymilvus import MilvusClient

        wanted = [(self.frame_collection, frame_schema(MilvusClient, meta), self._frame_index(meta))]
        if meta.text_dim:
            wanted.append((self.text_collection, text_schema(MilvusClient, meta), ("vector", *self._coarse_index())))
        if meta.view_vectors:
            wanted.append((self.view_collection, views_schema(MilvusClient, meta), ("vector", *self._coarse_index())))
        for name, schema, index in wanted:  # rows read and deleted by (video_id, generation)
            self._create_collection(name, schema, index, "Bounded", scalar=True)
            self._add_scalar_indexes(name)
        self._create_collection(self.video_collection, video_schema(MilvusClient, meta),
                                ("coarse", *self._coarse_index()), "Bounded")

    def _create_collection(self, name: str, schema: Any, index: tuple[str, str, str, dict], consistency: str,
                           scalar: bool = False) -> None:
        """Create a collection where missing, with its vector `index` (and the SCALAR_INDEXES with `scalar`).
        Several processes may open a new store at once (Triton model instances, parallel indexers): the one that
        loses the race finds the collection there and uses it."""
        if self._has(name):
            return
        try:
            self._call("create_collection", lambda c: c.create_collection(
                name, schema=schema, index_params=self._index_params(*index, scalar=scalar),
                consistency_level=consistency))
        except StoreError as error:
            if "already exist" not in str(error) or not self._has(name):
                raise

    def _index_params(self, field_name: str, index_type: str, metric: str, params: dict,
                      scalar: bool = False) -> Any:
        index = self._call("prepare_index_params", lambda c: c.prepare_index_params())
        index.add_index(field_name, index_type=index_type, metric_type=metric, params=params)
        for scalar_field, kind in SCALAR_INDEXES if scalar and self.supports_binary_vectors else ():
            index.add_index(scalar_field, index_type=kind, index_name=scalar_field)
        return index

    def _add_scalar_indexes(self, name: str) -> None:
        """Index `video_id` (Trie) and `generation` (sorted) of a collection read and deleted by those fields, on
        a Milvus server (Milvus Lite has none of these index types), where missing (new collections get them
        with their vector index).

        Without them a server evaluates `video_id in [...] and generation in [...]` on every row: at 100k chunk
        rows, reading 50 videos' codes took 11 ms instead of 8 (`benchmarks/scalar_index_bench.py`).  A store
        made before them gets them at an open that finds the collection released: the 2.3 server refuses to
        load a loaded collection again once its indexes changed, which every other opener does, so a loaded
        one is left as it is (its reads are only slower)."""
        if not self.supports_binary_vectors:
            return
        present = set(self._call("list_indexes", lambda c: c.list_indexes(name)))
        missing = [(field_name, kind) for field_name, kind in SCALAR_INDEXES if field_name not in present]
        state = self._call("get_load_state", lambda c: c.get_load_state(name))["state"] if missing else None
        if not missing or getattr(state, "name", str(state)) != "NotLoad":
            return
        index = self._call("prepare_index_params", lambda c: c.prepare_index_params())
        for field_name, kind in missing:
            index.add_index(field_name, index_type=kind, index_name=field_name)
        self._call("create_index", lambda c: c.create_index(name, index))

    def _coarse_index(self) -> tuple[str, str, dict]:
        kind = self.settings.coarse_index
        params = {"HNSW": {"M": 16, "efConstruction": 200}, "IVF_FLAT": {"nlist": 1024}}.get(kind, {})
        return kind, "IP", params

    def _frame_index(self, meta: StoreMeta) -> tuple[str, str, str, dict]:
        if meta.layout == "chunk":
            return "placeholder", "FLAT", "L2", {}
        if meta.representation == "binary":
            return "codes", "BIN_IVF_FLAT", "HAMMING", {"nlist": 1024}
        return "codes", "IVF_FLAT", "IP", {"nlist": 1024}

    # ---- writes ----------------------------------------------------------------------------------

    def upsert(self, video: IndexedVideo) -> None:
        """Insert or replace one video; see `upsert_many`."""
        self.upsert_many([video])

    def upsert_many(self, videos: Sequence[IndexedVideo]) -> None:
        """Insert or replace videos (distinct ids), all validated before any write, never half-visible.

        Frames, text-video vectors and crop views of a new generation first, then the per-video rows (the
        switch), then the old generations' frames and vectors are deleted.  Batching many videos per call is much
        faster than one call per video.
        """
        meta = self.meta
        checked = [check_video(video, meta) for video in videos]
        ids = [video.video_id for video in checked]
        if len(set(ids)) != len(ids):
            raise InvalidVideo("upsert_many got the same video_id twice")
        if not checked:
            return
        generations = new_generations(len(checked))
        written = list(zip(ids, generations, strict=True))
        pairs = list(zip(checked, generations, strict=True))
        try:
            self._insert("frames", self.frame_collection, meta.row_bytes,
                         [row for video, generation in pairs
                          for view, codes in enumerate([video.fine_codes, *(video.view_codes if meta.has_view_codes
                                                                            else [])])
                          for row in frame_rows(video.video_id, generation, codes, meta, view)])
            if meta.text_dim:
                self._insert("text vectors", self.text_collection, 4 * meta.text_dim,
                             [{"video_id": video.video_id, "generation": generation, "vector": video.text.tolist()}
                              for video, generation in pairs])
            if meta.view_vectors:
                self._insert("views", self.view_collection, 4 * meta.coarse_dim,
                             [row for video, generation in pairs for row in view_rows(video, generation)])
            self._switch(checked, generations, meta)
        except BaseException:
            self._roll_back(written)
            raise
        current = self._video_rows(ids, ["generation"], "Strong")  # what won, if another writer raced this one
        keep = [row["generation"] for row in current.values()]
        for start in range(0, len(ids), DELETE_BATCH):  # the replaced generations' rows (and any strays)
            self._delete_generations(both(is_in("video_id", ids[start:start + DELETE_BATCH]),
                                          is_not_in("generation", keep)))
        self._flush_if_embedded()

    def _insert(self, what: str, collection: str, row_bytes: int, rows: list[dict[str, Any]]) -> None:
        """Rows of about `row_bytes` each into `collection`, INSERT_BYTE_BUDGET bytes (at least one row) a call.

        A batch whose call broke off (`_call` runs it once more on a new connection) may have been stored before
        the break: the server killed after it took the rows, before it answered.  So the attempts after the first
        insert only the rows the store does not hold yet (`_not_stored`): a retried batch never stores a row
        twice, which would leave its video with more frame rows than frames (an incomplete video)."""
        batch = max(1, INSERT_BYTE_BUDGET // row_bytes)
        for start in range(0, len(rows), batch):
            part, attempts = rows[start:start + batch], []

            def insert(client: Any, part: list[dict[str, Any]] = part, attempts: list[int] = attempts) -> None:
                attempts.append(1)
                todo = part if len(attempts) == 1 else self._not_stored(client, collection, part)
                if todo:
                    client.insert(collection, todo)

            self._call(f"insert {what}", insert)

    @staticmethod
    def _not_stored(client: Any, collection: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of one insert batch that `collection` (a generation-protocol one) does not hold, told apart
        by ROW_KEY_FIELDS, read with Strong consistency (everything the server took before a break): per
        (video, generation), and for frame rows per KEY_QUERY_VALUES of the batch's `frame_start`s, so that no
        query meets MAX_QUERY_ROWS.  Runs only after a broken-off insert."""
        fields = [name for name in ROW_KEY_FIELDS if name in rows[0]]
        starts: dict[tuple[str, int], list[int]] = defaultdict(list)
        for row in rows:
            starts[row["video_id"], row["generation"]].append(row.get("frame_start", 0))
        stored: set[tuple] = set()
        for (video_id, generation), values in starts.items():
            owner = both(equals("video_id", video_id), equals("generation", generation))
            for first in range(0, len(values), KEY_QUERY_VALUES):
                expression = both(owner, is_in("frame_start", values[first:first + KEY_QUERY_VALUES])) \
                    if "frame_start" in fields else owner
                found = client.query(collection, filter=expression, output_fields=fields, limit=MAX_QUERY_ROWS,
                                     consistency_level="Strong")
                stored.update(tuple(row[name] for name in fields) for row in found)
                if "frame_start" not in fields:
                    break
        return [row for row in rows if tuple(row[name] for name in fields) not in stored]

    def _switch(self, videos: list[IndexedVideo], generations: list[int], meta: StoreMeta) -> None:
        """The per-video rows pointing at the new generations: from here on readers see the new frames."""
        now_ms = int(time.time() * 1000)
        video_rows = [{
            "video_id": video.video_id,
            "coarse": video.coarse.tolist(),
            "selector": video.selector,
            "frame_count": int(video.frame_count),
            "generation": generation,
            "model_version": meta.model_version,
            "source_uri": video.source_uri,
            "indexed_at": now_ms,
            "metadata": video.metadata,
            **({"thumbnail": base64.b64encode(video.thumbnail or b"").decode("ascii")} if meta.has_thumbnails
               else {}),
        } for video, generation in zip(videos, generations, strict=True)]
        self._call("upsert videos", lambda c: c.upsert(self.video_collection, video_rows))

    def _roll_back(self, written: list[tuple[str, int]]) -> None:
        """After a failed write: remove the (video_id, generation) frames it wrote, unless a row points at them
        (the switch went through).  Best effort: what a broken connection leaves is orphaned, and
        `check(repair=True)` removes it later; readers never follow an orphan."""
        try:
            current = self._video_rows([video_id for video_id, _ in written], ["generation"], "Strong")
            stray = [(v, g) for v, g in written if current.get(v, {}).get("generation") != g]
            for start in range(0, len(stray), ORPHAN_DELETE_BATCH):
                self._delete_generations(_pairs_filter(stray[start:start + ORPHAN_DELETE_BATCH]))
        except Exception:  # the original error is the one to report
            pass

    def delete(self, video_id: str) -> bool:
        """Remove a video: its row first (no longer searchable), then its frames, text-video vector and crop
        views. False if it was absent."""
        check_video_id(video_id)
        self.meta  # noqa: B018 - opens (and checks) the collections before writing
        existed = bool(self._video_rows([video_id], ["generation"], "Strong"))
        self._delete_rows(video_id)
        return existed

    def _delete_rows(self, video_id: str) -> None:
        """The row, then the frames, of one id (checked by the caller, or found in the store by `check`)."""
        self._call("delete video", lambda c: c.delete(self.video_collection, filter=equals("video_id", video_id)))
        self._delete_generations(equals("video_id", video_id))
        self._flush_if_embedded()

    def flush(self) -> None:
        """Seal what was written so far (Milvus Lite indexes only sealed data; a real server seals by itself)."""
        for name in self._collections(self.meta)[1:]:
            self._call("flush", lambda c, n=name: c.flush(n))

    def _flush_if_embedded(self) -> None:
        """Milvus Lite 3.2.2 searches unsealed rows by brute force in Python (2,000 rows: 1-2 s per search vs
        90 ms sealed); sealing after each write call keeps reads fast. Servers seal on their own."""
        if not self.supports_binary_vectors:
            self.flush()

    def _delete_in(self, collection: str, expression: str) -> None:
        """The rows of `collection` matching `expression`."""
        self._call(f"delete from {collection}", lambda c: c.delete(collection, filter=expression))

    def _delete_frames(self, expression: str) -> None:
        """Frame rows alone (the write-latency benchmark times this delete)."""
        self._delete_in(self.frame_collection, expression)

    def _delete_text(self, expression: str) -> None:
        """Text-vector rows alone (the write-latency benchmark times this delete)."""
        self._delete_in(self.text_collection, expression)

    def _delete_generations(self, expression: str) -> None:
        """The rows of every generation-keyed collection (`_generation_collections`: frames, text vectors, crop
        views) matching `expression` (over video_id and generation), the deletes at once: on a server each waits
        for the time tick of the query that finds its rows (docs/storage.md).  All run to the end before the
        first failure, if any, is raised."""
        collections = self._generation_collections(self.meta)
        if len(collections) == 1:
            self._delete_in(collections[0], expression)
            return
        with ThreadPoolExecutor(len(collections), thread_name_prefix="dnsvr-delete") as pool:
            running = [pool.submit(self._delete_in, collection, expression) for collection in collections]
        for done in running:
            done.result()

    # ---- reads -----------------------------------------------------------------------------------

    def _video_rows(self, video_ids: Sequence[str], fields: list[str], consistency: str,
                    condition: str = "") -> dict[str, dict]:
        """{video_id: row with `fields`} of the ids that are indexed (and match `condition`, a checked filter)."""
        rows: dict[str, dict] = {}
        unique = list(dict.fromkeys(video_ids))
        for start in range(0, len(unique), DELETE_BATCH):
            chunk = unique[start:start + DELETE_BATCH]
            expression = both(is_in("video_id", chunk), condition) if condition else is_in("video_id", chunk)
            found = self._call("get videos", lambda c, e=expression: c.query(
                self.video_collection, filter=e, output_fields=["video_id", *fields], consistency_level=consistency))
            rows.update({row["video_id"]: row for row in found})
        return rows

    def search_coarse(self, vector: np.ndarray, k: int, filter: str | None = None,
                      consistency: str = "Session", ef: int | None = None) -> CoarseHits:
        """[D] float32 L2-normalised query -> the k best videos by inner product (ids, scores [k] float32).

        `filter` is a Milvus boolean expression over the per-video scalar fields, e.g.
        `metadata["channel"] == "news"` or `indexed_at > 1700000000000`.  In a store made for crop or segment
        views a video scores by its best view, its full frame's, a crop's or a window's (`_best_view_per_video`: the
        first `settings.view_depth` places exactly so, the rest by the views read).
        """
        meta = self.meta
        query = np.asarray(vector)
        if not np.issubdtype(query.dtype, np.floating) or query.shape != (meta.coarse_dim,):
            raise InvalidVideo(f"query vector must be floating [{meta.coarse_dim}], got {query.dtype} "
                               f"{list(query.shape)}")
        if not np.isfinite(query).all():
            raise InvalidVideo("query vector contains NaN or Inf")
        if not 1 <= k <= MAX_QUERY_ROWS:
            raise InvalidVideo(f"k must be in 1..{MAX_QUERY_ROWS}, got {k}")
        best_views: dict[str, int] = {}
        if meta.view_vectors:
            best, rows = self._best_view_per_video(query, k, _condition(filter), consistency, ef, best_views)
        else:
            fields = list(COARSE_FIELDS)
            hits = self._search_vectors(self.video_collection, "coarse", query, k, fields, consistency, filter or "",
                                        ef)
            best = list(zip(hits.column("video_id"), hits.scores.tolist(), strict=True))
            rows = hits.rows("video_id")
        return CoarseHits(
            ids=[video_id for video_id, _ in best],
            scores=np.array([score for _, score in best], np.float32),
            selectors=np.array([rows[video_id]["selector"] for video_id, _ in best], np.float32),
            generations=np.array([rows[video_id]["generation"] for video_id, _ in best], np.int64),
            frame_counts=np.array([rows[video_id]["frame_count"] for video_id, _ in best], np.int64),
            code_views=np.array([_codes_of(best_views.get(video_id, 0), meta) for video_id, _ in best], np.int64),
        )

    def _best_view_per_video(self, query: np.ndarray, k: int, condition: str, consistency: str, ef: int | None,
                             best_views: dict[str, int]) -> tuple[list[tuple[str, float]], dict[str, dict]]:
        """The k best videos by their best view, the full frame's vector or a crop's or a window's, exact to rank
        `settings.view_depth` at least -> ([(video_id, score)] best first, {video_id: its video row});
        `best_views` gets each listed video's best view where one was read (absent: its full frame).

        The full frames' top k come from the video rows, as without views (the filter inside the search).  Beside
        that search, the view collection (each video's rows: view 0, its full frame again, then its views) is read
        best first, `meta.view_vectors` rows for each of the first min(k, view_depth) places (+ 16).  Every video
        with a row above the last score read has its best row in the read, so the list is the exhaustive
        best-view ranking down to that score; under it, videos rank by the best of their rows read and their full
        frame's score.  While fewer than min(k, view_depth) places are settled so (stale rows of a re-index, videos
        filtered out), the next band of scores is read (a range search between the list's k-th score and the last
        score read, 4x wider), at most CAPPED_READS reads; a read that comes back unfilled, or ends under the
        list's k-th score, leaves the whole list exact.

        The reads carry no filter of their own (a video whose best row has counted is passed over on the client):
        the Milvus 2.3 server's HNSW under a filter that leaves out the rows nearest the query (`view > 0`, the
        videos already settled) returned a fraction of the rows that exist (stop 43: recall@1000 0.88;
        `docs/storage.md`).  Of the videos the view rows bring in, only those that would enter the list have
        their rows read (`_merge_crop_rows`: current generation, the filter; a filter that at most SCOPE_IDS
        videos pass restricts the reads to them); a view row of another generation than its video row's (a
        re-index or a delete under way) counts for nothing.  Exact, to that depth, as the search indexes are.
        """
        passing = self._passing_ids(condition, consistency) if condition else None
        if passing is not None and not passing:
            return [], {}
        scope = is_in("video_id", passing) if passing is not None else ""
        depth = min(k, self.settings.view_depth)
        window = min(MAX_QUERY_ROWS, self.meta.view_vectors * depth + 16)

        def view_rows(window: int, floor: float | None, ceiling: float | None) -> SearchColumns:
            """The best `window` view rows scoring above `floor` and at most `ceiling` (None: unbounded)."""
            return self._search_vectors(self.view_collection, "vector", query, window,
                                        ["video_id", "generation", "view"], consistency, scope, ef, radius=floor,
                                        ceiling=ceiling)

        fields = list(COARSE_FIELDS)
        with ThreadPoolExecutor(2, thread_name_prefix="dnsvr-views") as pool:  # the first view read needs no floor
            full = pool.submit(self._search_vectors, self.video_collection, "coarse", query, k, fields, consistency,
                               condition, ef)
            first = pool.submit(view_rows, window, None, None)
            hits, views = full.result(), first.result()
        rows = hits.rows("video_id")
        scores = dict(zip(hits.column("video_id"), hits.scores.tolist(), strict=True))
        settled: set[str] = set()  # videos whose best row has counted, or that can never enter
        last: float | None = None  # the lowest score of the latest read, a full one: the next reads the band under it
        for read in range(CAPPED_READS):
            if read:  # views of one video score alike: the rows left to read are often several a video
                window = min(MAX_QUERY_ROWS, window * 4)
                views = view_rows(window, _kth(scores, k), last)
            read_rows: dict[str, list[tuple[float, int, int]]] = {}  # video -> its rows of this read, best first
            for video_id, score, generation, view in zip(views.column("video_id"), views.scores.tolist(),
                                                         views.column("generation"), views.column("view"), strict=True):
                if video_id not in settled:
                    read_rows.setdefault(video_id, []).append((score, generation, view))
            settled.update(self._merge_crop_rows(read_rows, rows, scores, k, condition, consistency, best_views))
            floor = _kth(scores, k)
            if len(views) < window:
                break
            last = float(views.scores[-1])
            if (floor is not None and last <= floor) or sum(score > last for score in scores.values()) >= depth:
                break
        best = sorted(scores.items(), key=lambda item: -item[1])[:k]
        return best, rows

    def _merge_crop_rows(self, read_rows: dict[str, list[tuple[float, int, int]]], rows: dict[str, dict],
                         scores: dict[str, float], k: int, condition: str, consistency: str,
                         best_views: dict[str, int]) -> list[str]:
        """Merge one crop read (`read_rows`: video -> its rows' (score, generation, view), best first, videos in
        the order of their best row) into `scores` (video -> best view's score so far), `best_views` (video ->
        that view, where a crop) and `rows` (video -> video row) -> the videos it settles (passed over in the
        next reads).

        A row counts at its video row's generation.  A video the list already knows is settled when its best
        row of the read counts.  Of the others, only those whose best row of the read would put them in the top
        k (beside the list and the other such videos) have their rows read (`_video_rows`: current generation,
        the filter), again while some fail (gone, filtered out, another generation) and others move up:
        the rest can never enter (the k-th score only rises and their other rows score lower), so they are
        settled unread, as are the videos gone or filtered out.
        """
        newly: list[str] = []

        def count(video_id: str, found: list[tuple[float, int, int]]) -> None:
            """Its best row at its video row's generation raises its score; settled when its best row counts."""
            generation = rows[video_id]["generation"]
            counted = [(score, view) for score, row_generation, view in found if row_generation == generation]
            if counted and counted[0][0] > scores.get(video_id, -np.inf):
                scores[video_id], best_views[video_id] = counted[0]
            if found[0][1] == generation:
                newly.append(video_id)

        pending = {}
        for video_id, found in read_rows.items():
            if video_id in rows:
                count(video_id, found)
            else:
                pending[video_id] = found
        while pending:  # the pending videos that their best row would put in the top k, beside the others
            union = [*scores.values(), *(found[0][0] for found in pending.values())]
            line = heapq.nlargest(k, union)[-1] if len(union) >= k else -np.inf
            floor = _kth(scores, k)
            entering = [video_id for video_id, found in pending.items()
                        if found[0][0] >= line and (floor is None or found[0][0] > floor)][:k]
            if not entering:
                break
            looked_up = self._video_rows(entering, list(COARSE_FIELDS[1:]), consistency, condition)
            for video_id in entering:
                found = pending.pop(video_id)
                if video_id in looked_up:
                    rows[video_id] = looked_up[video_id]
                    count(video_id, found)
                else:  # gone, or filtered out
                    newly.append(video_id)
        return newly + list(pending)

    def search_text(self, vector: np.ndarray, k: int, filter: str | None = None,
                    consistency: str = "Session") -> TextHits:
        """[text_dim] float32 L2-normalised text query -> the k best videos by inner product with their text-video
        vectors (cosine).  `filter`: a Milvus expression over the per-video fields, as in `search_coarse`.

        Only vectors of each video's current generation count (a re-index in progress or an interrupted one
        never shows an old vector), so the text collection is read in growing windows until k videos pass or
        it is exhausted.  NoTextVectors on a store made without text-video vectors.
        """
        meta = self.meta
        if not meta.text_dim:
            raise NoTextVectors(f"store {self.settings.prefix!r} at {self.settings.display_uri} holds no text-video "
                                "vectors: it was built for a model pack without a text-video student; re-index "
                                "into a new store with a pack that has one")
        query = check_unit_vector(np.asarray(vector), meta.text_dim, "text query vector")
        if not 1 <= k <= MAX_QUERY_ROWS:
            raise InvalidVideo(f"k must be in 1..{MAX_QUERY_ROWS}, got {k}")
        best, _ = self._best_per_video(self.text_collection, query, k, _condition(filter), [], consistency, 2 * k + 16)
        return TextHits([video_id for video_id, _ in best], np.array([score for _, score in best], np.float32))

    def _best_per_video(self, collection: str, query: np.ndarray, k: int, condition: str, fields: list[str],
                        consistency: str, window: int, ef: int | None = None
                        ) -> tuple[list[tuple[str, float]], dict[str, dict]]:
        """The k best videos by their best row of `collection` (vector rows keyed by video_id and generation: the
        text or crop-view collection), a row counting only when its video's row points at its generation and
        passes `condition` (a checked filter) -> ([(video_id, score)] best first, {video_id: its video row with
        `generation` and `fields`}).

        Reads the collection's inner-product top `window` rows, again 4x wider until k videos pass or it is
        exhausted.  A read at Milvus's row cap (MAX_QUERY_ROWS rows: with several rows a video, fewer videos)
        that still leaves the k short is followed by reads that leave out the videos it settled (kept, failing
        `condition` or gone), each one's rows all scoring under the ones before, at most CAPPED_READS of them.
        A `condition` that at most SCOPE_IDS videos pass restricts every read to those videos.
        """
        scope = self._passing_ids(condition, consistency) if condition else None
        if scope is not None and not scope:
            return [], {}
        window = min(MAX_QUERY_ROWS, window)
        kept: dict[str, float] = {}  # the videos of reads at the cap, best first
        current: dict[str, dict] = {}
        settled: list[str] = []  # ... and the ones those reads ruled out: both left out of the next read
        for _ in range(CAPPED_READS):
            restrictions = [is_in("video_id", scope)] if scope is not None else []
            restrictions += [is_not_in("video_id", settled)] if settled else []
            hits = self._search_vectors(collection, "vector", query, window, ["video_id", "generation"], consistency,
                                        both(*restrictions) if restrictions else "", ef)
            ids = list(dict.fromkeys(hits.column("video_id")))
            rows = self._video_rows(ids, ["generation", *fields], consistency, condition)
            current.update(rows)
            found = dict(kept)
            for video_id, score, generation in zip(hits.column("video_id"), hits.scores.tolist(),
                                                   hits.column("generation"), strict=True):
                if video_id not in found and rows.get(video_id, {}).get("generation") == generation:
                    found[video_id] = score
            if len(found) >= k or len(hits) < window:
                break
            if window < MAX_QUERY_ROWS:
                window = min(MAX_QUERY_ROWS, window * 4)
                continue
            ruled = [video_id for video_id in ids if video_id in found or video_id not in rows]
            if not ruled:  # a read of stale rows alone (videos being re-indexed): nothing to leave out
                break
            kept, settled = found, settled + [video_id for video_id in ruled if video_id not in settled]
        return list(found.items())[:k], current

    def _passing_ids(self, condition: str, consistency: str) -> list[str] | None:
        """The ids of the videos that pass `condition` (a checked filter), None when more than SCOPE_IDS do."""
        found = self._call("filter videos", lambda c: c.query(
            self.video_collection, filter=condition, output_fields=["video_id"], limit=SCOPE_IDS + 1,
            consistency_level=consistency))
        return None if len(found) > SCOPE_IDS else [row["video_id"] for row in found]

    def _search_vectors(self, collection: str, field_name: str, query: np.ndarray, limit: int,
                        output_fields: list[str], consistency: str, filter: str = "", ef: int | None = None,
                        radius: float | None = None, ceiling: float | None = None) -> SearchColumns:
        """One inner-product search of `collection`'s `field_name` -> its hits as columns (`search_columns`), best
        first; with `radius` or `ceiling`, a range search: only hits scoring above `radius` (LOWEST_SCORE where only
        a ceiling is given) and at most `ceiling`."""
        params: dict[str, Any] = {"metric_type": "IP", "params": {}}
        if radius is not None or ceiling is not None:
            params["params"]["radius"] = LOWEST_SCORE if radius is None else radius
        if ceiling is not None:
            params["params"]["range_filter"] = ceiling
        if self.settings.coarse_index == "HNSW":
            params["params"]["ef"] = max(ef or 0, limit, 64)
        elif self.settings.coarse_index == "IVF_FLAT":
            params["params"]["nprobe"] = 32
        return self._call("search", lambda c: search_columns(c, collection, query, limit, field_name, params,
                                                             output_fields, filter, consistency))

    def fetch_codes(self, video_ids: Sequence[str], consistency: str = "Session") -> FetchedCodes:
        """Fine codes of K videos: their rows, then `read_codes` (≤ 16,384 rows per query); see FetchedCodes."""
        meta = self.meta
        for video_id in video_ids:
            check_video_id(video_id)
        rows = self._video_rows(video_ids, ["generation", "frame_count"], consistency)
        frames = self.read_codes({vid: (row["generation"], row["frame_count"]) for vid, row in rows.items()},
                                 consistency)
        torn = [vid for vid in rows if vid not in frames]
        if torn and consistency != "Strong":  # a concurrent re-index swapped it under us: read again
            rows.update(self._video_rows(torn, ["generation", "frame_count"], "Strong"))
            frames.update(self.read_codes({v: (rows[v]["generation"], rows[v]["frame_count"]) for v in torn},
                                          "Strong"))
        counts = np.array([len(frames[v]) if v in frames else 0 for v in video_ids], np.int64)
        t_max = int(counts.max()) if len(counts) else 0
        codes = np.zeros((len(video_ids), t_max, *meta.frame_shape), meta.frame_dtype)
        for index, video_id in enumerate(video_ids):
            if counts[index]:
                codes[index, :counts[index]] = frames[video_id]
        missing = [v for v in video_ids if v not in frames]
        return FetchedCodes(codes, counts, missing)

    def read_codes(self, wanted: Mapping[str, tuple[int, int]], consistency: str = "Session",
                   views: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """Fine codes of videos whose rows the caller has read (e.g. `search_coarse` hits), without reading the rows
        again: {video_id: (generation, frame_count)} -> {video_id: [T, 9, 64] uint8 or [T, 9, 512] float32}, in
        few batched queries of ≤ `rows_per_query` rows each.  `views` {video_id: view}: the codes of that view
        (0 or absent: the full frame's; i: crop view i's, in a store that keeps them, `StoreMeta.has_view_codes`;
        `CoarseHits.code_views`).

        A video whose frames of that generation are not exactly `frame_count` contiguous frames (re-indexed or
        deleted since its row was read, or broken) is left out of the result: the caller counts it as missing.
        Rows are keyed by (video_id, generation): two videos sharing a generation value (independent writers
        in the same millisecond) must never lend each other frames.
        """
        meta = self.meta
        checked = {check_video_id(video_id): (operator.index(generation), operator.index(frame_count))
                   for video_id, (generation, frame_count) in wanted.items()}
        firsts = {video_id: VIEW_FRAME_STRIDE * self._code_view(views.get(video_id, 0) if views else 0)
                  for video_id in checked}  # the frame_start of each wanted view's first frame
        pieces: dict[tuple[str, int], dict[int, np.ndarray]] = defaultdict(dict)  # -> frame index -> codes
        for expression in self._frame_queries(checked, firsts):
            found = self._call("query frames", lambda c, e=expression: c.query(
                self.frame_collection, filter=e, output_fields=["video_id", "generation", "frame_start", "codes"],
                limit=MAX_QUERY_ROWS, consistency_level=consistency))
            for row, codes in zip(*_frame_columns(found, meta), strict=True):
                video_id = row["video_id"]
                if video_id in firsts:
                    pieces[video_id, row["generation"]][row["frame_start"] - firsts[video_id]] = codes
        result: dict[str, np.ndarray] = {}
        for video_id, (generation, frame_count) in checked.items():
            parts = sorted(pieces.get((video_id, generation), {}).items(), key=lambda part: part[0])
            if parts and _contiguous(parts) and sum(len(p) for _, p in parts) == frame_count:
                result[video_id] = np.concatenate([p for _, p in parts])
        return result

    def _code_view(self, view: int) -> int:
        """A view whose codes `read_codes` can return (0, or a crop view of a store that keeps their codes)."""
        view = operator.index(view)
        if view and not (self.meta.has_view_codes and 0 < view <= self.meta.views):
            raise ValueError(f"this store keeps no fine codes of view {view} (views with codes: 0"
                             f"{f'..{self.meta.views}' if self.meta.has_view_codes else ''})")
        return view

    def _frame_queries(self, wanted: dict[str, tuple[int, int]], firsts: dict[str, int]) -> Iterator[str]:
        """Filter expressions covering all wanted (video_id, generation) pairs, each matching ≤ rows_per_query
        rows (the video ids keep another video's rows of an equal generation out of the row limit); in a store
        that keeps crop views' codes, only the rows of each video's view (its frames from `firsts[video_id]`)."""
        meta = self.meta
        limit = meta.rows_per_query
        group: dict[str, int] = {}
        group_rows = 0

        def rows_of(group: dict[str, int]) -> str:
            """These videos' rows of this generation; of the wanted view where crop views' codes are kept."""
            if not meta.has_view_codes:
                return _group_filter(group)
            by_first: dict[int, list[str]] = defaultdict(list)
            for video_id in group:
                by_first[firsts[video_id]].append(video_id)
            spans = {first: both(f"frame_start >= {integer_literal(first)}",
                                 f"frame_start < {integer_literal(first + VIEW_FRAME_STRIDE)}") for first in by_first}
            if len(spans) == 1:
                return both(_group_filter(group), *spans.values())
            return both(_group_filter(group), either(*(both(is_in("video_id", ids), spans[first])
                                                       for first, ids in by_first.items())))

        for video_id, (generation, frame_count) in wanted.items():
            rows = meta.rows_for(frame_count)
            if rows > limit:  # one long video: page through it by frame index
                span = limit * meta.frames_per_row
                for start in range(firsts[video_id], firsts[video_id] + frame_count, span):
                    yield both(equals("video_id", video_id), equals("generation", generation),
                               f"frame_start >= {integer_literal(start)}",
                               f"frame_start < {integer_literal(start + span)}")
                continue
            if group_rows + rows > limit:
                yield rows_of(group)
                group, group_rows = {}, 0
            group[video_id] = generation
            group_rows += rows
        if group:
            yield rows_of(group)

    def ranking_row(self, video_id: str, consistency: str = "Session") -> RankingRow:
        """What searching by an indexed video needs of its row, in one query: coarse [C] float32, selector,
        generation, frame_count (its codes: `read_codes`).  Raises VideoNotFound."""
        check_video_id(video_id)
        rows = self._video_rows([video_id], ["coarse", "selector", "generation", "frame_count"], consistency)
        if video_id not in rows:
            raise VideoNotFound(video_id)
        row = rows[video_id]
        return RankingRow(np.asarray(row["coarse"], np.float32), float(row["selector"]), int(row["generation"]),
                          int(row["frame_count"]))

    def get(self, video_id: str, consistency: str = "Strong") -> IndexedVideo:
        """Everything stored for one video, fine codes included. Raises VideoNotFound."""
        check_video_id(video_id)
        with_thumbnail = self.meta.has_thumbnails
        rows = self._video_rows([video_id], VIDEO_FIELDS[1:] + (["thumbnail"] if with_thumbnail else []),
                                consistency)
        if video_id not in rows:
            raise VideoNotFound(video_id)
        row = rows[video_id]
        fetched = self.fetch_codes([video_id], consistency)
        if fetched.missing:
            raise StoreError(f"video {video_id!r} has incomplete frames; run `dnsvr store check --repair`")
        metadata = row["metadata"]
        text = self._text_vector(video_id, row["generation"], consistency) if self.meta.text_dim else None
        views, segments = (self._view_vectors(video_id, row["generation"], consistency) if self.meta.view_vectors
                           else (None, None))
        view_codes = self._view_codes(video_id, row["generation"], int(row["frame_count"]), consistency)
        return IndexedVideo(
            video_id=video_id,
            coarse=np.asarray(row["coarse"], np.float32),
            selector=float(row["selector"]),
            fine_codes=fetched.codes[0],
            frame_count=int(row["frame_count"]),
            source_uri=row["source_uri"],
            metadata=json.loads(metadata) if isinstance(metadata, str) else dict(metadata or {}),
            model_version=row["model_version"],
            indexed_at=row["indexed_at"] / 1000.0,
            text=text,
            thumbnail=(base64.b64decode(row["thumbnail"]) or None) if with_thumbnail else None,
            views=views,
            view_codes=view_codes,
            segments=segments,
        )

    def _view_codes(self, video_id: str, generation: int, frame_count: int, consistency: str) -> np.ndarray | None:
        """A video's crop views' fine codes [views, T, ...] in the grid's order; None where the store keeps none."""
        if not self.meta.has_view_codes:
            return None
        views = range(1, 1 + self.meta.views)
        found = [self.read_codes({video_id: (generation, frame_count)}, consistency, {video_id: view}).get(video_id)
                 for view in views]
        if any(codes is None for codes in found):
            raise StoreError(f"video {video_id!r} lacks crop views' codes; run `dnsvr store check --repair`")
        return np.stack(found)

    def thumbnails(self, video_ids: Sequence[str], consistency: str = "Session") -> dict[str, bytes]:
        """{video_id: JPEG bytes} of the given ids that are indexed with a thumbnail (none in a store made before
        thumbnails existed: `StoreMeta.has_thumbnails`).  Ids are checked by the id rule first."""
        for video_id in video_ids:
            check_video_id(video_id)
        if not self.meta.has_thumbnails:
            return {}
        rows = self._video_rows(video_ids, ["thumbnail"], consistency)
        found = {video_id: base64.b64decode(row["thumbnail"]) for video_id, row in rows.items()}
        return {video_id: jpeg for video_id, jpeg in found.items() if jpeg}

    def _text_vector(self, video_id: str, generation: int, consistency: str) -> np.ndarray:
        rows = self._call("get text vector", lambda c: c.query(
            self.text_collection, filter=both(equals("video_id", video_id), equals("generation", generation)),
            output_fields=["vector"], limit=1, consistency_level=consistency))
        if not rows:
            raise StoreError(f"video {video_id!r} has no text-video vector; run `dnsvr store check --repair`")
        return np.asarray(rows[0]["vector"], np.float32)

    def _view_vectors(self, video_id: str, generation: int, consistency: str
                      ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """A video's crop views [views, C] float32 in the grid's order and segment views [segments, C] in their
        layout's (view 0, its full frame, left out; None where the store keeps none of a kind)."""
        meta = self.meta
        rows = self._call("get views", lambda c: c.query(
            self.view_collection, filter=both(equals("video_id", video_id), equals("generation", generation)),
            output_fields=["view", "vector"], consistency_level=consistency))
        by_view = {int(row["view"]): row["vector"] for row in rows}
        if sorted(by_view) != list(range(meta.view_vectors)):
            raise StoreError(f"video {video_id!r} lacks some of its views; run `dnsvr store check --repair`")
        vectors = np.asarray([by_view[view] for view in range(meta.view_vectors)], np.float32)  # [1 + B + W, C]
        return (vectors[1:1 + meta.views] if meta.views else None,
                vectors[1 + meta.views:] if meta.segments else None)

    def count(self, consistency: str = "Strong") -> int:
        """Number of searchable videos."""
        return self._count(self.video_collection, consistency)

    def _count(self, collection: str, consistency: str, expression: str = "") -> int:
        self.meta  # noqa: B018 - opens the collections
        result = self._call("count", lambda c: c.query(collection, filter=expression, output_fields=["count(*)"],
                                                       consistency_level=consistency))
        return int(result[0]["count(*)"])

    def code_rows(self, batch_size: int = 8_192) -> Iterator[tuple[str, int, int]]:
        """(video_id, generation, frame_count) of every stored video, what `read_codes` takes, read in pages of at
        most `batch_size` rows as they are consumed (Strong reads; `_scan`)."""
        self.meta  # noqa: B018 - opens the collections
        for row in self._scan(self.video_collection, "video_id", ["generation", "frame_count"], batch_size):
            yield row["video_id"], int(row["generation"]), int(row["frame_count"])

    def _scan(self, collection: str, key: str, fields: list[str], batch_size: int = 8_192) -> Iterator[dict]:
        """Every row of `collection` exactly once, in pages of at most `batch_size` rows between primary-key
        bounds (`_page_bound`), with Strong reads.  Not pymilvus's query_iterator: its snapshot time can miss
        other clients' latest deletes."""
        cursor: Any = None
        while True:
            bound = self._page_bound(collection, key, cursor, batch_size)
            expression = both(*(e for e in (_after(key, cursor), _upto(key, bound)) if e))
            page = self._call("scan", lambda c, e=expression: c.query(
                collection, filter=e, output_fields=[key, *fields], limit=batch_size, consistency_level="Strong"))
            yield from page
            if bound is None:
                return
            cursor = bound

    def _page_bound(self, collection: str, key: str, cursor: Any, batch_size: int) -> Any:
        """A key b such that the rows with cursor < key <= b are at least one and at most `batch_size`, or None
        when all rows after `cursor` are that few.  A query with a limit returns *some* matching rows, not the
        smallest keys (Milvus Lite 3 returns them in storage order), so b is chosen among the keys of such a
        sample by counting; when even the sample's smallest key has too many rows below it, the search goes on
        below that key."""
        ceiling: Any = None
        while True:
            window = both(*(e for e in (_after(key, cursor), _below(key, ceiling)) if e))
            sample = self._call("scan keys", lambda c, e=window: c.query(
                collection, filter=e, output_fields=[key], limit=batch_size, consistency_level="Strong"))
            if ceiling is None and len(sample) < batch_size:
                return None
            keys = sorted(row[key] for row in sample)

            def rows_upto(bound: Any) -> int:
                expression = both(*(e for e in (_after(key, cursor), _upto(key, bound)) if e))
                return self._count(collection, "Strong", expression)

            if rows_upto(keys[0]) > batch_size:
                ceiling = keys[0]
                continue
            low, high = 0, len(keys) - 1  # the largest keys[i] with at most batch_size rows up to it
            while low < high:
                middle = (low + high + 1) // 2
                low, high = (middle, high) if rows_upto(keys[middle]) <= batch_size else (low, middle - 1)
            return keys[low]

    def pending_index_rows(self) -> int:
        """Rows the server has not indexed yet, over the store's data collections: a server builds its indexes in
        the background after large inserts, and those builds compete with searches (benchmarks wait for 0).
        Milvus Lite indexes as it flushes: 0."""
        pending = 0
        for name in self._collections(self.meta)[1:]:
            for index_name in self._call("list_indexes", lambda c, n=name: c.list_indexes(n)):
                info = self._call("describe_index", lambda c, n=name, i=index_name: c.describe_index(n, i))
                pending += int(info.get("pending_index_rows", 0) or 0)
        return pending

    def stats(self) -> StoreStats:
        """Row counts and bytes per video (payload; disk too for embedded Milvus Lite)."""
        meta = self.meta
        videos = frames = 0
        for row in self._scan(self.video_collection, "video_id", ["frame_count"]):
            videos += 1
            frames += int(row["frame_count"])
        frame_rows_count = self._count(self.frame_collection, "Strong")
        text_rows = self._count(self.text_collection, "Strong") if meta.text_dim else 0
        view_rows_count = self._count(self.view_collection, "Strong") if meta.view_vectors else 0
        vector_bytes = 4 * (meta.coarse_dim * (1 + meta.views + meta.segments) + meta.text_dim)
        code_views = 1 + meta.views if meta.has_view_codes else 1  # the full frame's codes and each kept view's
        payload = (vector_bytes + 4 + meta.frame_bytes * code_views * frames / videos) if videos else 0.0
        disk = None
        if self.settings.embedded:
            files = Path(self.settings.uri).expanduser().rglob("*")
            disk = sum(p.stat().st_size for p in files if p.is_file())
        return StoreStats(videos, frames, frame_rows_count, payload, disk, meta, text_rows, view_rows_count)

    def check(self, repair: bool = False, grace_s: float = 600.0) -> CheckReport:
        """Find orphan frame, text-vector and crop-view rows, videos with incomplete frames (or without their
        text-video vector or all their crop views) and ids the id rule refuses; `repair` removes them.

        Orphans younger than `grace_s` are skipped: they may belong to an upsert still in progress.
        Repair deletes incomplete videos and invalid ids too (row first): they must be re-indexed.
        """
        meta = self.meta
        expected: dict[tuple[str, int], int] = {}  # (video_id, generation) -> frame rows it should have
        for row in self._scan(self.video_collection, "video_id", ["generation", "frame_count"]):
            expected[row["video_id"], row["generation"]] = meta.video_frame_rows(int(row["frame_count"]))
        per_video = {self.text_collection: 1, self.view_collection: meta.view_vectors}  # rows; frames: `expected`
        now = time.time()
        incomplete: set[str] = set()
        recent = 0
        # generation-keyed collection -> its rows; -> its orphan (video_id, generation) pairs and their rows
        scanned: dict[str, int] = {}
        orphan_rows: dict[str, tuple[list[tuple[str, int]], int]] = {}
        for collection in self._generation_collections(meta):
            found: dict[tuple[str, int], int] = defaultdict(int)
            for row in self._scan(collection, "pk", ["video_id", "generation"]):
                found[row["video_id"], row["generation"]] += 1
            incomplete.update(video_id for (video_id, generation), rows in expected.items()
                              if found.get((video_id, generation), 0) != per_video.get(collection, rows))
            stray = [key for key in found if key not in expected]
            old = [key for key in stray if now - generation_time(key[1]) >= grace_s]
            recent += sum(found[key] for key in stray if now - generation_time(key[1]) < grace_s)
            scanned[collection] = sum(found.values())
            orphan_rows[collection] = (old, sum(found[key] for key in old))
        report = CheckReport(
            videos=len(expected), frame_rows=scanned[self.frame_collection],
            orphan_rows=orphan_rows[self.frame_collection][1],
            orphan_video_ids=sorted({video_id for pairs, _ in orphan_rows.values() for video_id, _ in pairs}),
            incomplete_video_ids=sorted(incomplete), skipped_recent_rows=recent,
            invalid_video_ids=sorted({video_id for video_id, _ in expected if id_problem(video_id)}),
            orphan_text_rows=orphan_rows.get(self.text_collection, ([], 0))[1],
            orphan_view_rows=orphan_rows.get(self.view_collection, ([], 0))[1],
        )
        if repair:
            for video_id in report.incomplete_video_ids:
                self.delete(video_id)
            for video_id in report.invalid_video_ids:
                self._delete_rows(video_id)
            for collection, (pairs, _) in orphan_rows.items():
                for start in range(0, len(pairs), ORPHAN_DELETE_BATCH):
                    self._delete_in(collection, _pairs_filter(pairs[start:start + ORPHAN_DELETE_BATCH]))
            report.repaired = True
        return report


def _codes_of(view: int, meta: StoreMeta) -> int:
    """The view whose fine codes compare a candidate whose best S^c view is `view`: that crop view where the store
    keeps its codes, else the full frame (0; a segment view's frames are the full frame's)."""
    return view if meta.has_view_codes and view <= meta.views else 0


def _kth(scores: Mapping[str, float], k: int) -> float | None:
    """The k-th highest of `scores`, None when there are fewer than k."""
    return sorted(scores.values(), reverse=True)[k - 1] if len(scores) >= k else None


def _condition(filter: str | None) -> str:
    """A caller's filter over the per-video fields, checked to combine safely with `and` (`checked_filter`), or ""
    for none; InvalidVideo naming the problem."""
    try:
        return checked_filter(filter) if filter else ""
    except ValueError as error:
        raise InvalidVideo(str(error)) from None


def _frame_columns(result: Any, meta: StoreMeta) -> tuple[list[dict], list[np.ndarray]]:
    """A frame query's rows and their codes ([frames, 9, 64] uint8 / [frames, 9, 512] float32 each).

    pymilvus 3.0.2 decodes vector cells row by row, copying the whole protobuf column for every row (12,000
    binary rows: minutes); the column is read once here instead.  Falls back to per-row decoding.
    """
    lazy = {column.field_name: column for column in getattr(result, "_lazy_field_data", [])}
    column = lazy.get("codes")
    if meta.layout == "vector" and column is not None:
        rows = list(list.__iter__(result))
        if meta.representation == "binary":
            flat = np.frombuffer(column.vectors.binary_vector, dtype=np.uint8)
        else:
            flat = np.asarray(column.vectors.float_vector.data, dtype=np.float32)
        frames = flat.reshape((len(rows), 1, *meta.frame_shape))
        if all("codes" not in row or row["codes"] is None for row in rows):
            return rows, list(frames)
    rows = list(result)
    return rows, [decode_row(row, meta) for row in rows]


def _group_filter(group: dict[str, int]) -> str:
    """{video_id: generation} -> a filter for their frame rows: these ids and these generations (a superset
    only where a generation value is shared; readers drop the extra rows by (video_id, generation))."""
    return both(is_in("video_id", group), is_in("generation", group.values()))


def _pairs_filter(pairs: Sequence[tuple[str, int]]) -> str:
    """[(video_id, generation)] -> a filter matching exactly the frame rows of those pairs."""
    return either(*(both(equals("video_id", video_id), equals("generation", generation))
                    for video_id, generation in pairs))


def _after(key: str, cursor: Any) -> str:
    return greater(key, cursor) if cursor is not None else ""


def _upto(key: str, bound: Any) -> str:
    return at_most(key, bound) if bound is not None else ""


def _below(key: str, ceiling: Any) -> str:
    return less(key, ceiling) if ceiling is not None else ""


def _contiguous(parts: list[tuple[int, np.ndarray]]) -> bool:
    """Sorted (frame_start, [frames, ...]) pieces cover 0..T-1 without gaps or overlaps."""
    expected = 0
    for start, piece in parts:
        if start != expected:
            return False
        expected += len(piece)
    return True


def lock_path_for(uri: str, prefix: str, purpose: str) -> Path:
    """The file whose flock guards `purpose` on the store at `uri` + `prefix` among this machine's processes.

    A Milvus Lite file's locks lie beside it (`.<name>.dnsvr-<purpose>-<hash>.lock`), so they go when its folder
    goes and every spelling of its path meets the same lock; a server's lie in `private_temp_dir()`, this user's
    alone (a lock in a folder others can write could be taken or replaced by them)."""
    lite_file = Path(uri).expanduser().resolve() if is_lite_file(uri) else None
    key = hashlib.sha256(f"{lite_file or uri}\0{prefix}".encode()).hexdigest()[:16]
    if lite_file is not None:
        return lite_file.parent / f".{lite_file.name}.dnsvr-{purpose}-{key}.lock"
    return private_temp_dir() / f"store-{purpose}-{key}.lock"


def _is_lite(server_version: str) -> bool:
    """Whether a server version names Milvus Lite (3.x reports `milvus_lite-<version>`)."""
    return server_version.startswith("milvus_lite")


def _refused(error: Exception) -> bool:
    """Whether `error` is a connection that could not be made (so the request was never sent): pymilvus's
    "fail connecting" (its connect check failed) or gRPC's refused / no reachable address."""
    text = str(error).lower()
    return any(marker in text for marker in REFUSED_MARKERS)


def _is_unavailable(error: Exception) -> bool:
    """Whether `error` says the store could not be reached (retry, report unavailable), not that it refused the
    request.  A status the server answered with (a pymilvus error code other than 1 unexpected / 2 connect
    failed) is an answer, whatever its message says: it may echo the caller's filter, and a filter naming a
    field `deadline` is a bad filter, not an outage."""
    code = getattr(error, "code", None)
    if callable(code):  # grpc.RpcError
        name = getattr(code(), "name", "")
        return name in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    if isinstance(code, int) and code not in ANSWERLESS_CODES:
        return False
    text = str(error).lower()
    return code == 2 or any(marker in text for marker in UNAVAILABLE_MARKERS) or isinstance(
        error, (ConnectionError, TimeoutError))

