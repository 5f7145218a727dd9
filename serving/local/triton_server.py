"""Start, watch and stop the Triton Inference Server bundled in the `nvidia-pytriton` wheel, on the CPU.

    with TritonServer("model_repository") as server:        # cpu_local configs, free ports, ready on return
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

The server runs the repository's `configs/cpu_local.pbtxt` variants (python models running ONNX Runtime),
so the same repository serves production (GPU Triton) and local runs. The launcher
- finds `tritonserver` without importing pytriton, and prepares a backend folder holding the python backend
  with the stub built for this interpreter's X.Y (cached in ~/.cache/dnsvr, rebuilt when the wheel changes);
- starts it in its own process group with this venv's `bin/` first on PATH and libpython on LD_LIBRARY_PATH
  (so python models import this venv's numpy, onnxruntime and dnsvr), bound to 127.0.0.1 on free ports unless
  ports are given, its stdout/stderr going to a log file;
- waits until `/v2/health/ready` answers and every model is READY, or raises TritonStartError naming each
  model that failed with its reason (or quoting the log's tail when no model is to blame);
- stops it with SIGTERM to the whole group, SIGKILL after a grace period, then kills any descendant left
  (python stubs included) and removes its shared-memory regions.  It runs under a guard
  (`dnsvr.serving.local.guard`): if this Python process dies first, however it dies, the guard stops the
  server's whole process group; servers still running at interpreter exit are stopped.
"""

from __future__ import annotations

import atexit
import hashlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dnsvr.client import allocator
from dnsvr.serving.local.guard import guarded
from dnsvr.serving.local.processes import LOOPBACK, descendants, free_port, still_same_process
from dnsvr.training import paths

LOG_TAIL_LINES = 40
PORT_TAKEN = re.compile(r"(?i)already in use|address in use")
FAILURE_PATTERNS = (  # the server log's ways of saying a model did not load
    re.compile(r"failed to load '(?P<name>[^']+)' version \d+: (?P<reason>.*)"),
    re.compile(r"Poll failed for model directory '(?P<name>[^']+)': (?P<reason>.*)"),
    re.compile(r"^\|\s*(?P<name>\S+)\s*\|\s*\S+\s*\|\s*UNAVAILABLE: (?P<reason>.*?)\s*\|$"),
)
_RUNNING: set[TritonServer] = set()


# OpenMP worker threads that sleep as soon as their work is done instead of spinning for the next parallel
# region.  PyTorch's OpenMP threads (the uint8 resize of every decoded frame in `video_features`) otherwise spin
# between frames and take the cores from FFmpeg's decoding threads and the extractor beside them: a 30 s 720p
# query clip's round trip 1091 -> 744 ms on 2 cores in one run, 1115 -> 1063 in a second on a slower machine;
# its decode's CPU -25 / -22 % (benchmarks/results/embed.md, embed_stop38_run2.md).  An operator's own value wins.
THREAD_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}

# glibc's allocator kept from handing big buffers back to the system (`dnsvr.client.allocator`): a query video
# is copied several times on its way in (gRPC, Triton's request, the python model's bytes), each copy otherwise
# into fresh pages.  A search by a 30 s 720p clip (23.5 MB), round trip: 732 -> 696 ms, with the client's own
# setting 666 -> 637 ms (`benchmarks/results/upload.md`).  Left out when the operator sets either threshold.
ALLOCATOR_ENVIRONMENT = dict(allocator.ENVIRONMENT)

