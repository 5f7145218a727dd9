"""The default local engine: the Milvus 2.3.5 server in a network namespace of its own, reached through a Unix
socket relay; and the rule that picks the engine for a store path (`engine_choice`).

The server must serve the store through its socket, bit-exactly, across a restart after kill -9; none of its
ports may be reachable from this machine's network namespace; the socket's folder must be this user's alone.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
from dnsvr.serving.local import engine_choice, isolated_milvus
from dnsvr.serving.local.engine_choice import EngineUnavailable, choose_engine
from dnsvr.serving.local.isolated_milvus import socket_path_for
from dnsvr.serving.local.milvus_servers import MilvusStandaloneServer
from dnsvr.serving.local.processes import LOOPBACK, descendants
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import VideoStore
from dnsvr.training.paths import private_temp_dir

needs_namespaces = pytest.mark.skipif(engine_choice.server_support() is not None,
                                      reason=f"no isolated server here: {engine_choice.server_support()}")


def listening_sockets(pid: int) -> dict[int, set[int]]:
    """port -> inodes of the TCP sockets listening in the network namespace of process `pid` (its /proc/net/tcp*)."""
    sockets: dict[int, set[int]] = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                sockets.setdefault(int(fields[1].rsplit(":", 1)[1], 16), set()).add(int(fields[9]))
    return sockets


def socket_inodes(pids: list[int]) -> set[int]:
    """The inodes of every socket the processes `pids` hold open."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:["):-1]))
    return inodes


def server_binary(server: MilvusStandaloneServer) -> int:
    """The pid of the `milvus run standalone` process under the server's launcher."""
    for pid in descendants(server.pid):
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"run", b"standalone"]:
            return pid
    raise AssertionError("no milvus binary under the launcher")


@needs_namespaces
def test_the_isolated_server_is_reachable_only_through_its_socket(tmp_path: Path, capsys) -> None:
    from dnsvr.serving.cli.main import main
    from pymilvus import DataType, MilvusClient

    # a TTL longer than the start-up timeout: the restart below must clear the killed server's sessions in the
    # namespace, not wait them out
    server = MilvusStandaloneServer(tmp_path / "data", isolated=True, session_ttl_s=600)
    with server:
        assert server.uri == f"unix:{socket_path_for(tmp_path / 'data')}"
        binary = server_binary(server)
        assert os.readlink(f"/proc/{binary}/ns/net") != os.readlink("/proc/self/ns/net")
        inside = listening_sockets(binary)
        assert server.port in inside and len(inside) >= 5  # proxy, coordinators, etcd, metrics ...
        # None of the server's sockets listens here.  A port number may still be in use here by another process
        # (the session's TCP server has the same fixed metrics port 9091): it is another socket, another server.
        here = listening_sockets(os.getpid())
        assert not socket_inodes([server.pid, *descendants(server.pid)]) & set().union(*here.values())
        for port in set(inside) - set(here):
            with socket.socket() as probe:
                probe.settimeout(0.5)
                assert probe.connect_ex((LOOPBACK, port)) != 0, port
        assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(server.socket_path.parent).st_mode) == 0o700

        codes = np.random.default_rng(0).integers(0, 256, (3, 576), dtype=np.uint8)
        client = MilvusClient(uri=server.uri)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=4608)
        index = client.prepare_index_params()
        index.add_index("code", index_type="BIN_FLAT", metric_type="HAMMING")
        client.create_collection("codes", schema=schema, index_params=index)
        client.insert("codes", [{"id": i, "code": codes[i].tobytes()} for i in range(3)])
        client.close()

        server.kill()  # as a crash would: the relay and the server go together
        assert not server.socket_path.exists() or not server._port_open()
        server.start()
        assert "revoked the etcd sessions a stopped server left: " in server.log_path.read_text()
        client = MilvusClient(uri=server.uri)
        client.load_collection("codes")
        rows = client.query("codes", filter="id >= 0", output_fields=["id", "code"], consistency_level="Strong")
        client.close()
        got = {row["id"]: np.frombuffer(row["code"][0] if isinstance(row["code"], list) else row["code"], np.uint8)
               for row in rows}
        assert sorted(got) == [0, 1, 2] and all((got[i] == codes[i]).all() for i in range(3))
        # a store on this machine's server keeps its codes in chunk rows (docs/storage.md, layouts)
        store = VideoStore(StoreSettings(uri=server.uri, prefix="isolated"), model_version="test", coarse_dim=8,
                           representation="binary")
        assert store.meta.layout == "chunk"
        store.close()
        # `dnsvr store` finds the live server by its data directory
        assert main(["store", "stats", "--store", str(tmp_path / "data"), "--prefix", "isolated"]) == 0
    assert main(["store", "stats", "--store", str(tmp_path / "data"), "--prefix", "isolated"]) == 2
    assert "no `dnsvr serve` runs its server" in capsys.readouterr().err
    assert not server.running and not server.socket_path.exists()


