"""The supervisor's watch over a real Milvus Lite server (no Triton): a killed server is started again, the
watch can be held and resumed, and a server the watch's thread started outlives that thread being stopped."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

from dnsvr.serving.local.milvus_servers import MilvusLiteServer
from dnsvr.serving.local.supervisor import Supervisor


def wait_for(check, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


def test_the_watch_resumes_after_a_hold_and_what_it_restarted_outlives_it(tmp_path: Path) -> None:
    milvus = MilvusLiteServer(tmp_path / "milvus.db").start()
    service = SimpleNamespace(milvus=milvus, triton=None)
    supervisor = Supervisor(service, interval_s=0.1).start()
    try:
        supervisor.stop()  # held, as a test of the health endpoint does, then resumed
        supervisor.start()
        first = milvus.pid
        os.killpg(first, signal.SIGKILL)
        wait_for(lambda: any("is back" in event for event in supervisor.events))
        assert milvus.running and milvus.pid != first
        supervisor.stop()  # the thread that started this server ends: the server must not
        time.sleep(1.0)
        assert milvus.running and milvus.pid != first
    finally:
        supervisor.stop()
        milvus.stop()
