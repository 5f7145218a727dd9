"""Run an iterator on a thread of its own, so that its producer and its consumer work side by side.

    with in_background(decoded_frames(video), depth=8) as frames:   # decoding goes on while ...
        for frame in frames:
            extract(frame)                                          # ... the frames at hand are used

The producer runs ahead by at most `depth` items (a bounded queue).  An exception it raises reaches the
consumer at the point where the items ran out, with its traceback.  Leaving the `with` block (the items used
up, or an exception of the consumer) stops the producer: it stops taking items, the iterator is closed (a
generator's `finally` and `with` blocks run, on the producer's thread) and the thread is joined, so nothing
keeps running after the block.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

Item = TypeVar("Item")
POLL_S = 0.05  # how often a producer blocked on a full queue looks whether it was stopped


class _End:
    """The producer's last message: the items ran out (`error` None) or raised `error`."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


@contextmanager
def in_background(items: Iterator[Item], depth: int = 8, name: str = "background") -> Iterator[Iterator[Item]]:
    """`items`, produced on a thread called `name` at most `depth` ahead of the consumer (see the module)."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(message, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_End(None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_End(error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[Item]:
        while True:
            message = handoff.get()
            if isinstance(message, _End):
                if message.error is not None:
                    raise message.error
                return
            yield message

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()
