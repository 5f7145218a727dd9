"""Large uploads without fresh pages: glibc's allocator kept from handing big buffers back to the system.

glibc's malloc serves a large allocation with a mapping of its own (above M_MMAP_THRESHOLD: 128 KiB at first,
raised as such buffers are freed, to 32 MiB at most) and returns the free memory at the top of its heap to the
system (above M_TRIM_THRESHOLD, twice the former).  Sending a video copies its bytes several times (the
tensor's serialisation, the protobuf request, its wire form, gRPC's buffer), and with those defaults each copy
lands in pages the kernel must map and zero again, request after request: a search by a 23.5 MB clip took
28,603 page faults and 74 ms of the client's CPU, with the settings below none and 14 ms (`benchmarks/
upload_bench.py`, `benchmarks/results/upload.md`; page faults cost the most in a virtual machine).

    keep_freed_memory() -> bool            # M_MMAP_THRESHOLD = 32 MiB, M_TRIM_THRESHOLD = 128 MiB, once
    before_upload(payload_bytes) -> bool   # the same, for a payload of LARGE_UPLOAD_BYTES or more

The cost: the process keeps up to TRIM_THRESHOLD_BYTES of freed memory at the top of its heap instead of
returning it.  Settings of the operator's own win: nothing changes when MALLOC_TRIM_THRESHOLD_,
MALLOC_MMAP_THRESHOLD_ or a `glibc.malloc` tunable is in the environment.  Other C libraries (musl, macOS):
nothing changes.  The clients call `before_upload` unless made with `tune_allocator=False`; `dnsvr serve` sets
the same values for Triton and its python models (`dnsvr.serving.local.triton_server.ALLOCATOR_ENVIRONMENT`).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest: buffers up to this size come from the heap
TRIM_THRESHOLD_BYTES = 128 << 20  # free memory the heap keeps (a 23.5 MB upload's copies: ~100 MB)
LARGE_UPLOAD_BYTES = 8 << 20  # below this the faults cost a few ms (`benchmarks/upload_bench.py`)
ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES)}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_lock = threading.Lock()
_applied: bool | None = None  # None: not tried yet


def operator_settings(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Whether the environment already sets glibc's trim or mmap threshold (the operator's choice)."""
    return any(name in environ for name in ENVIRONMENT) or "glibc.malloc" in environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module) once per process; True when they are set here,
    False on another C library or when the environment sets them."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _set_thresholds()
        return _applied


def before_upload(payload_bytes: int) -> bool:
    """`keep_freed_memory()` for a payload of LARGE_UPLOAD_BYTES or more; False (nothing done) below it."""
    return payload_bytes >= LARGE_UPLOAD_BYTES and keep_freed_memory()


def _set_thresholds() -> bool:
    if operator_settings() or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                    TRIM_THRESHOLD_BYTES))
