"""One request's inputs as plain numpy arrays, with the checks every pipeline shares, and its timings.

The Triton adapters (`dnsvr.serving.triton`) hand each request over as `RequestInputs({name: array})`; the
pipeline code reads it through these accessors, which name the input and the problem when it is wrong
(`BadRequest`, reported to the client as InvalidVideo).  Nothing here imports Triton.

    inputs = RequestInputs({"video_id": np.array([b"clip-1"], object), "top_k": np.array([10], np.int32)})
    inputs.text("video_id", required=True) -> "clip-1";  inputs.integer("top_k") -> 10
    inputs.texts("video_ids", 1000) -> ["clip-1", ...] (a BYTES [n] input)
    inputs.number("duplicate_threshold") -> float or None
    inputs.video() -> {"video": [1] bytes} or {"frames": uint8 [T, 224, 224, 3]}: exactly one of them
    inputs.json_object("metadata") -> dict
    bytes_array(["a", b"b"]) -> object array of bytes (a BYTES output)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VIDEO_INPUTS = ("video", "frames")
SHORTENED_CHARS = 300


def shortened(text: str, limit: int = SHORTENED_CHARS) -> str:
    """`text` quoted, cut to `limit` characters with the number left out (error messages stay small: they
    travel in gRPC trailers, whose size is capped)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text) - limit} more characters)"


class BadRequest(ValueError):
    """The request itself is wrong (missing or extra input, bad value): reported as invalid_video."""

    tag = "invalid_video"


@dataclass
class RequestInputs:
    """The inputs a request carried, by name (absent optional inputs are simply not there), and its parameters
    (forwarded headers such as the access token)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    parameters: dict[str, object] = field(default_factory=dict)

    def optional(self, name: str) -> np.ndarray | None:
        return self.arrays.get(name)

    def required(self, name: str) -> np.ndarray:
        array = self.arrays.get(name)
        if array is None:
            raise BadRequest(f"the request lacks input '{name}'")
        return array

    def text(self, name: str, required: bool = False) -> str | None:
        """A BYTES [1] input as str (UTF-8); None when absent and not required."""
        array = self.required(name) if required else self.optional(name)
        if array is None:
            return None
        if array.size != 1:
            raise BadRequest(f"input '{name}' must hold one string, got {array.size}")
        value = array.reshape(-1)[0]
        try:
            return value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise BadRequest(f"input '{name}' is not valid UTF-8") from None

    def texts(self, name: str, max_count: int) -> list[str]:
        """A required BYTES [n] input (1 <= n <= max_count) as str values (UTF-8)."""
        array = self.required(name).reshape(-1)
        if not 1 <= array.size <= max_count:
            raise BadRequest(f"input '{name}' must hold 1 to {max_count} strings, got {array.size}")
        try:
            return [value.decode("utf-8") if isinstance(value, bytes) else str(value) for value in array]
        except UnicodeDecodeError:
            raise BadRequest(f"input '{name}' holds a string that is not valid UTF-8") from None

    def integer(self, name: str, default: int | None = None) -> int:
        """An integer [1] input; `default` when absent (BadRequest when absent without a default)."""
        array = self.optional(name)
        if array is None:
            if default is None:
                raise BadRequest(f"the request lacks input '{name}'")
            return default
        if array.size != 1 or not np.issubdtype(array.dtype, np.integer):
            raise BadRequest(f"input '{name}' must hold one integer, got {array.size} of {array.dtype}")
        return int(array.reshape(-1)[0])

    def number(self, name: str) -> float | None:
        """A floating-point [1] input as float (NaN passes: the caller's range check names it); None when absent."""
        array = self.optional(name)
        if array is None:
            return None
        if array.size != 1 or not np.issubdtype(array.dtype, np.floating):
            raise BadRequest(f"input '{name}' must hold one floating-point number, got {array.size} of {array.dtype}")
        return float(array.reshape(-1)[0])

    def json_object(self, name: str) -> dict[str, Any]:
        """A BYTES [1] input holding a JSON object ({} when absent)."""
        text = self.text(name) or "{}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise BadRequest(f"{name} is not valid JSON: {error}") from None
        if not isinstance(value, dict):
            raise BadRequest(f"{name} must be a JSON object")
        return value

    def given_videos(self) -> list[str]:
        """Which of `video` / `frames` the request carries."""
        return [name for name in VIDEO_INPUTS if name in self.arrays]

    def video(self) -> dict[str, np.ndarray]:
        """Exactly one of `video` (encoded file bytes) or `frames` (uint8 RGB), as given."""
        given = self.given_videos()
        if len(given) != 1:
            raise BadRequest(f"send exactly one of 'video' (file bytes) or 'frames' (uint8 RGB), got {given}")
        return {given[0]: self.arrays[given[0]]}


def bytes_array(values: list[bytes | str]) -> np.ndarray:
    """A BYTES output: str values encoded as UTF-8 -> `[n]` object array of bytes."""
    return np.array([v.encode("utf-8") if isinstance(v, str) else v for v in values], dtype=np.object_)


class Stopwatch:
    """Named stage durations in milliseconds, in the order they were measured; `total` since creation."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - began) * 1000.0
            self.stages[name] = self.stages.get(name, 0.0) + elapsed

    def report(self) -> np.ndarray:
        """The stages and `total` ms as a BYTES [1] JSON output (`timings`)."""
        return bytes_array([json.dumps({**self.stages, "total": (time.perf_counter() - self.began) * 1000.0})])
