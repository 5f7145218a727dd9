"""This machine's launchers: the guard (a server dies with its launcher, however the launcher dies, and outlives
the launcher's thread that started it), Milvus Lite's data-directory lock (an orphan's lock is recognised and
cleared, a live owner's is reported) and the supervisor's watch (a killed server started again; the watch held and
resumed)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from dnsvr.serving.local.milvus_servers import MilvusLiteServer, MilvusStandaloneServer, ServerStartError
from dnsvr.serving.local.processes import descendants, lock_holders, process_start_time, still_same_process
from dnsvr.serving.local.supervisor import Supervisor


def wait_for(check, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.1)


def test_guarded_command_dies_with_its_launcher_killed_minus_9(tmp_path: Path) -> None:
    launcher_code = textwrap.dedent("""
        import subprocess, sys, time
        from dnsvr.serving.local.guard import guarded
        guard = subprocess.Popen(guarded(["sh", "-c", "sleep 300 & sleep 300; wait"], 2), start_new_session=True)
        print(guard.pid, flush=True)
        time.sleep(300)
    """)
    launcher = subprocess.Popen([sys.executable, "-c", launcher_code], stdout=subprocess.PIPE, text=True)
    guard = int(launcher.stdout.readline())
    wait_for(lambda: len(descendants(guard)) >= 3)  # sh and its two sleeps
    family = {guard: process_start_time(guard), **descendants(guard)}
    launcher.kill()
    launcher.wait()
    wait_for(lambda: not any(still_same_process(pid, start) for pid, start in family.items()))


def test_guarded_command_outlives_the_thread_that_started_it_and_dies_with_its_process() -> None:
    """The kernel's parent-death signal also fires when the launcher's creating thread ends (a supervisor thread
    that restarted a server, later stopped): the guard must keep its command running then."""
    launcher_code = textwrap.dedent("""
        import subprocess, threading, time
        from dnsvr.serving.local.guard import guarded
        started = []
        def start_and_end():
            started.append(subprocess.Popen(guarded(["sleep", "300"], 2), start_new_session=True))
            time.sleep(2.0)  # past the guard arming its parent-death signal
        thread = threading.Thread(target=start_and_end)
        thread.start()
        thread.join()
        print(started[0].pid, flush=True)
        time.sleep(300)
    """)
    launcher = subprocess.Popen([sys.executable, "-c", launcher_code], stdout=subprocess.PIPE, text=True)
    guard = int(launcher.stdout.readline())
    family = {guard: process_start_time(guard), **descendants(guard)}
    time.sleep(1.0)
    assert all(still_same_process(pid, start) for pid, start in family.items()), "stopped when its thread ended"
    launcher.kill()
    launcher.wait()
    wait_for(lambda: not any(still_same_process(pid, start) for pid, start in family.items()))


def test_guard_exits_with_the_commands_code() -> None:
    from dnsvr.serving.local.guard import guarded

    assert subprocess.run(guarded(["sh", "-c", "exit 7"]), start_new_session=True).returncode == 7


def test_lock_of_an_orphaned_milvus_lite_is_cleared(tmp_path: Path) -> None:
    data_dir = tmp_path / "milvus.db"
    orphan = subprocess.Popen(MilvusLiteServer(data_dir).command(), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: lock_holders(data_dir / MilvusLiteServer.LOCK), 60)
        dead_launcher = subprocess.Popen(["true"])
        dead_launcher.wait()
        record = {"launcher_pid": dead_launcher.pid, "launcher_start": "0", "server_pid": orphan.pid, "port": 1}
        (tmp_path / "milvus.db.owner.json").write_text(json.dumps(record))
        with MilvusLiteServer(data_dir) as server:  # clears the orphan, then starts
            assert server.running and orphan.wait(timeout=20) is not None
            assert lock_holders(data_dir / MilvusLiteServer.LOCK)
            owner = json.loads(server.owner_path.read_text())
            assert owner["launcher_pid"] == os.getpid() and owner["port"] == server.port
    finally:
        if orphan.poll() is None:
            os.killpg(orphan.pid, signal.SIGKILL)


def test_lock_of_a_live_owner_is_reported(tmp_path: Path) -> None:
    with MilvusLiteServer(tmp_path / "milvus.db") as first:
        with pytest.raises(ServerStartError, match=f"in use by process .* of the dnsvr process {os.getpid()}"):
            MilvusLiteServer(tmp_path / "milvus.db").start()
        assert first.running


def test_standalone_servers_run_side_by_side_and_restart_on_their_etcd_ports(milvus_server, tmp_path: Path,
                                                                            monkeypatch) -> None:
    from pymilvus import MilvusClient

    second = MilvusStandaloneServer(tmp_path / "data")
    taken: list[socket.socket] = []
    choose_ports = MilvusStandaloneServer.prepare

    def a_port_taken_after_its_choice(server: MilvusStandaloneServer) -> None:
        choose_ports(server)
        if not taken:  # the first start only: another process takes the root coordinator's port
            taken.append(socket.create_server(("127.0.0.1", server.component_ports["root_coord_port"])))

    monkeypatch.setattr(MilvusStandaloneServer, "prepare", a_port_taken_after_its_choice)
    with second:  # the session's server holds its own etcd ports: no clash on 2380
        taken_port = taken[0].getsockname()[1]
        assert second.component_ports["root_coord_port"] != taken_port  # chosen again, not moved to port + 1
        assert f"port {taken_port} is taken" in second.log_path.read_text()
        taken[0].close()
        config = second.etcd_config_path.read_text()
        assert "2380" not in config and "2379" not in config and "127.0.0.1" in config
        client = MilvusClient(uri=second.uri)
        client.create_collection("side_by_side", dimension=4)
        client.close()
        second.restart()  # etcd remembers its peer URL: the same configuration again
        assert second.etcd_config_path.read_text() == config
        client = MilvusClient(uri=second.uri)
        assert "side_by_side" in client.list_collections()
        client.close()
    assert MilvusClient(uri=milvus_server.uri).list_collections() is not None


def test_a_proxy_port_given_and_taken_is_reported_at_once(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(ServerStartError, match=f"port {port} is taken"):
            MilvusStandaloneServer(tmp_path / "data", port=port).start()
        assert time.monotonic() - began < 30  # not the 120 s of a readiness wait on a port nobody serves


def test_the_watch_resumes_after_a_hold_and_what_it_restarted_outlives_it(tmp_path: Path) -> None:
    milvus = MilvusLiteServer(tmp_path / "milvus.db").start()
    service = SimpleNamespace(milvus=milvus, triton=None)
    supervisor = Supervisor(service, interval_s=0.1).start()
    try:
        supervisor.stop()  # held, as a test of the health endpoint does, then resumed
        supervisor.start()
        first = milvus.pid
        os.killpg(first, signal.SIGKILL)
        wait_for(lambda: any("is back" in event for event in supervisor.events), 60.0)
        assert milvus.running and milvus.pid != first
        supervisor.stop()  # the thread that started this server ends: the server must not
        time.sleep(1.0)
        assert milvus.running and milvus.pid != first
    finally:
        supervisor.stop()
        milvus.stop()
