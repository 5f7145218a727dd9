"""Local Milvus processes on 127.0.0.1: the embedded Milvus Lite server and the Milvus 2.3.5 standalone
server.

Only one process may open a Milvus Lite data directory, while Triton runs every python model instance as its
own process; so `dnsvr serve` starts one `milvus-lite server` and every model instance and CLI talks to it by
URI.  `MilvusStandaloneServer` runs the real Milvus 2.3.5 server shipped by the `milvus` wheel (binary
vectors, HNSW, BIN_IVF_FLAT) for tests and benchmarks.

Both are context managers: start on a free port under a guard (`dnsvr.serving.local.guard`: the server dies
with this process, however it dies), wait until a client can list collections, stop by signalling the whole
process group (the guard, the wrapper script and the server it spawned), never leaving orphans.

    with MilvusLiteServer(data_dir) as server:
        store = VideoStore.open(server.uri, ...)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from dnsvr.serving.local.guard import guarded
from dnsvr.serving.local.isolated_milvus import isolated_command, socket_answers, socket_path_for
from dnsvr.serving.local.milvus_standalone_launcher import PORT_TAKEN, taken_port
from dnsvr.serving.local.processes import (
    LOOPBACK,
    descendants,
    free_port,
    lock_holders,
    process_start_time,
    still_same_process,
)
from dnsvr.training.files import atomic_write_text

LOG = logging.getLogger("dnsvr.serve")

STANDALONE_COMPONENTS = (
    "rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode",
)
# the `milvus-server` options of the ports its components listen on besides the proxy's (`--root-coord-port` ...)
STANDALONE_PORT_OPTIONS = (
    "root_coord_port", "proxy_internal_port", "query_coord_port", "query_node_port", "index_coord_port",
    "index_node_port", "data_coord_port", "data_node_port",
)


TIME_TICK_MS = 50  # the local server's proxy.timeTickInterval (see MilvusStandaloneServer.command)
# the local server's common.session.ttl: at 10 s a 100k fill on 2 cores let the live server's leases expire and
# it stopped serving; at 60 s it did not (benchmarks/results/serving_views_100k.md, store_memory_100k.md)
SESSION_TTL_S = 60
# the local server's segment settings (docs/storage.md, "The server's memory at 100k videos with crop views"):
# sealed segments of 128 MB instead of 512 and no interim IVF index on growing segments (so a growing segment is
# scanned exactly).  A 100k-video fill with crop views peaked at 15.2 GiB instead of 18.9-20.7, which had the
# kernel kill the server beside Triton on a 23 GB machine (store_memory_100k_small_segments.md), though not
# always (serving_views_100k_default.md); at 10k they made the search with crop views faster (p50 32.7 -> 18.5 ms
# without re-ranking, serving_views_10k_segment_settings.md).  The server reads environment variables over
# these (DATACOORD_SEGMENT_MAXSIZE=512), so an operator can restore the wheel's defaults.
SEGMENT_SETTINGS = {"dataCoord.segment.maxSize": "128", "queryNode.segcore.interimIndex.enableIndex": "false"}
# queryNode.mmapDirPath, which the server reads from this variable (its configuration template has no such key), has
# the query node memory-map its sealed segments.  Milvus 2.3.5 cannot map a VARCHAR column that holds only empty
# strings (mmap of 0 bytes: "Assert data_ != MAP_FAILED", Column.h:85; fixed upstream after 2.3.5,
# milvus-io/milvus#31418), and a store's `thumbnail` and `source_uri` often hold nothing: such a sealed segment never
# loads.  Its rows are still answered from the growing copy, so nothing shows, until a restart: then its
# collection cannot load at all (docs/storage.md, "Why it is refused").  So a non-empty value refuses
# the server (`refuse_unsafe_environment`); an empty one is off.
MMAP_VARIABLE = "QUERYNODE_MMAPDIRPATH"


def _free_port_outside(used: set[int]) -> int:
    """A port free now that is none of `used` (ports chosen for this server but not bound yet)."""
    port = free_port()
    while port in used:
        port = free_port()
    return port


class ServerStartError(RuntimeError):
    """A local Milvus process exited or did not become ready in time; the message holds its log tail."""


class UnsafeServerSetting(ValueError):
    """The environment asks the local Milvus server for a setting that loses access to stored data."""


def refuse_unsafe_environment(environment: Mapping[str, str]) -> None:
    """Raise UnsafeServerSetting when `environment` (what the server would inherit) turns on memory-mapped segments
    (MMAP_VARIABLE non-empty), which the Milvus 2.3.5 server cannot load when a column is all empty strings."""
    if environment.get(MMAP_VARIABLE):
        raise UnsafeServerSetting(
            f"{MMAP_VARIABLE}={environment[MMAP_VARIABLE]} is refused: the local Milvus 2.3.5 server cannot "
            "memory-map a segment whose text column holds only empty strings (a video's thumbnail or source URI "
            "often is), so such a segment never loads and, after a restart, neither does its collection "
            f"(milvus-io/milvus#31418, fixed after 2.3.5; docs/storage.md). Unset {MMAP_VARIABLE} (or set it empty).")


class _LocalMilvusProcess:
    """Shared life cycle: spawn in a new process group, poll readiness, signal the group to stop."""

    name = "milvus"
    label = "Milvus"  # in the supervisor's events

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, startup_timeout_s: float = 60.0):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.{self.name}.log"
        self._process: subprocess.Popen | None = None
        self.start_exit_code: int | None = None  # the exit code of a process that ended before it was ready

    @property
    def uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Before spawning: make sure the data directory can be used (subclasses)."""

    def environment(self) -> dict[str, str]:
        """Variables the server process gets on top of this process's environment (subclasses)."""
        return {}

    def start(self) -> _LocalMilvusProcess:
        """Spawn the server and wait until it answers; on failure raise ServerStartError, nothing running."""
        if self.running:
            return self
        self.start_exit_code = None
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                guarded(self.command()), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **self.environment()},
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The exit code of a process that ended (None while it runs or before it started)."""
        return None if self._process is None else self._process.poll()

    def restart(self) -> _LocalMilvusProcess:
        """Start again on the same port and data directory, after whatever is left of the old group is killed."""
        self.kill()
        return self.start()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _diagnostics(self) -> str:
        """What a start error shows: the launcher's log tail (subclasses add the server's own logs)."""
        return self.log_tail()

    def _wait_ready(self) -> None:
        from pymilvus import MilvusClient

        deadline = time.monotonic() + self.startup_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.start_exit_code = self._process.returncode
                raise ServerStartError(
                    f"{self.name} exited with code {self._process.returncode} before it was ready "
                    f"(log {self.log_path}):\n{self._diagnostics()}"
                )
            if self._server_died():
                raise ServerStartError(f"{self.name}: the server process died before it was ready (log "
                                       f"{self.log_path} and the logs of {self.data_dir}):\n{self._diagnostics()}")
            if self._port_open():
                try:
                    client = MilvusClient(uri=self.uri, timeout=5)
                    client.list_collections(timeout=5)
                    client.close()
                    return
                except Exception as error:  # not ready yet: the proxy answers before its coordinators are up
                    last_error = error
            time.sleep(0.25)
        raise ServerStartError(
            f"{self.name} on {self.uri} not ready after {self.startup_timeout_s:.0f} s ({last_error}); "
            f"log {self.log_path}:\n{self._diagnostics()}"
        )

    def _server_died(self) -> bool:
        """Whether the server under a still-running launcher is known dead (subclasses whose launcher does not
        exit with its server)."""
        return False

    def _port_open(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((LOOPBACK, self.port)) == 0

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self._process.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process group, wait for all of it to exit, SIGKILL what is left after `timeout_s`."""
        if self._process is None:
            return
        self._signal_group(signal.SIGTERM)
        self._wait_group_gone(timeout_s)
        self.kill()

    def _wait_group_gone(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._group_alive():
            time.sleep(0.1)

    def _group_alive(self) -> bool:
        self._process.poll()  # reap the wrapper so that a zombie does not count
        try:
            os.killpg(self._process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash would (tests, fault injection), and wait until all of it is
        gone: a server still dying holds its ports, and one started now would listen elsewhere."""
        if self._process is None:
            return
        self._signal_group(signal.SIGKILL)
        self._process.wait(timeout=10)
        self._wait_group_gone(10.0)
        self._process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class MilvusLiteServer(_LocalMilvusProcess):
    """`milvus-lite server` (Milvus Lite 3.x) serving one data directory on 127.0.0.1:port over gRPC.

    Milvus Lite holds an flock on `<data_dir>/LOCK` while a process has the directory open (released when the
    process dies).  Each start records its launcher in `<data_dir>.owner.json`; a later start that finds the
    lock held looks there: a holder whose launcher is gone (an orphan of a killed `dnsvr serve`) is stopped
    and the start goes on, logged; a holder whose launcher lives is reported by a ServerStartError naming both.
    """

    name = "milvus-lite"
    label = "Milvus Lite"
    LOCK = "LOCK"  # Milvus Lite's lock file in its data directory

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, startup_timeout_s: float = 60.0,
                 max_workers: int = 10):
        super().__init__(data_dir, port, startup_timeout_s)
        self.max_workers = max_workers

    @property
    def owner_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.owner.json"

    def prepare(self) -> None:
        """Clear the lock of an orphaned holder (module docstring), or refuse a directory in use."""
        holders = lock_holders(self.data_dir / self.LOCK)
        if not holders:
            return
        try:
            owner = json.loads(self.owner_path.read_text())
        except (OSError, ValueError):
            owner = {}
        launcher = owner.get("launcher_pid")
        if launcher and still_same_process(launcher, owner.get("launcher_start", "")):
            raise ServerStartError(f"{self.data_dir} is in use by process {holders} of the dnsvr process {launcher} "
                                   "(stop it, or use another --store)")
        LOG.warning("%s: clearing the lock of orphaned process(es) %s (their launcher %s is gone)",
                    self.data_dir, holders, launcher or "is unknown")
        for pid in holders:
            try:
                os.killpg(os.getpgid(pid), signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 10.0
        while lock_holders(self.data_dir / self.LOCK) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in lock_holders(self.data_dir / self.LOCK):
            os.killpg(os.getpgid(pid), signal.SIGKILL)

    def start(self) -> MilvusLiteServer:
        super().start()
        record = {"launcher_pid": os.getpid(), "launcher_start": process_start_time(os.getpid()),
                  "server_pid": self.pid, "port": self.port}
        atomic_write_text(self.owner_path, json.dumps(record) + "\n")
        return self

    def command(self) -> list[str]:
        """`milvus-lite server`, run through `lite_engine` (its table of open collections under a lock)."""
        return [
            sys.executable, "-m", "dnsvr.serving.store.lite_engine", "server", "--data-dir", str(self.data_dir),
            "--host", LOOPBACK, "--port", str(self.port), "--max-workers", str(self.max_workers),
        ]


def serving_lite_uri(data_dir: str | os.PathLike) -> str | None:
    """The URI of the live `milvus-lite server` that holds `data_dir` open (from its owner record), None when
    nothing holds it; ServerStartError when an unknown process holds it."""
    data_dir = Path(data_dir).expanduser().resolve()
    holders = lock_holders(data_dir / MilvusLiteServer.LOCK)
    if not holders:
        return None
    try:
        owner = json.loads((data_dir.parent / f"{data_dir.name}.owner.json").read_text())
    except (OSError, ValueError):
        owner = {}
    if owner.get("port") and still_same_process(owner.get("launcher_pid", 0), owner.get("launcher_start", "")):
        return f"http://{LOOPBACK}:{owner['port']}"
    raise ServerStartError(f"{data_dir} is open in process {holders}, which serves no known port: stop it first")


def serving_server_uri(data_dir: str | os.PathLike) -> str | None:
    """The `unix:` URI of the live isolated Milvus server over `data_dir` (the one `dnsvr serve` starts by
    default), None when none answers on its socket."""
    path = socket_path_for(data_dir)
    return f"unix:{path}" if socket_answers(path) else None


class MilvusStandaloneServer(_LocalMilvusProcess):
    """The real Milvus 2.3.5 standalone server of the `milvus` wheel (`milvus-server`), for tests, benchmarks.

    Every component advertises 127.0.0.1.  The etcd it embeds would listen on the fixed peer port 2380 (one
    such server per machine); each server here gets its own etcd configuration instead, `<data_dir>.etcd.yaml`
    (client and peer URLs on 127.0.0.1, free ports chosen at the first start and kept for restarts, since etcd
    remembers its peer URL), which Milvus reads from the ETCD_CONFIG_PATH environment variable (its
    `etcd.config.path` setting; the wheel's --extra-config only rewrites keys of its template, and this one is
    not there).  Its other components get fresh ports from the kernel at every start, none of them a port of the
    start before: the coordinators find each other by the addresses in their etcd sessions, and after a crash the
    dead sessions would live on for `session_ttl_s`; the wrapper's own choice (the lowest free port from a fixed
    base) gave one component another's old port, and the proxy, calling a service that port does not serve,
    panicked.  The fresh ports also tell the dead sessions apart: the launcher revokes them while the server
    starts (`dnsvr.serving.local.etcd_sessions`), so a restart after kill -9 takes seconds whatever the TTL, and
    the TTL can be long enough (60 s) that a server whose 2 cores are busy building its indexes keeps its own.
    Its launcher keeps waiting after the server binary dies; that is noticed and reported at once.  The launcher
    runs through `dnsvr.serving.local.milvus_standalone_launcher`, which makes its port test agree with the
    server's (without it, a port in TIME-WAIT after a stop moved the proxy to the next port).
    Milvus 2.3.5 has no setting for the listen address of its gRPC servers: they accept
    connections on all interfaces (measured with `ss -ltn`).  Run it only on a trusted host or behind a
    firewall; production uses a real deployment.
    """

    name = "milvus-server"
    label = "Milvus server"
    PORT_ATTEMPTS = 4

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, startup_timeout_s: float = 120.0,
                 session_ttl_s: int = SESSION_TTL_S, isolated: bool = False, time_tick_ms: int = TIME_TICK_MS,
                 clear_stale_sessions: bool = True, extra_config: dict[str, str] | None = None):
        refuse_unsafe_environment(os.environ)
        super().__init__(data_dir, port, startup_timeout_s)
        # more `--extra-config KEY=VALUE` (keys of the wheel's template), over SEGMENT_SETTINGS
        self.extra_config = dict(extra_config or {})
        self.session_ttl_s = session_ttl_s
        self.clear_stale_sessions = clear_stale_sessions  # False: a restart waits out a killed server's sessions
        self.time_tick_ms = time_tick_ms
        self.isolated = isolated
        self.socket_path = socket_path_for(self.data_dir) if isolated else None
        self._seen_server = False  # the server binary was seen running during this start
        self._proxy_port_given = port is not None
        self._served = False  # a start succeeded: clients may know the proxy port
        self.component_ports: dict[str, int] = {}  # --root-coord-port ... of the current start

    @property
    def etcd_config_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.etcd.yaml"

    def prepare(self) -> None:
        """Choose this start's component and metrics ports, none of them a port of the start before nor of the
        embedded etcd; write the etcd's configuration on free loopback ports, once per data directory."""
        self._seen_server = False
        if not self.etcd_config_path.exists():
            self._write_etcd_config(exclude={self.port})
        used = set(self.component_ports.values()) | {self.port, *self._etcd_ports()}
        self.component_ports = {}
        for option in (*STANDALONE_PORT_OPTIONS, "metrics_port"):
            self.component_ports[option] = _free_port_outside(used)
            used.add(self.component_ports[option])

    def start(self) -> MilvusStandaloneServer:
        """As `_LocalMilvusProcess.start`; a port taken between its choice and the launcher's bind (by another
        process's connection) is chosen again, up to `PORT_ATTEMPTS` starts, unless clients already know it (a
        proxy port given or served before) or etcd remembers it."""
        for attempt in range(1, self.PORT_ATTEMPTS + 1):
            try:
                super().start()
                self._served = True
                return self
            except ServerStartError:
                if self.start_exit_code != PORT_TAKEN or attempt == self.PORT_ATTEMPTS or not self._choose_again():
                    raise
        raise AssertionError("unreachable")

    def _choose_again(self) -> bool:
        """After a PORT_TAKEN exit: whether the port the launcher named may be chosen again (the proxy's, here)."""
        taken = taken_port(self.log_tail(1))
        LOG.warning("%s: port %s is taken; choosing again", self.name, taken)
        if taken is None or taken in self._etcd_ports():
            return False
        if taken == self.port:
            if self._proxy_port_given or self._served:
                return False
            self.port = free_port()
        return True

    def _write_etcd_config(self, exclude: set[int]) -> None:
        client = _free_port_outside(exclude)
        peer = _free_port_outside(exclude | {client})
        atomic_write_text(self.etcd_config_path, "\n".join([
            "name: dnsvr",
            f"listen-client-urls: http://{LOOPBACK}:{client}",
            f"advertise-client-urls: http://{LOOPBACK}:{client}",
            f"listen-peer-urls: http://{LOOPBACK}:{peer}",
            f"initial-advertise-peer-urls: http://{LOOPBACK}:{peer}",
            f"initial-cluster: dnsvr=http://{LOOPBACK}:{peer}",
            "",
        ]))

    def environment(self) -> dict[str, str]:
        return {"ETCD_CONFIG_PATH": str(self.etcd_config_path)}

    @property
    def uri(self) -> str:
        return f"unix:{self.socket_path}" if self.isolated else super().uri

    def _port_open(self) -> bool:
        return socket_answers(self.socket_path) if self.isolated else super()._port_open()

    def _etcd_ports(self) -> tuple[int, int]:
        """(client, peer) ports of the embedded etcd, from its configuration."""
        found = {}
        for line in self.etcd_config_path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("listen-client-urls", "listen-peer-urls"):
                found[key] = int(value.rsplit(":", 1)[1])
        if len(found) != 2:
            raise ServerStartError(f"{self.etcd_config_path} lacks listen-client-urls or listen-peer-urls")
        return found["listen-client-urls"], found["listen-peer-urls"]

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "dnsvr.serving.local.milvus_standalone_launcher",
                   "--data", str(self.data_dir), "--proxy-port", str(self.port),
                   "--etcd-port", str(self._etcd_ports()[0])]
        for option, port in self.component_ports.items():
            command += [f"--{option.replace('_', '-')}", str(port)]
        command += [] if self.clear_stale_sessions else ["--keep-stale-sessions"]
        for component in STANDALONE_COMPONENTS:
            command += ["--extra-config", f"{component}.ip={LOOPBACK}"]
        # how long etcd keeps a session whose keep-alives stop (the launcher clears a killed server's at once)
        command += ["--extra-config", f"common.session.ttl={self.session_ttl_s}"]
        # a Strong read and a delete by filter wait for the proxy's next time tick (200 ms by default): one index
        # or delete is 3-4 such waits; at 50 ms the idle server costs 3.3 % of a core instead of 2.0 %
        # (docs/storage.md, "Connecting"; benchmarks/results/load_soak.md)
        command += ["--extra-config", f"proxy.timeTickInterval={self.time_tick_ms}"]
        for key, value in {**SEGMENT_SETTINGS, **self.extra_config}.items():
            command += ["--extra-config", f"{key}={value}"]
        return isolated_command(command, self.socket_path, self.port) if self.isolated else command

    def _diagnostics(self) -> str:
        """The launcher's log tail, then the tails of the server's own stdout and stderr (in `<data>/logs`)."""
        parts = [super()._diagnostics()]
        for stream in ("stdout", "stderr"):
            path = self.data_dir / "logs" / f"milvus-{stream}.log"
            try:
                lines = path.read_text(errors="replace").splitlines()[-15:]
            except OSError:
                continue
            parts.append(f"--- {path} (last {len(lines)} lines):\n" + "\n".join(lines))
        return "\n".join(parts)

    def _server_died(self) -> bool:
        """The `milvus run standalone` binary was seen under the launcher and is gone (the launcher lives on)."""
        alive = False
        for pid in descendants(self._process.pid):
            try:
                alive |= Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"run", b"standalone"]
            except OSError:
                continue
        self._seen_server |= alive
        return self._seen_server and not alive
