"""`dnsvr serve`'s health endpoint for load balancers and orchestrators: plain HTTP GET on its own port.

    GET /live   200 while the `dnsvr serve` process runs its loop
    GET /ready  200 when it can serve, else 503; the body is the JSON of `Supervisor.readiness()` either way
                (Triton and every model ready, every python instance alive, the local Milvus running, the store
                answering a round trip)

Triton's own `/v2/health/ready` says nothing of the store, which is why this endpoint exists; it reveals no
data (model names, booleans, an error's text).  Readiness is computed at most once per `cache_s`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HealthServer:
    """Serves /live and /ready (module docstring) on host:port in a thread; port 0 picks a free one."""

    def __init__(self, readiness: Callable[[], dict], host: str = "127.0.0.1", port: int = 0,
                 cache_s: float = 1.0) -> None:
        self.readiness, self.cache_s = readiness, cache_s
        self._cached: tuple[float, dict] | None = None
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                if self.path == "/live":
                    status, body = 200, {"live": True}
                elif self.path == "/ready":
                    body = owner.report()
                    status = 200 if body.get("ready") else 503
                else:
                    status, body = 404, {"error": "GET /live or /ready"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:  # probes every few seconds: no access log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="dnsvr-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def report(self) -> dict:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self.cache_s:
                try:
                    self._cached = (time.monotonic(), self.readiness())
                except Exception as error:
                    self._cached = (time.monotonic(), {"ready": False, "error": f"{type(error).__name__}: {error}"})
            return self._cached[1]

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
