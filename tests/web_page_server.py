"""For the search page's tests: its application served by uvicorn in a thread on a free 127.0.0.1 port, and a
stand-in client whose hits carry matched segments, as the client's search hits do."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import uvicorn
from dnsvr.client import NoTextSearch, NotFound, SearchHit, SearchResult, Segment
from dnsvr.serving.web.app import create_app
from dnsvr.serving.web.uploads import UploadLimit


@contextmanager
def running_page(client, limit: UploadLimit) -> Iterator[str]:
    """Serve `create_app(client, limit)` until the block ends; yields its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(client, limit), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the page's server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


class StandInClient:
    """Answers like VideoSearchClient; records what each search was given."""

    def __init__(self) -> None:
        self.searched: list = []

    def search(self, video=None, *, video_id=None, top_k=10, rerank=0.1) -> SearchResult:
        self.searched.append(video if video_id is None else video_id)
        if video_id == "missing":
            raise NotFound("missing: no indexed video has this id")
        hits = [SearchHit("near", 0.97, True, 0.9, 0.7, (Segment(1.0, 3.0, 0.0, 2.0, 0.9),)),
                SearchHit("far", 0.5, False, 0.5, None)]
        return SearchResult(hits[:top_k], {"total": 12.5})

    def search_text(self, text, top_k=10, filter=None) -> SearchResult:
        raise NoTextSearch("the model pack has no text-video student")

    def thumbnails(self, video_ids) -> dict[str, bytes]:
        """A stored thumbnail for "near" only ("far" was indexed without one)."""
        from dnsvr.serving.pipelines.thumbnails import video_thumbnail

        near = video_thumbnail(np.full((1, 224, 224, 3), 200, np.uint8))
        return {video_id: near for video_id in video_ids if video_id == "near"}

    def stats(self) -> dict:
        return {"videos": 2, "frames": 9}

    def health(self):
        return type("Health", (), {"ok": True})()
