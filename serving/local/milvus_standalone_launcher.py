"""`python -m dnsvr.serving.local.milvus_standalone_launcher ARGS`: the milvus wheel's `milvus-server` launcher
(same ARGS), whose port test binds like the server does.

The launcher tests each port by binding it; a port whose old connections still sit in TIME-WAIT (for a minute
after the server that held it stopped) fails a bind without SO_REUSEADDR, and the launcher then quietly moves that
component to the next port: a restarted server answers on its proxy port + 1, and its embedded etcd and the
clients of it part ways.  The server itself (Go) binds with SO_REUSEADDR, so the same option here makes the test
say what the server will meet: a port in TIME-WAIT is free, one with a listener is not.
"""

from __future__ import annotations

import socket
import sys

import milvus
from dnsvr.serving.local.processes import LOOPBACK


def bind_like_the_server(_config: object, port: int) -> socket.socket | None:
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


if __name__ == "__main__":
    milvus.MilvusServerConfig.try_bind_port = bind_like_the_server
    sys.exit(milvus.main())
