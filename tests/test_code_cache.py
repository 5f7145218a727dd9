"""CodeCache: the search model's in-process LRU of fine codes, bounded by bytes (dnsvr.serving.pipelines.code_cache)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from dnsvr.serving.pipelines.code_cache import CodeCache, budget_bytes

FRAME = 9 * 64  # bytes of one packed frame


def codes(frames: int, value: int = 1) -> np.ndarray:
    return np.full((frames, 9, 64), value, np.uint8)


def held(cache: CodeCache, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
    return set(cache.lookup(keys))


def test_least_recently_used_entries_go_first_when_the_bytes_run_out():
    cache = CodeCache(10 * FRAME)
    cache.put(("a", 1), codes(4))
    cache.put(("b", 1), codes(4))
    assert held(cache, [("a", 1)]) == {("a", 1)}  # a is now the most recently used
    cache.put(("c", 1), codes(4))  # 12 frames > 10: b, the least recently used, goes
    assert held(cache, [("a", 1), ("b", 1), ("c", 1)]) == {("a", 1), ("c", 1)}
    cache.put(("d", 1), codes(10))  # the whole budget: everything else goes
    assert held(cache, [("a", 1), ("c", 1), ("d", 1)]) == {("d", 1)}
    cache.put(("e", 1), codes(1))
    assert held(cache, [("d", 1), ("e", 1)]) == {("e", 1)}


def test_keys_are_video_and_generation():
    cache = CodeCache(100 * FRAME)
    cache.put(("a", 1), codes(2, 1))
    cache.put(("a", 2), codes(3, 2))
    found = cache.lookup([("a", 2), ("a", 3), ("b", 1)])
    assert list(found) == [("a", 2)] and found["a", 2].tobytes() == codes(3, 2).tobytes()
    cache.put(("a", 2), codes(3, 5))  # the same key again replaces the entry, counted once: 2 + 3 + 95 fit
    cache.put(("x", 1), codes(95))
    assert held(cache, [("a", 1), ("a", 2), ("x", 1)]) == {("a", 1), ("a", 2), ("x", 1)}
    assert (cache.lookup([("a", 2)])["a", 2] == 5).all()


def test_entries_are_read_only_copies():
    cache = CodeCache(100 * FRAME)
    original = codes(3, 7)
    cache.put(("a", 1), original)
    original[:] = 0  # the caller's array stays the caller's
    stored = cache.lookup([("a", 1)])["a", 1]
    assert (stored == 7).all() and not stored.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        stored[0] = 1
    floats = np.ones((2, 9, 512), np.float32)
    cache.put(("f", 1), floats)
    assert cache.lookup([("f", 1)])["f", 1].dtype == np.float32


def test_a_budget_of_zero_keeps_nothing_and_an_oversize_array_is_not_kept():
    off = CodeCache(0)
    off.put(("a", 1), codes(1))
    assert off.lookup([("a", 1)]) == {}
    cache = CodeCache(10 * FRAME)
    cache.put(("small", 1), codes(3))
    cache.put(("huge", 1), codes(11))  # over the whole budget: not kept, and nothing evicted for it
    assert held(cache, [("small", 1), ("huge", 1)]) == {("small", 1)}


def test_budget_from_the_model_parameter():
    assert budget_bytes("256") == 256 << 20 and budget_bytes(" 0.5 ") == 1 << 19
    assert budget_bytes("0") == budget_bytes("") == budget_bytes(None) == 0  # absent: a config without it
    for bad in ("-1", "lots", "nan", "inf"):
        with pytest.raises(ValueError, match="code_cache_mb must be"):
            budget_bytes(bad)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="bytes >= 0"):
            CodeCache(bad)


def test_threads_sharing_a_cache_keep_it_consistent():
    """Smoke test: 8 threads putting and looking up overlapping keys; every array found is the one put under its
    key, and the cache stays within its budget."""
    cache = CodeCache(40 * FRAME)
    errors: list[str] = []
    start = threading.Barrier(8)

    def work(thread: int) -> None:
        start.wait()
        for step in range(400):
            key = (f"v{(thread + step) % 13}", step % 3)
            value = ((thread + step) % 13) * 3 + step % 3
            cache.put(key, codes(1 + value % 5, value))
            for (video_id, generation), found in cache.lookup([key, ("v0", 0)]).items():
                expected = int(video_id[1:]) * 3 + generation
                if not (found == expected).all() or len(found) != 1 + expected % 5:
                    errors.append(f"{video_id}/{generation}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    everything = cache.lookup([(f"v{n}", g) for n in range(13) for g in range(3)])
    assert 0 < sum(found.nbytes for found in everything.values()) <= 40 * FRAME


def test_offer_keeps_codes_only_where_they_fit_and_drops_nothing():
    cache = CodeCache(10 * FRAME)
    cache.put(("searched", 1), codes(4))
    assert cache.offer(("warm", 1), codes(4, 2)) and cache.held_bytes == 8 * FRAME
    assert not cache.offer(("big", 1), codes(3))  # 11 frames > 10: refused, nothing dropped for it
    assert held(cache, [("searched", 1), ("warm", 1), ("big", 1)]) == {("searched", 1), ("warm", 1)}
    assert cache.offer(("warm", 1), codes(9))  # held already: kept as it was
    assert (cache.lookup([("warm", 1)])["warm", 1] == 2).all()
    assert cache.missing([("big", 1), ("warm", 1), ("other", 2)]) == [("big", 1), ("other", 2)]


def test_offered_codes_are_the_first_to_go():
    cache = CodeCache(10 * FRAME)
    cache.put(("searched", 1), codes(4))
    cache.offer(("warm", 1), codes(4))  # the least recently used, though offered last
    cache.put(("new", 1), codes(4))  # 12 frames > 10: the offered entry goes, the searched one stays
    assert held(cache, [("searched", 1), ("warm", 1), ("new", 1)]) == {("searched", 1), ("new", 1)}
    assert cache.missing([("searched", 1)]) == []
