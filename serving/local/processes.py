"""Processes and ports of this machine, read from /proc: what the launchers and their supervision share.

    free_port() -> a TCP port free on 127.0.0.1 now
    process_start_time(pid) -> the kernel's start time of `pid` (tells a process from a later one reusing its id)
    still_same_process(pid, start) -> alive (not a zombie) and the same process
    descendants(pid) -> {pid: start time} of every living descendant
    lock_holders(path) -> the processes holding an flock on `path`
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def process_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> dict[int, str]:
    """{pid: start time} of every living descendant of `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found: dict[int, str] = {}
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        start = process_start_time(child)
        if start is not None:
            found[child] = start
            pending += children.get(child, [])
    return found


def still_same_process(pid: int, start_time: str) -> bool:
    """True while `pid` is alive (not a zombie) and is the process that had `start_time` (not a reuse)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != b"Z" and fields[19].decode() == start_time




def lock_holders(path: str | os.PathLike) -> list[int]:
    """Pids holding a POSIX or flock lock on the file `path` (from /proc/locks; [] when none or no such file)."""
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return []
    holders = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        try:
            pid, device_inode = int(fields[4]), fields[5]
        except (IndexError, ValueError):
            continue
        if int(device_inode.rsplit(":", 1)[1]) == inode:
            holders.append(pid)
    return sorted(set(holders))
