"""`VideoSearchClient`: index, search, delete and inspect videos on a dnsvr Triton server over gRPC.

    client = VideoSearchClient("127.0.0.1:8001")
    client.index("clip-1", "clip-1.mp4")                    # path, bytes or uint8 frames [T, 224, 224, 3]
    client.index("clip-2", "clip-2.mp4", on_duplicate="skip")  # left out when a near-duplicate is indexed
    result = client.search("query.mp4", top_k=10, rerank=0.1)
    for hit in result:                                      # best first
        print(hit.video_id, hit.score, hit.reranked)
    client.search_text("a man riding a bike at night", top_k=10)   # with a text-video student
    client.thumbnails([hit.video_id for hit in result])     # {video_id: JPEG bytes}

Errors: InvalidVideo (bad input, nothing changed), NotFound (unknown id), ServerUnavailable (server or store
down, after the retries of idempotent calls), NoTextSearch (text search without a text-video student or
vectors), Forbidden (the access token), ServerError (anything else).  Searches, stats and health are
retried on ServerUnavailable (`retries`, exponential back-off); index and delete are not (a retried delete
could report a deletion it did not make; index is expensive and the caller decides).  One gRPC channel per
thread: the client may be shared by threads (`index_many` does).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as grpcclient
from dnsvr.client import allocator, protocol
from dnsvr.client.errors import DnsvrError, ServerUnavailable, error_from_message
from dnsvr.client.results import Health, IndexOutcome, IndexResult, SearchResult
from dnsvr.client.video_input import VideoLike
from tritonclient.utils import InferenceServerException

MAX_MESSAGE_BYTES = 2**31 - 1
DEFAULT_URL = "127.0.0.1:8001"


def channel_args(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """gRPC channel options: messages as large as real videos and frame arrays.  No client keep-alive pings:
    Triton's defaults answer pings more frequent than every 5 minutes with GOAWAY (too_many_pings)."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def as_client_error(error: InferenceServerException) -> DnsvrError:
    return error_from_message(error.message() or str(error), str(error.status()))


