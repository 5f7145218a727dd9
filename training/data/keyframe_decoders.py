"""Keyframes decoded ahead, each on its own: threads with a decoder of their own, for sampling at 1 fps.

At 1 fps with a keyframe every 1-2 s, `video._timed_frames` decodes most groups of pictures as their keyframe
alone, from a flushed decoder.  Those keyframes are independent of each other, so they can be decoded at once
on several decoders: here on `workers` threads, each with a container opened again on the same source (its own
demuxer and decoder, one FFmpeg thread), ahead of the caller, which takes the frames in order.

Why not FFmpeg's own threads: slice threads split one picture, which needs pictures with several slices
(FFmpeg's encoders usually write one), and they wait for each other on every picture, which leaves a core idle
whenever the extractor beside them holds the other one; frame threads overlap consecutive pictures of one
decode, and each keyframe here is a decode of its own.  Sampling a 30 s 720p clip of one slice per picture at
1 fps on 2 cores: 762 -> 434 ms alone, 859 -> 687 ms beside a busy extractor (`benchmarks/
keyframe_decoders_bench.py`, `benchmarks/results/keyframe_decoders.md`).

    decoders = KeyframeDecoders(reopen, workers=2)
    decoders.submit(key, packet)        # decode this keyframe packet alone, from a fresh decoder, in the background
    decoders.result(key)                # its frames ([] when it shows none), in decoding order; raises as decoding
    decoders.close()                    # drops what is left, closes the containers

`reopen()` -> (container, stream): the same source opened again, the video stream to decode.  The frames are
those of a flushed decoder fed the packet and drained (`video._timed_frames`' standalone keyframe decode).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import av


class KeyframeDecoders:
    """Keyframe packets decoded alone on `workers` threads, each with its own decoder (see the module)."""

    def __init__(self, reopen: Callable[[], tuple[av.container.InputContainer, av.video.stream.VideoStream]],
                 workers: int = 2):
        self.reopen = reopen
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="keyframes")
        self.local = threading.local()
        self.opened: list[av.container.InputContainer] = []
        self.lock = threading.Lock()
        self.pending: dict[int, Future] = {}

    def submit(self, key: int, packet: av.Packet) -> None:
        """Start decoding `packet` (a keyframe) alone; `key` names it for `result` (submitted once)."""
        if key not in self.pending:
            self.pending[key] = self.pool.submit(self._decode, packet)

    def submitted(self, key: int) -> bool:
        return key in self.pending

    def result(self, key: int) -> list[av.VideoFrame]:
        """The frames of the packet submitted as `key`, waiting for them; av.FFmpegError as its decode raised."""
        return self.pending.pop(key).result()

    def discard(self, key: int) -> None:
        """Forget the packet submitted as `key` (its decode, if started, runs to its end unseen)."""
        future = self.pending.pop(key, None)
        if future is not None:
            future.cancel()

    def close(self) -> None:
        """Cancel what has not started, wait for what has, close every container opened."""
        for future in self.pending.values():
            future.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True)
        with self.lock:
            for container in self.opened:
                container.close()
            self.opened.clear()

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        stream = getattr(self.local, "stream", None)
        if stream is None:
            container, stream = self.reopen()
            with self.lock:
                self.opened.append(container)
            stream.thread_type = "SLICE"
            stream.codec_context.thread_count = 1  # the parallelism is the workers'
            self.local.stream = stream
        codec = stream.codec_context
        try:
            return [*codec.decode(packet), *codec.decode(None)]
        finally:
            codec.flush_buffers()
