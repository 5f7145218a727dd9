"""A killed Milvus server's etcd sessions are revoked when it starts again (`etcd_sessions`), so the restart does
not wait out their TTL: the rule that tells a dead session from a live one, and a real server killed -9 and
restarted with a TTL far longer than its start-up timeout."""

from __future__ import annotations

from pathlib import Path

from dnsvr.serving.local import etcd_sessions
from dnsvr.serving.local.etcd_sessions import Session, is_stale
from dnsvr.serving.local.milvus_servers import MilvusStandaloneServer

PORTS = {"root_coord_port": 101, "proxy_internal_port": 102, "query_coord_port": 103, "query_node_port": 104,
         "data_coord_port": 105, "index_node_port": 106, "data_node_port": 107}


def session(name: str, port: int) -> Session:
    return Session(name=name, port=port, lease="1")


def test_a_session_is_this_starts_only_on_the_port_this_start_gave_its_component() -> None:
    assert not is_stale(session("rootcoord", 101), PORTS)
    assert not is_stale(session("indexcoord", 105), PORTS)  # it lives in the data coordinator
    assert is_stale(session("rootcoord", 999), PORTS)  # a port of the start before
    assert is_stale(session("querycoord", 101), PORTS)  # an old session whose port this start gave another component
    assert not is_stale(session("streamingnode", 104), PORTS)  # a component not listed: any port of this start
    assert is_stale(session("streamingnode", 999), PORTS)


def test_a_server_killed_minus_9_restarts_without_waiting_out_its_sessions(tmp_path: Path, monkeypatch) -> None:
    from pymilvus import MilvusClient

    # a TTL five times the start-up timeout: waiting it out would fail the restart
    server = MilvusStandaloneServer(tmp_path / "data", session_ttl_s=600, startup_timeout_s=120)
    # a user's HTTP proxy (nothing listens on it) must not carry the launcher's calls to the loopback etcd
    environment = server.environment()
    monkeypatch.setattr(server, "environment", lambda: {**environment, "http_proxy": "http://127.0.0.1:9",
                                                        "HTTP_PROXY": "http://127.0.0.1:9"})
    with server:
        etcd_port = server._etcd_ports()[0]
        first = etcd_sessions.sessions(etcd_port)
        assert {live.name for live in first} >= {"rootcoord", "datacoord", "querycoord", "querynode", "proxy"}
        assert not any(is_stale(live, server.component_ports) for live in first)
        client = MilvusClient(uri=server.uri)
        client.create_collection("kept", dimension=4)
        client.close()

        server.kill()
        server.start()
        after = etcd_sessions.sessions(etcd_port)
        assert not any(is_stale(live, server.component_ports) for live in after)
        assert not {live.lease for live in first} & {live.lease for live in after}
        assert "revoked the etcd sessions a stopped server left: " in server.log_path.read_text()
        client = MilvusClient(uri=server.uri)
        assert "kept" in client.list_collections()
        client.close()


def test_an_unreachable_etcd_ends_the_clearing_at_its_timeout_without_error() -> None:
    from dnsvr.serving.local.processes import free_port

    reported: list[list[str]] = []
    etcd_sessions.clear_stale_sessions(free_port(), PORTS, reported.append, timeout_s=0.5, every_s=0.1)
    assert reported == []
