"""The page's FastAPI application: the static page and a JSON API that calls the service through the client SDK.

Routes: `GET /` (the page), `/static/*` (its JS and CSS), `GET /api/stats`, `POST /api/search/upload` (the body is
the video itself), `GET /api/search/id`, `GET /api/search/text`, `GET /api/thumbnails/{key}/{index}`.  Every error
answers `{"error": message}` with a 4xx status for what the user can fix and 5xx for the service.  Each hit
carries the thumbnail the service stored when it indexed the video (`VideoSearchClient.thumbnails`), as a
`data:` URL, or null where it has none (the page then draws a placeholder).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

from dnsvr.client import (
    DnsvrError,
    Forbidden,
    InvalidVideo,
    NoTextSearch,
    NotFound,
    SearchResult,
    ServerUnavailable,
    VideoSearchClient,
)
from dnsvr.serving.web.thumbnails import ThumbnailStore
from dnsvr.serving.web.timeline import hit_timeline
from dnsvr.serving.web.uploads import QueryVideo, UploadLimit, UploadRejected, checked_video, read_upload
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

STATIC = Path(__file__).resolve().parent / "static"
ERROR_STATUS: dict[type[DnsvrError], int] = {
    InvalidVideo: 422, NotFound: 404, NoTextSearch: 409, Forbidden: 502, ServerUnavailable: 503}
NO_TEXT_SEARCH = "Text search is not available here: the served model pack has no text-video student (or the " \
                 "store holds no text-video vectors)."
TopK = Annotated[int, Query(ge=1, le=100)]


def rerank_policy(value: str) -> float | str:
    """The --rerank forms the client takes: a fraction ("0.1") or a policy string ("count:20")."""
    try:
        return float(value)
    except ValueError:
        return value


def hit_thumbnails(client: VideoSearchClient, result: SearchResult) -> dict[str, str]:
    """{video_id: data URL of its JPEG} of the hits the service has a thumbnail of; {} when it cannot say (the
    results are shown all the same)."""
    if not result.hits:
        return {}
    try:
        found = client.thumbnails([hit.video_id for hit in result.hits])
    except DnsvrError:
        return {}
    return {video_id: "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
            for video_id, jpeg in found.items()}


def result_json(result: SearchResult, query: dict, query_duration_s: float | None,
                thumbnails: dict[str, str]) -> dict:
    """A search result as the page draws it: the query, each hit with its scores, thumbnail (`thumbnails`:
    {video_id: data URL}) and timelines, timings."""
    hits = [{"video_id": hit.video_id, "score": hit.score, "reranked": hit.reranked,
             "coarse_score": hit.coarse_score, "selector_score": hit.selector_score,
             "thumbnail": thumbnails.get(hit.video_id), **hit_timeline(hit, query_duration_s)}
            for hit in result.hits]
    return {"query": query, "hits": hits, "timings_ms": result.timings_ms}


def create_app(client: VideoSearchClient, limit: UploadLimit, thumbnails: ThumbnailStore | None = None) -> FastAPI:
    """The application over `client`; uploads up to `limit`, query thumbnails kept in `thumbnails`."""
    thumbnails = thumbnails or ThumbnailStore()
    app = FastAPI(title="dnsvr", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UploadRejected)
    async def upload_rejected(request: Request, error: UploadRejected) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(DnsvrError)
    async def service_error(request: Request, error: DnsvrError) -> JSONResponse:
        message = NO_TEXT_SEARCH if isinstance(error, NoTextSearch) else f"{type(error).__name__}: {error}"
        return JSONResponse({"error": message}, status_code=ERROR_STATUS.get(type(error), 502))

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, item['loc'][1:]))}: {item['msg']}" for item in error.errors())
        return JSONResponse({"error": f"bad request: {problems}"}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/stats")
    def stats() -> dict:
        return {"stats": client.stats(), "healthy": client.health().ok, "max_upload": limit.describe()}

    @app.post("/api/search/upload")
    async def search_upload(request: Request, top_k: TopK = 10, rerank: str = "0.1") -> dict:
        limit.check_declared(request.headers.get("content-length"))
        data = await read_upload(request.stream(), limit)
        video: QueryVideo = await run_in_threadpool(checked_video, data)
        key = thumbnails.add(video.frames)
        result = await run_in_threadpool(client.search, video.data, top_k=top_k, rerank=rerank_policy(rerank))
        query = {"kind": "upload", "label": f"uploaded video ({len(data) / (1 << 20):.1f} MB)",
                 "duration_s": video.duration_s,
                 "thumbnails": [f"/api/thumbnails/{key}/{index}" for index in range(len(video.frames))]}
        return result_json(result, query, video.duration_s,
                           await run_in_threadpool(hit_thumbnails, client, result))

    @app.get("/api/search/id")
    def search_id(video_id: Annotated[str, Query(min_length=1)], top_k: TopK = 10, rerank: str = "0.1") -> dict:
        result = client.search(video_id=video_id, top_k=top_k, rerank=rerank_policy(rerank))
        query = {"kind": "id", "label": f"indexed video {video_id}", "duration_s": None, "thumbnails": []}
        return result_json(result, query, None, hit_thumbnails(client, result))

    @app.get("/api/search/text")
    def search_text(text: Annotated[str, Query(min_length=1)], top_k: TopK = 10) -> dict:
        result = client.search_text(text, top_k=top_k)
        query = {"kind": "text", "label": f"text: {text}", "duration_s": None, "thumbnails": []}
        return result_json(result, query, None, hit_thumbnails(client, result))

    @app.get("/api/thumbnails/{key}/{index}")
    def thumbnail(key: str, index: int) -> Response:
        jpeg = thumbnails.get(key, index)
        if jpeg is None:
            return JSONResponse({"error": "no such thumbnail (the page keeps only recent queries)"}, status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    return app
