"""Clear the etcd sessions a killed Milvus 2.3.5 server left behind, so that its restart does not wait them out.

Each component of the server (coordinators, nodes, proxy) registers a session in the embedded etcd: a key under
`by-dev/meta/session/` bound to a lease that the component keeps alive.  After a kill -9 nobody keeps those
leases alive, but etcd restores them when it starts again, with their full TTL (`common.session.ttl`): the new
coordinators cannot register over the old exclusive keys and wait: a restart took 26 s at a 10 s TTL and 79 s at
60 s (benchmarks/results/restart.md).  A short TTL is no cure: on 2 cores busy with the server's own index
builds, a 10 s TTL let the live server's leases expire and it stopped serving (README, "100k videos with crop
views").

The local servers choose fresh ports for every start (`MilvusStandaloneServer.prepare`), so a session tells which
start made it: one whose address is not the port this start gave its component is a dead process's.  The
launcher revokes those leases through etcd's JSON gateway on the namespace's loopback while the new server
comes up (`clear_stale_sessions`), and the long TTL costs a restart nothing (`benchmarks/restart_bench.py`).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from dnsvr.serving.local.processes import LOOPBACK

SESSION_PREFIX = "by-dev/meta/session/"  # etcd.rootPath + metaSubPath + the sessions' folder (Milvus 2.3.5)
# the component a session names -> the `milvus-server` option of the port it serves on (2.3.5 runs the index
# coordinator inside the data coordinator: both sessions hold the data coordinator's address)
SESSION_PORT_OPTIONS = {
    "rootcoord": "root_coord_port", "proxy": "proxy_internal_port", "querycoord": "query_coord_port",
    "querynode": "query_node_port", "datacoord": "data_coord_port", "indexcoord": "data_coord_port",
    "indexnode": "index_node_port", "datanode": "data_node_port",
}


@dataclass(frozen=True)
class Session:
    """One registered component: its name, the port of its address, and its lease id."""

    name: str
    port: int
    lease: str


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP_PROXY of the user


def _call(etcd_port: int, path: str, body: dict) -> dict:
    """POST `body` to etcd's JSON gateway at LOOPBACK:`etcd_port` -> its JSON answer."""
    request = urllib.request.Request(f"http://{LOOPBACK}:{etcd_port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with _DIRECT.open(request, timeout=5) as answer:
        return json.load(answer)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def sessions(etcd_port: int) -> list[Session]:
    """The sessions registered now (keys with a lease; the id counter beside them has none)."""
    prefix_end = SESSION_PREFIX[:-1] + chr(ord(SESSION_PREFIX[-1]) + 1)
    found = _call(etcd_port, "/v3/kv/range", {"key": _b64(SESSION_PREFIX), "range_end": _b64(prefix_end)})
    listed = []
    for pair in found.get("kvs", []):
        if "lease" not in pair:
            continue
        value = json.loads(base64.b64decode(pair["value"]))
        listed.append(Session(name=value["ServerName"], port=int(value["Address"].rsplit(":", 1)[1]),
                              lease=pair["lease"]))
    return listed


def is_stale(session: Session, ports: dict[str, int]) -> bool:
    """Whether `session` is not this start's: its address is not the port this start (`ports`: option -> port)
    gave its component; a component not in SESSION_PORT_OPTIONS is this start's when its port is any of them."""
    option = SESSION_PORT_OPTIONS.get(session.name)
    return session.port != ports.get(option) if option else session.port not in ports.values()


def clear_stale_sessions(etcd_port: int, ports: dict[str, int], report: Callable[[list[str]], None],
                         timeout_s: float = 120.0, every_s: float = 0.2) -> None:
    """Revoke the leases of the stale sessions while the server starts, until this start's proxy has registered
    and none is left, or `timeout_s` passes (etcd unreachable, a failed start); `report` gets the components
    revoked by each round, as soon as they are."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            now = sessions(etcd_port)
            stale = [session for session in now if is_stale(session, ports)]
            for session in stale:
                _call(etcd_port, "/v3/lease/revoke", {"ID": session.lease})
            if stale:
                report(sorted(session.name for session in stale))
            elif any(session.name == "proxy" for session in now):
                return
        except (OSError, ValueError, KeyError):  # etcd not up yet (URLError is an OSError), a session mid-write
            pass
        time.sleep(every_s)
