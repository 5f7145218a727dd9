"""`python -m dnsvr.serving.local.milvus_standalone_launcher --metrics-port P ARGS`: the milvus wheel's
`milvus-server` launcher (same ARGS) with a port test that binds like the server does and never moves a port.

The wheel tests each port by binding it, and when the bind fails it quietly moves that component to the next free
port: a proxy moved so answers where nobody looks, and its caller waits for a server that never comes.  Here every
port is the one asked for or the launcher exits at once with `PORT_TAKEN`, naming it, so the caller can choose
again.  The test binds with SO_REUSEADDR, as the server (Go) does: a port whose old connections still sit in
TIME-WAIT after a stop is free, one with a listener is not.  The metrics (health) port, which the wheel would seek
from 9091 upwards, is chosen by the caller too (`--metrics-port`).

While the server starts, a thread revokes the etcd sessions that a killed server left behind, named by ports that
are not this start's (`dnsvr.serving.local.etcd_sessions`), so the restart does not wait out their TTL.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
from argparse import ArgumentParser

from dnsvr.serving.local.etcd_sessions import SESSION_PORT_OPTIONS, clear_stale_sessions
from dnsvr.serving.local.processes import LOOPBACK

PORT_TAKEN = 75  # the exit code when a port asked for cannot be bound (EX_TEMPFAIL: choose again)


def bind_like_the_server(port: int) -> socket.socket | None:
    """A socket listening on LOOPBACK:port, bound with SO_REUSEADDR; None when the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None


def exactly_this_port(_config: object, port: int) -> tuple[int, socket.socket]:
    """The wheel's `resolve_port(port_start)`, without moving on: (port, listening socket), or exit PORT_TAKEN."""
    sock = bind_like_the_server(port)
    if sock is None:
        print(f"port {port} is taken", file=sys.stderr, flush=True)
        sys.exit(PORT_TAKEN)
    return port, sock


def taken_port(log_line: str) -> int | None:
    """The port named by `exactly_this_port`'s last words, read back from the launcher's log; None if none."""
    found = re.fullmatch(r"port (\d+) is taken", log_line.strip())
    return int(found.group(1)) if found else None


def say_revoked(components: list[str]) -> None:
    """Name, in the launcher's log, the components whose stale sessions were just revoked."""
    print(f"revoked the etcd sessions a stopped server left: {', '.join(components)}", file=sys.stderr, flush=True)


def start_ports(argv: list[str]) -> tuple[int, dict[str, int]]:
    """(etcd client port, {component port option: port}) of the `milvus-server` arguments `argv`."""
    parser = ArgumentParser(add_help=False, allow_abbrev=False)  # `--data` is the server's, no abbreviation
    parser.add_argument("--etcd-port", type=int, required=True)
    for option in sorted(set(SESSION_PORT_OPTIONS.values())):
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, type=int, required=True)
    known, _ = parser.parse_known_args(argv)
    ports = vars(known)
    return ports.pop("etcd_port"), ports


if __name__ == "__main__":
    import milvus

    parser = ArgumentParser(add_help=False)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--keep-stale-sessions", action="store_true")  # wait them out, as the wheel does
    ours, sys.argv[1:] = parser.parse_known_args()
    if not ours.keep_stale_sessions:
        etcd_port, ports = start_ports(sys.argv[1:])
        threading.Thread(target=clear_stale_sessions, args=(etcd_port, ports, say_revoked), daemon=True).start()
    milvus.MilvusServerConfig.resolve_port = exactly_this_port
    milvus.default_server.webservice_port = ours.metrics_port
    sys.exit(milvus.main())