def test_the_socket_folder_must_be_this_users_alone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = private_temp_dir()
    assert folder == tmp_path / f"dnsvr-{os.geteuid()}" and stat.S_IMODE(folder.stat().st_mode) == 0o700
    folder.chmod(0o755)
    with pytest.raises(PermissionError, match="mode 0700"):
        private_temp_dir()
    folder.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PermissionError, match="mode 0700"):
        private_temp_dir()


def test_a_socket_path_is_short_and_one_per_data_directory(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 12, "data")
    path = socket_path_for(deep)
    assert len(str(path).encode()) < 100 and path == socket_path_for(deep)
    assert path != socket_path_for(tmp_path / "data")


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("DNSVR_DATA", str(tmp_path))
    return tmp_path


def test_auto_picks_the_engine_of_the_store_path(data_home: Path, monkeypatch) -> None:
    monkeypatch.setattr(engine_choice, "server_support", lambda isolated=True: None)
    lite = choose_engine("auto", data_home / "videos.db")
    assert (lite.engine, lite.store, lite.isolated) == ("lite", str(data_home / "videos.db"), False)
    server = choose_engine("auto", data_home / "videos")
    assert (server.engine, server.isolated) == ("server", True)
    default = choose_engine()
    assert (default.engine, default.store) == ("server", str(data_home / "milvus-server"))
    (data_home / "milvus.db").mkdir()  # a Milvus Lite store made before the server was the default: kept
    kept = choose_engine()
    assert (kept.engine, kept.store) == ("lite", str(data_home / "milvus.db")) and "Milvus Lite" in kept.reason
    (data_home / "milvus-server").mkdir()
    assert choose_engine().engine == "server"
    assert choose_engine("lite").store == str(data_home / "milvus.db")


def test_without_namespaces_auto_falls_back_to_lite_and_server_is_refused(data_home: Path, monkeypatch) -> None:
    reason = "`unshare --net` is refused here: Operation not permitted"
    monkeypatch.setattr(isolated_milvus, "namespace_support", lambda: reason)
    monkeypatch.setattr(engine_choice, "namespace_support", lambda: reason)
    fallback = choose_engine()
    assert fallback.engine == "lite" and reason in fallback.reason
    with pytest.raises(EngineUnavailable, match="--no-isolation"):
        choose_engine("server")
    with pytest.raises(EngineUnavailable, match="network namespace"):
        choose_engine("auto", data_home / "videos")
    exposed = choose_engine("server", isolate=False)
    assert (exposed.engine, exposed.isolated) == ("server", False) and "every interface" in exposed.reason
    with pytest.raises(ValueError, match="engine must be one of"):
        choose_engine("sqlite")


def test_store_commands_default_to_the_store_serve_uses(data_home: Path, monkeypatch, capsys) -> None:
    from dnsvr.serving.cli.main import main

    monkeypatch.delenv("DNSVR_MILVUS_URI", raising=False)
    monkeypatch.setenv("DNSVR_CONFIG", str(data_home / "none.toml"))
    monkeypatch.setattr(engine_choice, "server_support", lambda isolated=True: None)
    assert main(["store", "stats"]) == 2  # the server's default store, and no `dnsvr serve` runs it
    assert f"{data_home / 'milvus-server'} is a Milvus server's data directory" in capsys.readouterr().err
