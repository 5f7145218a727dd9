"""A local Milvus server that nothing on the network can reach: run it in a private network namespace and serve
it to this machine's user through a Unix socket.

The Milvus 2.3.5 server of the `milvus` wheel listens on every interface (its gRPC servers, every coordinator's,
and its metrics port take no listen address).  Started by `unshare --net` (with `--user --map-root-user` when this
process is not root) it gets a network namespace of its own, holding nothing but a loopback device: whatever it
binds there is unreachable from outside the namespace, this machine's own loopback included.  A relay in the
namespace (this module, the namespace's first process) accepts connections on a Unix socket file and forwards
each to the proxy's port on the namespace's loopback (two threads per connection moving the bytes with
`os.splice`: they never enter Python); clients connect with the URI `unix:<socket>`.  The socket
lies in a directory only this user may enter (mode 0700), so other users of the machine cannot reach the store
either (a server on 127.0.0.1 is open to every local user).

    python -m dnsvr.serving.local.isolated_milvus --socket SOCK --port PROXY_PORT -- COMMAND ...

brings the namespace's loopback up, starts COMMAND (the server's launcher), relays until COMMAND exits and exits
with its code; a SIGTERM or SIGINT is passed on to COMMAND.  `isolated_command` builds the whole command line
and `namespace_support` tells whether this machine lets a process make the namespaces (containers often don't).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

from dnsvr.serving.local.processes import LOOPBACK
from dnsvr.training.paths import private_temp_dir

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
F_SETPIPE_SZ = 1031  # fcntl: a pipe's capacity
PIPE_BYTES = 1 << 20  # bytes moved per splice (the pipe's capacity when the kernel allows it)


def unshare_flags() -> list[str]:
    """The `unshare` options that give a process its own network namespace: root needs only `--net`; another
    user also needs a user namespace in which it is root (`--user --map-root-user`)."""
    return ["--net"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--net"]


@functools.lru_cache(maxsize=1)
def namespace_support() -> str | None:
    """None when this machine lets this user run a process in a network namespace of its own; else why not (no
    `unshare`, or the kernel or a container's policy refuses the namespaces), in a sentence."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "the `unshare` program (util-linux) is not installed"
    try:
        done = subprocess.run([unshare, *unshare_flags(), "--", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`unshare {' '.join(unshare_flags())}` failed: {error}"
    if done.returncode != 0:
        return f"`unshare {' '.join(unshare_flags())}` is refused here: {done.stderr.strip() or done.returncode}"
    return None


def socket_path_for(data_dir: str | os.PathLike) -> Path:
    """Where the relay of the server over `data_dir` listens: `$TMPDIR/dnsvr-<uid>/milvus-<hash>.sock`.  A Unix
    socket's path holds at most 107 bytes, too few for a data directory's path in general, hence a hash of it."""
    digest = hashlib.sha256(str(Path(data_dir).expanduser().resolve()).encode()).hexdigest()[:16]
    return private_temp_dir() / f"milvus-{digest}.sock"


def socket_answers(path: str | os.PathLike) -> bool:
    """Whether something accepts connections on the Unix socket `path` (within half a second)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(str(path)) == 0


def isolated_command(command: list[str], socket: str | os.PathLike, port: int) -> list[str]:
    """The command line that runs `command` in a new network namespace, relayed from `socket` to `port`."""
    return [shutil.which("unshare") or "unshare", *unshare_flags(), "--",
            sys.executable, "-m", "dnsvr.serving.local.isolated_milvus", "--socket", str(socket),
            "--port", str(port), "--", *command]


def loopback_up() -> None:
    """Bring this namespace's loopback device up (a new network namespace starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Move bytes from `source` to `target` until `source` ends, then half-close `target`: `os.splice` through a
    pipe, so the bytes stay in the kernel and the thread holds no GIL while it waits or copies."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # a smaller pipe still works, in more steps
        pass
    try:
        while moved := os.splice(source.fileno(), write_end, PIPE_BYTES):
            while moved:
                moved -= os.splice(read_end, target.fileno(), moved)
        target.shutdown(socket.SHUT_WR)
    except OSError:  # either side reset or closed: end both directions
        for side in (source, target):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)
    finally:
        os.close(read_end)
        os.close(write_end)


def _relay_one(client: socket.socket, port: int) -> None:
    """One client connection: open one to the server, copy both ways (a thread each way) until both end."""
    with client:
        try:
            server = socket.create_connection((LOOPBACK, port))
        except OSError:  # the server is not listening yet (or is gone): the client sees a closed connection
            return
        with server:
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            back = threading.Thread(target=_pump, args=(server, client), daemon=True)
            back.start()
            _pump(client, server)
            back.join()


def _accept(listener: socket.socket, port: int) -> None:
    """Relay every connection to `listener` (a thread each) until it is closed."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_relay_one, args=(client, port), daemon=True).start()


def _serve(socket_path: Path, port: int, command: list[str]) -> int:
    """Start `command`, relay `socket_path` -> LOOPBACK:`port` until it exits; its exit code (128 + signal)."""
    process = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: process.send_signal(number))
    socket_path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    os.chmod(socket_path, 0o600)
    listener.listen(128)
    threading.Thread(target=_accept, args=(listener, port), daemon=True).start()
    try:
        code = process.wait()
    finally:
        listener.close()
        socket_path.unlink(missing_ok=True)
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnsvr.serving.local.isolated_milvus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", type=Path, required=True, help="the Unix socket file clients connect to")
    parser.add_argument("--port", type=int, required=True, help="the server's port on the namespace's loopback")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...: the server's launcher")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the server's command after --")
    loopback_up()
    return _serve(args.socket, args.port, command)


if __name__ == "__main__":
    sys.exit(main())
