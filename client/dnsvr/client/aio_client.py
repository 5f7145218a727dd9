"""`AsyncVideoSearchClient`: the asyncio twin of VideoSearchClient (tritonclient.grpc.aio), same semantics.

    async with AsyncVideoSearchClient(url) as client:
        result = await client.search("query.mp4", top_k=10)
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable

import numpy as np
import tritonclient.grpc.aio as aioclient
from dnsvr.client import allocator, protocol
from dnsvr.client.errors import ServerUnavailable
from dnsvr.client.grpc_client import DEFAULT_URL, as_client_error, channel_args
from dnsvr.client.results import IndexResult, SearchResult
from dnsvr.client.video_input import VideoLike
from tritonclient.utils import InferenceServerException


class AsyncVideoSearchClient:
    """Arguments as VideoSearchClient; one channel, safe for many concurrent coroutines."""

    def __init__(self, url: str | None = None, *, timeout_s: float = 300.0, retries: int = 2, ssl: bool = False,
                 root_certificates: str | None = None, private_key: str | None = None,
                 certificate_chain: str | None = None, token: str | None = None,
                 headers: dict[str, str] | None = None, tune_allocator: bool = True) -> None:
        self.url = url or os.environ.get("DNSVR_URL") or DEFAULT_URL
        self.tune_allocator = tune_allocator
        self.timeout_s = timeout_s
        self.retries = retries
        self.headers = protocol.call_headers(token, headers)
        self._client = aioclient.InferenceServerClient(
            self.url, channel_args=channel_args(), ssl=ssl, root_certificates=root_certificates,
            private_key=private_key, certificate_chain=certificate_chain)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncVideoSearchClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _infer(self, request: protocol.Request, idempotent: bool) -> dict[str, np.ndarray]:
        if self.tune_allocator:
            allocator.before_upload(request.payload_bytes())
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                result = await self._client.infer(
                    request.model, request.infer_inputs(aioclient.InferInput),
                    outputs=[aioclient.InferRequestedOutput(name) for name in request.outputs],
                    client_timeout=self.timeout_s, headers=self.headers or None)
                return {name: result.as_numpy(name) for name in request.outputs}
            except InferenceServerException as error:
                mapped = as_client_error(error)
                if not isinstance(mapped, ServerUnavailable) or attempt == attempts - 1:
                    raise mapped from None
            await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def index(self, video_id: str, video: VideoLike, *, source_uri: str = "", metadata: dict | None = None,
                    on_duplicate: str | None = None, duplicate_threshold: float | None = None) -> IndexResult:
        """See VideoSearchClient.index (on_duplicate: keep, report or skip)."""
        request = protocol.index_request(video_id, video, source_uri, metadata, on_duplicate, duplicate_threshold)
        return protocol.parse_index(video_id, await self._infer(request, idempotent=False))

    async def search(self, video: VideoLike | None = None, *, video_id: str | None = None, top_k: int = 10,
                     rerank: float | str | None = 0.1, candidates: int | None = None,
                     filter: str | None = None) -> SearchResult:
        request = protocol.search_request(video, video_id, top_k, rerank, candidates, filter)
        began = time.perf_counter()
        result = protocol.parse_search(await self._infer(request, idempotent=True))
        result.timings_ms["round_trip"] = (time.perf_counter() - began) * 1000.0
        return result

    async def search_text(self, text: str, top_k: int = 10, filter: str | None = None) -> SearchResult:
        """See VideoSearchClient.search_text."""
        request = protocol.search_text_request(text, top_k, filter)
        began = time.perf_counter()
        result = protocol.parse_search_text(await self._infer(request, idempotent=True))
        result.timings_ms["round_trip"] = (time.perf_counter() - began) * 1000.0
        return result

    async def delete(self, video_id: str) -> bool:
        return protocol.parse_delete(await self._infer(protocol.delete_request(video_id), idempotent=False))

    async def thumbnails(self, video_ids: Iterable[str]) -> dict[str, bytes]:
        """See VideoSearchClient.thumbnails."""
        request = protocol.thumbnails_request(list(video_ids))
        return protocol.parse_thumbnails(request, await self._infer(request, idempotent=True))

    async def stats(self) -> dict:
        return protocol.parse_report(await self._infer(protocol.stats_request("stats"), idempotent=True))
