"""`python -m dnsvr.serving.local.guard [--grace S] -- COMMAND ...`: run COMMAND so that it dies with whoever
started it, however that one dies (kill -9, an OOM kill, a container stop), never leaving orphans.

The launcher starts the guard as the leader of a new process group (`start_new_session=True`); the guard runs
COMMAND in that group, so COMMAND and everything it forks (Triton's python stubs, Milvus Lite's workers) share
it.  When the launcher dies the kernel sends the guard SIGUSR1 (PR_SET_PDEATHSIG), and a watch of its parent's
id covers the instant before that was armed; a SIGTERM, SIGINT or SIGHUP to the guard means the same.  The kernel
also sends that signal when the launcher's *thread* that started the guard ends (prctl(2): the "parent" is the
creating thread), e.g. a supervisor thread that restarted a server and is later stopped: so the guard stops on it
only when its parent process has changed (the launcher is gone), never because one of its threads ended.  Then the
guard sends SIGTERM to the whole group, SIGKILL to what is left of it after `--grace` seconds, and exits with
COMMAND's code.  When
COMMAND exits by itself, the guard exits with its code (a signal's death as 128 + signal).

`guarded(command, grace_s)` is the argument list a launcher passes to `subprocess.Popen`.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
POLL_S = 0.2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PARENT_DEATH_SIGNAL = signal.SIGUSR1  # a signal of its own: told apart from a stop request by the parent's id


def guarded(command: list[str], grace_s: float = 10.0) -> list[str]:
    """The command line that runs `command` under a guard (this interpreter, this module)."""
    return [sys.executable, "-m", "dnsvr.serving.local.guard", "--grace", str(grace_s), "--", *command]


def _group_members() -> list[int]:
    """The other living processes of the guard's process group (read from /proc)."""
    group, me, members = os.getpgrp(), os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != b"Z":
            members.append(int(entry))
    return members


def _stop_group(child: subprocess.Popen, grace_s: float) -> int:
    """SIGTERM the group (the guard ignores it), wait `grace_s` for the child, SIGKILL whatever of the group
    is left; -> the child's exit code."""
    for handled in STOP_SIGNALS:
        signal.signal(handled, signal.SIG_IGN)
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and (child.poll() is None or _group_members()):
        time.sleep(POLL_S)
    for pid in _group_members():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    code = child.wait()
    return code if code >= 0 else 128 - code


def run(command: list[str], grace_s: float) -> int:
    parent = os.getppid()
    stop = {"requested": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["requested"] = True

    def parent_thread_or_process_ended(signum: int, frame: object) -> None:
        if os.getppid() != parent:  # the process died (re-parented); else only its creating thread ended
            stop["requested"] = True

    for handled in STOP_SIGNALS:
        signal.signal(handled, request_stop)
    signal.signal(PARENT_DEATH_SIGNAL, parent_thread_or_process_ended)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL)
    child = subprocess.Popen(command)
    while True:
        code = child.poll()
        if code is not None:
            return code if code >= 0 else 128 - code
        if stop["requested"] or os.getppid() != parent:
            return _stop_group(child, grace_s)
        time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnsvr.serving.local.guard",
                                     description="Run COMMAND in this process group; stop the group when the "
                                                 "launcher dies or a stop signal arrives.")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    return run(command, args.grace)


if __name__ == "__main__":
    sys.exit(main())
