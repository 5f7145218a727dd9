"""The whole service on this machine: a local Milvus + Triton over the model repository, started and
stopped together (what `dnsvr serve`, `dnsvr demo`, the tests and the benchmark run).

    with LocalService("model_repository", store="var/milvus.db") as service:
        client = VideoSearchClient(service.grpc_url)

Start-up: export the bundled models if the repository has no manifest.json, or export them again if the files it
was exported from have changed (a retrained pack): `dnsvr.export.repository.ensure_exported`, the one writer of
the repository; start the local engine on the store path unless `store` is a Milvus server URI: the Milvus 2.3.5
server of the `milvus` wheel in a network namespace of its own, reached through a Unix socket (engine "server",
what "auto" picks for a new store: top-1000 coarse searches ~10x faster, docs/storage.md) or `milvus-lite server`
(engine "lite", for a `.db` path: only one process may open a Lite data directory, and every Triton python model
instance is its own process); `engine_choice` holds the rule. Start Triton on the repository as exported, with
DNSVR_MILVUS_URI pointing every model instance at the store (and DNSVR_MILVUS_RECONNECT_S: a write or read
that finds the local Milvus restarting waits for it); then the supervisor (a dead local Milvus restarted,
dead python instances replaced) and the health endpoint. Every server runs under a guard: it dies with this
process, however this process dies. Stop: health, supervisor, Triton, then Milvus; nothing is left running.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from dnsvr.export.manifest import ManifestError, read_manifest
from dnsvr.export.repository import ensure_exported
from dnsvr.serving.local.engine_choice import choose_engine
from dnsvr.serving.local.health import HealthServer
from dnsvr.serving.local.milvus_servers import MilvusLiteServer, MilvusStandaloneServer, refuse_unsafe_environment
from dnsvr.serving.local.supervisor import Supervisor
from dnsvr.serving.local.triton_server import TlsFiles, TritonServer
from dnsvr.serving.pipelines.access import token_digest
from dnsvr.serving.store.settings import is_server_uri, redact_uri
from dnsvr.training import paths
from dnsvr.training.files import atomic_write_text


def served_models(repository: Path) -> list[str]:
    """Every model the exported repository serves (networks, then pipelines); ManifestError when its export
    has no pipelines (weights without a complete set of networks)."""
    manifest = read_manifest(repository)
    if not manifest.get("pipelines"):
        raise ManifestError(f"{repository} has no pipelines: its export ({manifest.get('source')}) lacks networks "
                            "they call; export a complete pack (`dnsvr export --weights ... --out ...`)")
    return [*manifest["served"], *manifest["pipelines"]]


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LOCAL_RECONNECT_S = 10.0  # the models' DNSVR_MILVUS_RECONNECT_S: a supervised Milvus Lite is back in 1-3 s
TOKEN_PATTERN = "^dnsvr-token$"  # the request header Triton hands the pipelines (`pipelines.access`)


class InsecureBind(ValueError):
    """A non-loopback address without TLS and an access token, and no explicit `insecure`."""


class LocalService:
    """Milvus (a local `engine` on `store`, or the server at a URI) + Triton, supervised, with a health endpoint.

    repository: model repository; weights: what to export when it has none (default the bundled pack).
    store: a local data path (default: the default store of the engine) or a server URI (http(s)://host:port,
    unix:/path); engine: what serves a local path, "auto" (the server, or Milvus Lite for a `.db` path),
    "server" (the Milvus 2.3.5 server) or "lite" (Milvus Lite), `engine_choice.choose_engine`; isolate: run the
    server in its own network namespace (False: on every interface, trusted hosts only); prefix: the store's
    collection prefix.  Ports: None = free ones.  env: more environment for the python models
    (e.g. DNSVR_MAX_FRAMES).  log_dir: Triton's log (default a temporary file).
    host: Triton's gRPC listen address (default 127.0.0.1).  tls: gRPC TLS files.  token: the access token
    callers must send (index and delete; search and stats too unless `open_search`).  A host other than
    loopback needs TLS and a token unless `insecure`.  health_port: the /live and /ready endpoint
    (`dnsvr.serving.local.health`, on `host`; None: none).  supervise: restart a dead local Milvus, replace
    dead python instances (`dnsvr.serving.local.supervisor`).  The admin APIs of Triton (model repository,
    config, logging, trace, statistics) answer only this process (a per-run key).
    """

    def __init__(
        self,
        repository: str | Path = "model_repository",
        *,
        store: str | Path | None = None,
        engine: str = "auto",
        isolate: bool = True,
        prefix: str | None = None,
        weights: list[str] | None = None,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        env: Mapping[str, str] | None = None,
        log_dir: str | Path | None = None,
        startup_timeout_s: float = 300.0,
        host: str = "127.0.0.1",
        tls: TlsFiles | None = None,
        token: str | None = None,
        open_search: bool = False,
        insecure: bool = False,
        health_port: int | None = None,
        supervise: bool = True,
    ) -> None:
        if host not in LOOPBACK_HOSTS and not insecure and (tls is None or not token):
            raise InsecureBind(f"refusing to listen on {host} without TLS and an access token: give a certificate "
                               "and key, and a token, or say insecure (--insecure) to accept plain, open access")
        self.repository = Path(repository).resolve()
        self.choice = None if store is not None and is_server_uri(str(store)) else \
            choose_engine(engine, store, isolate)
        self.store = self.choice.store if self.choice else str(store)
        if self.choice is not None and self.choice.engine == "server":
            refuse_unsafe_environment(os.environ)  # before any export or start, as `dnsvr serve`'s usage error
        self.prefix = prefix
        self.weights = weights or ["bundled"]
        self.ports = dict(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port)
        self.env = dict(env or {})
        self.log_dir = Path(log_dir) if log_dir else None
        self.startup_timeout_s = startup_timeout_s
        self.host, self.tls, self.token, self.open_search = host, tls, token, open_search
        self.health_port, self.supervise = health_port, supervise
        self.milvus: MilvusLiteServer | MilvusStandaloneServer | None = None
        self.triton: TritonServer | None = None
        self.supervisor: Supervisor | None = None
        self.health: HealthServer | None = None
        self.models: list[str] = []

    @property
    def engine_label(self) -> str:
        """What serves the store, with why, for start-up lines: "the Milvus server (private network namespace;
        the default engine)", "Milvus Lite (a store path ending in .db ...)", "the Milvus server at URI"."""
        if self.choice is None:
            return f"the Milvus server at {redact_uri(self.store)}"
        return f"{self.choice.label} [{self.choice.reason}]"

    @property
    def store_uri(self) -> str:
        return self.milvus.uri if self.milvus else self.store

    @property
    def grpc_url(self) -> str:
        return self.triton.grpc_url

    def _model_environment(self) -> dict[str, str]:
        env = {**self.env, paths.MILVUS_URI: self.store_uri}
        if self.milvus is not None:  # the supervisor restarts it: a model's write waits for it rather than failing
            env.setdefault(paths.MILVUS_RECONNECT_S, str(LOCAL_RECONNECT_S))
        if self.prefix:
            env[paths.MILVUS_PREFIX] = self.prefix
        if self.token:
            env[paths.ACCESS_TOKEN_SHA256] = token_digest(self.token)
            env[paths.OPEN_SEARCH] = "1" if self.open_search else "0"
        return env

    def probe_store(self) -> None:
        """A round trip to the store the pipelines use (raises when it does not answer)."""
        from dnsvr.serving.pipelines.store_access import ServiceStore

        stores = ServiceStore(self.repository, {"store_uri": self.store_uri, "store_prefix": self.prefix or ""})
        try:
            stores.get(create=False).server_version  # noqa: B018 - one call to the server
            stores.existing()
        finally:
            stores.close()

    def start(self, on_export: Callable[[str], None] | None = None) -> LocalService:
        """Export if needed, start the store, Triton, the supervisor and the health endpoint; on failure
        nothing is left running."""
        try:
            ensure_exported(self.repository, self.weights, on_export)
            self.models = served_models(self.repository)
            if self.choice is not None:
                data_dir = Path(self.store).expanduser()
                self.milvus = (MilvusLiteServer(data_dir) if self.choice.engine == "lite" else
                               MilvusStandaloneServer(data_dir, isolated=self.choice.isolated)).start()
            log_path = self.log_dir / "triton.log" if self.log_dir else None
            self.triton = TritonServer(self.repository, env=self._model_environment(), log_path=log_path,
                                       startup_timeout_s=self.startup_timeout_s, host=self.host, tls=self.tls,
                                       admin_key=secrets.token_hex(16), forward_headers=TOKEN_PATTERN,
                                       reloadable=True, **self.ports).start()
            self.supervisor = Supervisor(self, store_probe=self.probe_store)
            if self.supervise:
                self.supervisor.start()
            if self.health_port is not None:
                self.health = HealthServer(self.supervisor.readiness, self.host, self.health_port).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the health endpoint, the supervisor, Triton, then Milvus (safe to call twice)."""
        try:
            if self.health is not None:
                self.health.stop()
                self.health = None
            if self.supervisor is not None:
                self.supervisor.stop()
                self.supervisor = None
            if self.triton is not None:
                self.triton.stop()
        finally:
            self.triton = None
            if self.milvus is not None:
                self.milvus.stop()
                self.milvus = None

    def write_state(self, path: Path) -> None:
        """Record the endpoints for other commands (`dnsvr index/search` read the gRPC URL from it)."""
        state = {"grpc_url": self.triton.grpc_url, "http_url": self.triton.http_url,
                 "metrics_url": self.triton.metrics_url, "store_uri": self.store_uri, "pid": os.getpid(),
                 "health_url": f"http://{self.triton.grpc_url.rsplit(':', 1)[0]}:{self.health.port}"
                 if self.health else None, "tls": self.tls is not None}
        atomic_write_text(path, json.dumps(state, indent=2) + "\n")

    def __enter__(self) -> LocalService:
        return self if self.triton is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def read_state(path: Path | None = None) -> dict | None:
    """The endpoints `dnsvr serve` recorded, or None when no server recorded them (or it has exited)."""
    path = path or paths.state_path()
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return state
