"""Keeps a running `LocalService` whole, and says whether it can serve: what `dnsvr serve` runs beside it.

A thread checks every `interval_s`:
- the local Milvus (Lite or the 2.3.5 server): when its process died, it is started again on the same port
  and data directory (the python models reconnect by themselves), logged, with a back-off of 1 s doubling to 30 s
  between failed starts;
- Triton's python-model instances: Triton 2.51 does not replace a stub process that died (every request
  routed to that instance then fails, "Stub process ... is not healthy"), so a model whose live stubs are
  fewer than at start is reloaded (`TritonServer.reload_model`), logged.

`readiness()` is what a load balancer asks (`dnsvr.serving.local.health`): Triton running and ready, every
model READY, every python instance alive, the local Milvus running (key `milvus_lite`, kept for either
engine), and a store round trip through `dnsvr_stats` (the pipelines' own path to the store) answering.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dnsvr.serving.local.processes import descendants

if TYPE_CHECKING:
    from dnsvr.serving.local.service import LocalService

LOG = logging.getLogger("dnsvr.serve")
STUB = "triton_python_backend_stub"
BACKOFF_S = (1.0, 30.0)
RETIRE_S = 15.0  # how long the stubs of a replaced model version may take to exit


def python_stubs(triton_pid: int) -> dict[str, set[int]]:
    """{model name: pids of its live python stub processes} under the Triton process `triton_pid`."""
    stubs: dict[str, set[int]] = defaultdict(set)
    for pid in descendants(triton_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0].decode(errors="replace").endswith(STUB):
            stubs[Path(argv[1].decode(errors="replace")).parent.parent.name].add(pid)  # <repo>/<model>/1/model.py
    return stubs


def python_instances(triton_pid: int) -> Counter:
    """{model name: live python stub processes} under the Triton process `triton_pid`."""
    return Counter({model: len(pids) for model, pids in python_stubs(triton_pid).items()})


class Supervisor:
    """The watch described in the module docstring over `service`; `store_probe()` raises when the store does
    not answer (default: none)."""

    def __init__(self, service: LocalService, interval_s: float = 1.0,
                 store_probe: Callable[[], None] | None = None) -> None:
        self.service = service
        self.interval_s = interval_s
        self.store_probe = store_probe
        self.expected: Counter = Counter()
        self.events: list[str] = []
        self._backoff = BACKOFF_S[0]
        self._next_milvus_try = 0.0
        self._retiring: dict[int, float] = {}  # stubs of a replaced model version -> when they must be gone
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Supervisor:
        """Start the watch (again after `stop()`), counting the python instances it keeps."""
        triton = self.service.triton
        self.expected = python_instances(triton.pid) if triton is not None else Counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dnsvr-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_once()
            except Exception as error:  # the watch itself must keep running
                LOG.error("supervisor check failed: %s: %s", type(error).__name__, error)

    def _event(self, message: str, *args: object) -> None:
        text = message % args
        self.events.append(text)
        LOG.warning(text)

    def check_once(self) -> None:
        """One round of the checks (the thread calls it; tests may too)."""
        self._check_milvus()
        self._check_instances()

    def _check_milvus(self) -> None:
        milvus = self.service.milvus
        if milvus is None or milvus.running or time.monotonic() < self._next_milvus_try:
            return
        code = milvus.exit_code
        self._event("%s (%s) exited with code %s; starting it again at %s", milvus.label, milvus.data_dir,
                    code, milvus.uri)
        try:
            milvus.restart()
        except Exception as error:
            self._next_milvus_try = time.monotonic() + self._backoff
            self._event("%s did not start (%s); next try in %.0f s", milvus.label, error, self._backoff)
            self._backoff = min(self._backoff * 2, BACKOFF_S[1])
            return
        self._backoff = BACKOFF_S[0]
        self._event("%s is back at %s", milvus.label, milvus.uri)

    def _check_instances(self) -> None:
        triton = self.service.triton
        if triton is None or not triton.running:
            return
        stubs = python_stubs(triton.pid)
        for model, count in self.expected.items():
            live = stubs.get(model, set()) - set(self._retiring)
            if len(live) < count:
                self._event("model %s: %d of its %d python instances died; reloading it", model, count - len(live),
                            count)
                triton.reload_model(model)
                self._event("model %s reloaded", model)
                # The old version's surviving stubs should exit with its unload; one that waits forever for an
                # answer of its dead sibling would not, and keeps the unload from finishing.
                self._retiring.update({pid: time.monotonic() + RETIRE_S for pid in live})
        alive = {pid for pids in stubs.values() for pid in pids}
        for pid, deadline in list(self._retiring.items()):
            if pid not in alive:
                del self._retiring[pid]
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                del self._retiring[pid]
                self._event("a stub of a replaced model version (pid %d) did not exit: killed", pid)

    def readiness(self) -> dict:
        """{"ready": bool, and what was checked}: see the module docstring."""
        triton, milvus = self.service.triton, self.service.milvus
        report: dict = {"triton": bool(triton and triton.running and triton.ready())}
        if report["triton"]:
            states = triton.model_states()
            report["models_not_ready"] = sorted(m for m, state in states.items() if state != "READY")
            live = python_instances(triton.pid)
            report["dead_instances"] = {m: c - live[m] for m, c in self.expected.items() if live[m] < c}
        report["milvus_lite"] = None if milvus is None else milvus.running
        try:
            if self.store_probe is not None:
                self.store_probe()
            report["store"] = "ok"
        except Exception as error:
            report["store"] = f"{type(error).__name__}: {error}"
        report["ready"] = (report["triton"] and not report["models_not_ready"] and not report["dead_instances"]
                           and report["milvus_lite"] is not False and report["store"] == "ok")
        return report