ADMIN_HEADER = "dnsvr-admin"
ADMIN_APIS = ("model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the gRPC endpoint's TLS: the server certificate and key, and (mutual TLS) the CA that
    client certificates must be signed by."""

    cert: Path
    key: Path
    client_ca: Path | None = None


class TritonStartError(RuntimeError):
    """The server exited, did not become ready in time, or some model failed to load."""

    def __init__(self, message: str, failed_models: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failed_models = list(failed_models)


@dataclass(frozen=True)
class TritonInstall:
    """Where the wheel keeps the server binary, its shared libraries, the python backend and the stubs."""

    binary: Path
    libs_dir: Path
    python_backend_dir: Path
    stubs_dir: Path

    def stub_for(self, python_version: str) -> Path:
        stub = self.stubs_dir / python_version / "triton_python_backend_stub"
        if not stub.is_file():
            available = sorted(p.name for p in self.stubs_dir.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"no triton_python_backend_stub for Python {python_version} (the wheel has {available})"
            )
        return stub


def find_triton() -> TritonInstall:
    """Locate the server in the installed `nvidia-pytriton` wheel (without importing pytriton)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the Triton server comes from the nvidia-pytriton wheel, which is not installed: "
            "pip install --no-deps nvidia-pytriton==0.7.0"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    server_root = package / "tritonserver"
    install = TritonInstall(
        binary=server_root / "bin" / "tritonserver",
        libs_dir=package.parent / "nvidia_pytriton.libs",
        python_backend_dir=server_root / "backends" / "python",
        stubs_dir=server_root / "python_backend_stubs",
    )
    for path in (install.binary, install.libs_dir, install.python_backend_dir, install.stubs_dir):
        if not path.exists():
            raise FileNotFoundError(f"incomplete nvidia-pytriton install: {path} is missing")
    return install


def prepare_backend_dir(install: TritonInstall, python_version: str, cache_dir: Path | None = None) -> Path:
    """A `--backend-directory` whose `python/` holds the python backend and the stub for `python_version`.

    Built once per (wheel files, X.Y) under the cache dir; concurrent callers build side by side and the
    first rename wins, so a half-copied folder is never used.
    """
    sources = [
        install.python_backend_dir / "libtriton_python.so",
        install.python_backend_dir / "triton_python_backend_utils.py",
        install.stub_for(python_version),
    ]
    fingerprint = hashlib.sha256()
    for source in sources:
        stat = source.stat()
        fingerprint.update(f"{source}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    root = (cache_dir or paths.cache_dir()) / "triton-backends"
    backend_dir = root / f"py{python_version}-{fingerprint.hexdigest()[:12]}"
    if (backend_dir / "python" / "triton_python_backend_stub").is_file():
        return backend_dir
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{backend_dir.name}-", dir=root))
    (building / "python").mkdir()
    for source in sources:
        shutil.copy2(source, building / "python" / source.name)
    try:
        building.rename(backend_dir)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        if not (backend_dir / "python" / "triton_python_backend_stub").is_file():
            raise
    return backend_dir


def server_environment(
    install: TritonInstall, python_bin_dir: Path, extra_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment plus `extra_env`, with PATH and LD_LIBRARY_PATH set for the server and
    THREAD_ENVIRONMENT's variables where neither sets them, and ALLOCATOR_ENVIRONMENT's where neither sets a glibc
    malloc threshold."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    if ".so" not in soname or not Path(libdir, soname).exists():
        raise RuntimeError(
            f"no shared libpython for {sys.executable} ({Path(libdir, soname)}); the python backend stub "
            "needs one (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared; Debian: the libpython3.X package)"
        )
    given = dict(os.environ) | dict(extra_env or {})
    defaults = THREAD_ENVIRONMENT | ({} if allocator.operator_settings(given) else ALLOCATOR_ENVIRONMENT)
    env = defaults | given
    env["PATH"] = os.pathsep.join([str(python_bin_dir), env.get("PATH", "")]).rstrip(os.pathsep)
    library_path = [str(install.libs_dir), libdir, env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in library_path if p)
    return env


def _choose_ports(requested: Sequence[int | None]) -> list[int]:
    """`requested` with each None replaced by a distinct free port."""
    given = {port for port in requested if port is not None}
    ports: list[int] = []
    for port in requested:
        if port is None:
            port = free_port()
            while port in given or port in ports:
                port = free_port()
        ports.append(port)
    return ports


def failed_models(log_text: str) -> dict[str, str]:
    """{model name: first line of the reason} for every model the server log reports as failing to load."""
    failures: dict[str, str] = {}
    for line in log_text.splitlines():
        for pattern in FAILURE_PATTERNS:
            match = pattern.search(line)
            if match and match["name"] not in failures:
                reason = match["reason"].split("\\n")[0].rstrip('"').strip()
                failures[match["name"]] = reason
    return failures


class TritonServer:
    """One local `tritonserver` process serving `repository`; a context manager that starts and stops it.

    repository: the model repository folder. model_config_name: the `configs/<name>.pbtxt` variant to use
    ("cpu_local"; None for plain config.pbtxt). grpc_port/http_port/metrics_port: None picks a free port.
    env: extra environment variables for the server and its python models (e.g. DNSVR_MILVUS_URI); the
    rest of this process's environment is passed through. log_path: file receiving the server's output
    (default: a temporary file, deleted after a clean stop, kept when start-up fails).
    startup_timeout_s: how long start() waits for readiness.
    exit_timeout_s: Triton's own wait for in-flight requests at shutdown. stop_grace_s: how long stop()
    waits after SIGTERM before SIGKILL. cache_dir: where the backend folder is kept (`paths.cache_dir()`).
    host: the gRPC listen address (HTTP and metrics always listen on 127.0.0.1: Triton's HTTP has no TLS).
    tls: gRPC TLS (`TlsFiles`).  admin_key: restrict the admin APIs (model repository and config, shared
    memory, statistics, trace, logging) on both endpoints to requests carrying the header `dnsvr-admin: KEY`
    (this launcher sends it).  forward_headers: a regex of request headers handed to the models as request
    parameters (the access token).  reloadable: explicit model control, every model loaded at start, so
    `reload_model` can replace a model's instances.  extra_args: further tritonserver flags.
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        model_config_name: str | None = "cpu_local",
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        env: Mapping[str, str] | None = None,
        log_path: str | Path | None = None,
        log_verbose: int = 0,
        startup_timeout_s: float = 60.0,
        exit_timeout_s: int = 5,
        stop_grace_s: float = 15.0,
        cache_dir: Path | None = None,
        host: str = LOOPBACK,
        tls: TlsFiles | None = None,
        admin_key: str | None = None,
        forward_headers: str | None = None,
        reloadable: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.repository = Path(repository).resolve()
        self.model_config_name = model_config_name
        self.grpc_port, self.http_port, self.metrics_port = grpc_port, http_port, metrics_port
        self.env = dict(env or {})
        self.log_path = Path(log_path) if log_path else None
        self._log_is_temporary = log_path is None
        self.log_verbose = log_verbose
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.stop_grace_s = stop_grace_s
        self.cache_dir = cache_dir
        self.host, self.tls, self.admin_key = host, tls, admin_key
        self.forward_headers, self.reloadable = forward_headers, reloadable
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._shm_prefix = f"dnsvr_{uuid.uuid4().hex[:12]}_"

    @property
    def grpc_url(self) -> str:
        """host:port to connect to (127.0.0.1 when the server listens on every interface)."""
        host = LOOPBACK if self.host in ("0.0.0.0", "::") else self.host
        return f"{host}:{self.grpc_port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        """The header that opens the restricted APIs (model repository, config, logging, ...)."""
        return {ADMIN_HEADER: self.admin_key} if self.admin_key else {}

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self, install: TritonInstall, backend_dir: Path) -> list[str]:
        """The tritonserver command line (ports must be chosen already)."""
        args = [
            str(install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--pinned-memory-pool-byte-size=0",
            "--allow-gpu-metrics=false",
            f"--http-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.model_config_name:
            args.append(f"--model-config-name={self.model_config_name}")
        if self.tls is not None:
            args += ["--grpc-use-ssl=true", f"--grpc-server-cert={self.tls.cert}", f"--grpc-server-key={self.tls.key}"]
            if self.tls.client_ca:
                args += [f"--grpc-root-cert={self.tls.client_ca}", "--grpc-use-ssl-mutual=true"]
        if self.admin_key:
            restricted = f"{','.join(ADMIN_APIS)}:{ADMIN_HEADER}={self.admin_key}"
            args += [f"--grpc-restricted-protocol={restricted}", f"--http-restricted-api={restricted}"]
        if self.forward_headers:
            args += [f"--grpc-header-forward-pattern={self.forward_headers}",
                     f"--http-header-forward-pattern={self.forward_headers}"]
        if self.reloadable:
            args += ["--model-control-mode=explicit", "--load-model=*"]
        return args + self.extra_args

    def start(self) -> TritonServer:
        """Launch the server and wait until it and every model are ready; raises TritonStartError.

        When ports were picked here and another process grabbed one before the server bound it, start()
        tries again with new ports (up to 3 times).
        """
        if self.running:
            raise RuntimeError(f"server already running (pid {self.pid})")
        if not self.repository.is_dir():
            raise FileNotFoundError(f"model repository not found: {self.repository}")
        install = find_triton()
        python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
        backend_dir = prepare_backend_dir(install, python_version, self.cache_dir)
        env = server_environment(install, Path(sys.executable).parent, self.env)
        requested = (self.grpc_port, self.http_port, self.metrics_port)
        given = [port for port in requested if port is not None]
        if len(set(given)) < len(given):
            raise ValueError(f"grpc, http and metrics ports must differ, got {requested}")
        attempts_left = 1 if given else 3
        while True:
            self.grpc_port, self.http_port, self.metrics_port = _choose_ports(requested)
            attempts_left -= 1
            try:
                return self._launch(install, backend_dir, env)
            except TritonStartError:
                port_taken = PORT_TAKEN.search(self.log_path.read_text(errors="replace"))
                if attempts_left == 0 or not port_taken:
                    raise

    def _launch(self, install: TritonInstall, backend_dir: Path, env: dict[str, str]) -> TritonServer:
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="dnsvr-triton-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                guarded(self.command(install, backend_dir), self.stop_grace_s),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        _RUNNING.add(self)
        try:
            self._wait_ready(began + self.startup_timeout_s)
        except BaseException:
            self._log_is_temporary = False
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - began
        return self

    def _get(self, path: str, method: str = "GET", timeout_s: float = 2.0) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(LOOPBACK, self.http_port, timeout=timeout_s)
        try:
            connection.request(method, path, headers=self.admin_headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def _wait_ready(self, deadline: float) -> None:
        while True:
            if not self.running:
                code = self.process.returncode
                self._raise_start_error(f"tritonserver exited with code {code} while starting")
            try:
                status, _ = self._get("/v2/health/ready")
                if status == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            if time.perf_counter() > deadline:
                self._raise_start_error(f"tritonserver not ready after {self.startup_timeout_s:.0f} s")
            time.sleep(0.05)
        _, body = self._get("/v2/repository/index", method="POST")
        # a model without a state was never asked for (--model-control-mode=explicit without --load-model)
        unready = [m for m in json.loads(body or b"[]") if m.get("state", "READY") != "READY"]
        if unready:
            names = [m["name"] for m in unready]
            reasons = "; ".join(f"{m['name']}: {m.get('state')} {m.get('reason', '')}" for m in unready)
            raise TritonStartError(f"models not ready: {reasons}", names)

    def model_states(self) -> dict[str, str]:
        """{model: state} from the repository index ("READY", "UNAVAILABLE", ...)."""
        _, body = self._get("/v2/repository/index", method="POST")
        return {m["name"]: m.get("state", "") for m in json.loads(body or b"[]")}

    def ready(self) -> bool:
        """Triton's own readiness (strict: every model ready)."""
        try:
            return self._get("/v2/health/ready")[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def reload_model(self, name: str, timeout_s: float = 300.0) -> None:
        """Replace the instances of `name`: unload, load (a load of a loaded model is a no-op in Triton 2.51,
        even when an instance's process died), then load every model left not ready (an ensemble over it).
        Requests to it meanwhile fail as unavailable, which clients retry.  Needs `reloadable=True`."""
        if not self.reloadable:
            raise RuntimeError("the server was not started with reloadable=True (explicit model control)")
        for action in ("unload", "load"):
            status, body = self._get(f"/v2/repository/models/{name}/{action}", method="POST", timeout_s=timeout_s)
            if status != 200:
                raise RuntimeError(f"{action} of model '{name}' failed ({status}): {body[:500]!r}")
        for other, state in self.model_states().items():
            if state != "READY":
                self._get(f"/v2/repository/models/{other}/load", method="POST", timeout_s=timeout_s)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the server log ('' before start)."""
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _raise_start_error(self, what: str) -> None:
        log_text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        failures = failed_models(log_text)
        lines = [f"{what} (repository {self.repository}, log {self.log_path})"]
        lines += [f"  model '{name}' failed to load: {reason}" for name, reason in failures.items()]
        if not failures:
            lines.append(self.log_tail())
        raise TritonStartError("\n".join(lines), list(failures))

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the server exits (returns its exit code) or `timeout` seconds pass (returns None)."""
        if self.process is None:
            raise RuntimeError("server not started")
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        """Stop the server and all its descendants; return its exit code (None if it was never started).

        SIGTERM to the server's process group, SIGKILL to the group after `stop_grace_s`, then SIGKILL to any
        descendant still alive outside the group. A KeyboardInterrupt while waiting escalates to SIGKILL.
        """
        if self.process is None:
            return None
        process = self.process
        survivors = descendants(process.pid)
        try:
            if process.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    process.wait(self.stop_grace_s)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    process.wait()
        except KeyboardInterrupt:
            self._signal_group(signal.SIGKILL)
            process.wait()
            raise
        finally:
            self._kill_leftovers(survivors)
            self._remove_shared_memory()
            _RUNNING.discard(self)
        if process.returncode == 0 and self._log_is_temporary and self.log_path:
            self.log_path.unlink(missing_ok=True)
        return process.returncode

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def _kill_leftovers(self, survivors: dict[int, str]) -> None:
        """Give the server's former descendants 2 s to exit on their own, then SIGKILL them."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            alive = [pid for pid, start in survivors.items() if still_same_process(pid, start)]
            if not alive:
                return
            time.sleep(0.05)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _remove_shared_memory(self) -> None:
        for region in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
            region.unlink(missing_ok=True)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_until_stopped(server: TritonServer, on_ready: Callable[[TritonServer], None] | None = None) -> int:
    """Start `server`, call `on_ready(server)`, wait until it exits or SIGINT/SIGTERM/SIGHUP comes, stop it.

    For command-line use, from the main thread: the signals are caught from before start-up until the
    server is stopped. Returns 0 after a requested, clean stop, else the server's exit code (a server that
    died by itself, or had to be killed). A second Ctrl-C while stopping kills the server at once.
    TritonStartError propagates.
    """
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGINT too: a shell's `&` starts it ignored
    previous = {signum: signal.signal(signum, interrupt) for signum in handled}
    try:
        try:
            server.start()
            if on_ready is not None:
                on_ready(server)
            code = server.wait()
        except KeyboardInterrupt:
            code = server.stop()
        else:
            server.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if code is None or code == 0:
        return 0
    return code if code > 0 else 128 - code


@atexit.register
def _stop_all_servers() -> None:
    for server in list(_RUNNING):
        server.stop()
