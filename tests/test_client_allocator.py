"""The client's allocator setting for large uploads (`dnsvr.client.allocator`): what it changes (page faults of
big buffers copied again and again, counted in a fresh process), when it stays out, and that the clients apply
it before a large upload only."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from dnsvr.client import VideoSearchClient, allocator, protocol
from dnsvr.client.aio_client import AsyncVideoSearchClient

# Four copies of 24 MiB made and freed five times (a large upload's copies, request after request), without
# transparent huge pages; prints the page faults of each round.  argv[1] "keep": keep_freed_memory() first.
COPIES = """
import ctypes, json, resource, sys
from dnsvr.client import allocator
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB pages, a fault each, whatever the host's THP
applied = allocator.keep_freed_memory() if sys.argv[1] == "keep" else None
data = bytes(24 << 20)
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    copies = [bytearray(data) for _ in range(4)]
    del copies
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def copies_faults(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in allocator.ENVIRONMENT and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", COPIES, mode], env=clean | env, capture_output=True, text=True,
                          check=True, timeout=120)
    return json.loads(done.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_kept_memory_stops_the_page_faults_of_repeated_big_copies():
    default, kept = copies_faults("default"), copies_faults("keep")
    assert kept["applied"] is True
    page = os.sysconf("SC_PAGE_SIZE")
    assert min(default["faults"][1:]) > (24 << 20) // page  # at least a buffer's pages, every round again
    assert max(kept["faults"][1:]) < 100  # the heap keeps them: none after the first round


def test_the_operators_own_malloc_settings_win():
    assert allocator.operator_settings({"MALLOC_TRIM_THRESHOLD_": "0"})
    assert allocator.operator_settings({"MALLOC_MMAP_THRESHOLD_": "1"})
    assert allocator.operator_settings({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1"})
    assert not allocator.operator_settings({"GLIBC_TUNABLES": "glibc.rtld.nns=2", "PATH": "/bin"})
    assert copies_faults("keep", MALLOC_TRIM_THRESHOLD_="131072")["applied"] is False


def test_before_upload_leaves_small_payloads_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    assert allocator.before_upload(allocator.LARGE_UPLOAD_BYTES - 1) is False and calls == []
    assert allocator.before_upload(allocator.LARGE_UPLOAD_BYTES) is True and calls == [1]


def test_payload_bytes_counts_encoded_videos_and_arrays():
    request = protocol.search_request(b"v" * 1000, top_k=3)
    assert 1000 <= request.payload_bytes() < 1100
    frames = protocol.search_request(np.zeros((2, 224, 224, 3), np.uint8), top_k=3)
    assert frames.payload_bytes() >= 2 * 224 * 224 * 3


class StubTriton:
    """Answers every infer with empty outputs."""

    def infer(self, *args, **kwargs):
        return SimpleNamespace(as_numpy=lambda name: np.zeros(0))


class StubAioTriton(StubTriton):
    async def infer(self, *args, **kwargs):
        return StubTriton.infer(self)

    async def close(self):
        pass


@pytest.mark.parametrize("tune", [True, False])
def test_clients_tune_the_allocator_before_a_request_unless_told_not_to(monkeypatch, tune):
    sizes = []
    monkeypatch.setattr(allocator, "before_upload", sizes.append)
    request = protocol.search_request(b"v" * 5000, top_k=3)
    client = VideoSearchClient("127.0.0.1:1", tune_allocator=tune)
    monkeypatch.setattr(client, "_triton", StubTriton)
    client._infer(request, idempotent=True)

    async def aio_request():
        aio = AsyncVideoSearchClient("127.0.0.1:1", tune_allocator=tune)
        await aio.close()
        aio._client = StubAioTriton()
        await aio._infer(request, idempotent=True)

    asyncio.run(aio_request())
    assert sizes == ([request.payload_bytes()] * 2 if tune else [])