class VideoSearchClient:
    """Blocking client.  url: "host:port" of Triton's gRPC endpoint (default $DNSVR_URL or 127.0.0.1:8001).

    timeout_s: per-call deadline (indexing a long video on CPU takes a while: raise it there).
    retries: extra attempts of idempotent calls on ServerUnavailable.  ssl / root_certificates /
    private_key / certificate_chain: TLS (paths to PEM files); token: the server's access token (default
    $DNSVR_ACCESS_TOKEN), sent as the `dnsvr-token` header; headers: more headers for every call (e.g.
    {"authorization": "Bearer ..."} for a gateway in front of Triton).  tune_allocator: before the first upload
    of 8 MiB or more, keep glibc's allocator from handing big buffers back to the system
    (`dnsvr.client.allocator`: a search by a 23.5 MB clip took 14 instead of 74 ms of CPU; process-wide; the
    environment's own MALLOC_ settings win).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout_s: float = 300.0,
        retries: int = 2,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        tune_allocator: bool = True,
    ) -> None:
        self.url = url or os.environ.get("DNSVR_URL") or DEFAULT_URL
        self.tune_allocator = tune_allocator
        self.timeout_s = timeout_s
        self.retries = retries
        self.headers = protocol.call_headers(token, headers)
        self._tls = dict(ssl=ssl, root_certificates=root_certificates, private_key=private_key,
                         certificate_chain=certificate_chain)
        self._local = threading.local()
        self._all: list[grpcclient.InferenceServerClient] = []
        self._lock = threading.Lock()

    def _triton(self) -> grpcclient.InferenceServerClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = grpcclient.InferenceServerClient(self.url, channel_args=channel_args(), **self._tls)
            self._local.client = client
            with self._lock:
                self._all.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._all:
                client.close()
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> VideoSearchClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _infer(self, request: protocol.Request, idempotent: bool) -> dict[str, np.ndarray]:
        if self.tune_allocator:
            allocator.before_upload(request.payload_bytes())
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                result = self._triton().infer(
                    request.model,
                    request.infer_inputs(grpcclient.InferInput),
                    outputs=[grpcclient.InferRequestedOutput(name) for name in request.outputs],
                    client_timeout=self.timeout_s,
                    headers=self.headers or None,
                )
                return {name: result.as_numpy(name) for name in request.outputs}
            except InferenceServerException as error:
                mapped = as_client_error(error)
                if not isinstance(mapped, ServerUnavailable) or attempt == attempts - 1:
                    raise mapped from None
            time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def index(self, video_id: str, video: VideoLike, *, source_uri: str = "", metadata: dict | None = None,
              on_duplicate: str | None = None, duplicate_threshold: float | None = None) -> IndexResult:
        """Index `video` under `video_id`, replacing what the id held; metadata: a JSON-serialisable dict.

        on_duplicate: "keep" (the default: store, no search), "report" (search the collection, store, report
        the near-duplicates) or "skip" (search; store only when there is no near-duplicate).  A near-duplicate
        is another indexed video whose search score against this one is >= duplicate_threshold (default
        `dnsvr.client.duplicates.DEFAULT_DUPLICATE_THRESHOLD`, in [0, 1]).  The result says whether the video
        was `stored` and lists the `duplicates` found.
        """
        request = protocol.index_request(video_id, video, source_uri, metadata, on_duplicate, duplicate_threshold)
        return protocol.parse_index(video_id, self._infer(request, idempotent=False))

    def index_many(
        self,
        items: Iterable[tuple[str, VideoLike]],
        *,
        concurrency: int = 2,
        on_done: Callable[[IndexOutcome], None] | None = None,
        on_duplicate: str | None = None,
        duplicate_threshold: float | None = None,
    ) -> list[IndexOutcome]:
        """Index (video_id, video) pairs with at most `concurrency` requests in flight; a failing item is
        reported in its outcome and does not stop the others.  Outcomes in input order; `on_done` is called
        as each finishes (progress bars).  on_duplicate / duplicate_threshold: as `index`, for every item."""
        items = list(items)

        def one(item: tuple[str, VideoLike]) -> IndexOutcome:
            video_id, video = item
            try:
                result = self.index(video_id, video, on_duplicate=on_duplicate,
                                    duplicate_threshold=duplicate_threshold)
                outcome = IndexOutcome(video_id, result=result)
            except DnsvrError as error:
                outcome = IndexOutcome(video_id, error=error)
            if on_done is not None:
                on_done(outcome)
            return outcome

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(one, items))

    def search(
        self,
        video: VideoLike | None = None,
        *,
        video_id: str | None = None,
        top_k: int = 10,
        rerank: float | str | None = 0.1,
        candidates: int | None = None,
        filter: str | None = None,
    ) -> SearchResult:
        """Rank indexed videos against a query video (or an indexed id, left out of its own results).

        rerank: fraction of the coarse candidates the selector sends to the fine student (0 = coarse only),
        or a policy string 'threshold:0.5' / 'count:20', optionally with the fusion of the fine scores:
        '0.05,fusion:cascade' | 'fusion:mix' | 'fusion:calibrated'; none named: the served pack's default
        (`dnsvr search --help`).
        candidates: K', how many coarse neighbours are considered (default max(top_k, 100)).  filter: Milvus
        expression over per-video fields.
        """
        request = protocol.search_request(video, video_id, top_k, rerank, candidates, filter)
        began = time.perf_counter()
        result = protocol.parse_search(self._infer(request, idempotent=True))
        result.timings_ms["round_trip"] = (time.perf_counter() - began) * 1000.0
        return result

    def search_text(self, text: str, top_k: int = 10, filter: str | None = None) -> SearchResult:
        """Rank indexed videos against a text query ("a man riding a bike at night") by the cosine of the
        text-video student's vectors.  NoTextSearch when the server's model pack has no text-video student or
        its store holds no text-video vectors; InvalidVideo for an empty or too long text (spec.MAX_TEXT_BYTES).
        """
        request = protocol.search_text_request(text, top_k, filter)
        began = time.perf_counter()
        result = protocol.parse_search_text(self._infer(request, idempotent=True))
        result.timings_ms["round_trip"] = (time.perf_counter() - began) * 1000.0
        return result

    def delete(self, video_id: str) -> bool:
        """Remove a video; True if it was indexed."""
        return protocol.parse_delete(self._infer(protocol.delete_request(video_id), idempotent=False))

    def thumbnails(self, video_ids: Iterable[str]) -> dict[str, bytes]:
        """{video_id: JPEG bytes}: the thumbnails stored when these videos were indexed (at most spec.MAX_TOP_K
        ids; an id that is not indexed, or was indexed into a store made before thumbnails, is left out)."""
        request = protocol.thumbnails_request(list(video_ids))
        return protocol.parse_thumbnails(request, self._infer(request, idempotent=True))

    def stats(self) -> dict:
        """Store sizes (videos, frames, bytes per video), Milvus and model versions."""
        return protocol.parse_report(self._infer(protocol.stats_request("stats"), idempotent=True))

    def health(self) -> Health:
        """Server live/ready, readiness of each pipeline model, and whether the store answers."""
        try:
            triton = self._triton()
            live, ready = triton.is_server_live(), triton.is_server_ready()
            models = {name: triton.is_model_ready(name) for name in protocol.PIPELINE_MODELS}
        except InferenceServerException as error:
            raise as_client_error(error) from None
        try:
            store = protocol.parse_report(self._infer(protocol.stats_request("health"), idempotent=True))
            return Health(live, ready, models, store)
        except DnsvrError as error:
            return Health(live, ready, models, None, str(error))
