"""Errors of the dnsvr service, shared by the server (which tags its messages) and the client (which maps them).

A server-side failure that the caller can act on is sent as a Triton error whose message starts with a tag,
`[dnsvr:invalid_video] pattern.mp4: no video stream`; `error_from_message` turns it back into the exception
class below, so a client sees `InvalidVideo`, `NotFound` or `ServerUnavailable` rather than a gRPC status.
"""

from __future__ import annotations

import re

TAG_PATTERN = re.compile(r"\[dnsvr:(?P<tag>[a-z_]+)\]\s*(?P<message>.*)", re.DOTALL)


class DnsvrError(Exception):
    """Base of every error raised by the dnsvr client."""


class InvalidVideo(DnsvrError, ValueError):
    """The video (or another input: id, top_k, policy) was rejected; nothing was stored or changed."""

    tag = "invalid_video"


class NotFound(DnsvrError, KeyError):
    """No indexed video has this id."""

    tag = "not_found"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class ServerUnavailable(DnsvrError, ConnectionError):
    """The Triton server or the Milvus store behind it cannot be reached (down, overloaded, timed out)."""

    tag = "unavailable"


class Forbidden(DnsvrError, PermissionError):
    """The call needs the server's access token, and none or another one was sent."""

    tag = "forbidden"


class NoTextSearch(DnsvrError):
    """Text search cannot answer: the served model pack has no text-video student, or the store was built
    without text-video vectors (re-index with a pack that has one)."""

    tag = "no_text_search"


class ServerError(DnsvrError):
    """Any other failure reported by the server (a bug or a broken deployment); the message says which."""

    tag = "internal"


TAGS: dict[str, type[DnsvrError]] = {
    cls.tag: cls for cls in (InvalidVideo, NotFound, ServerUnavailable, Forbidden, NoTextSearch, ServerError)}
RETRYABLE_MESSAGES = ("is not healthy", "has no available versions")  # a dead python instance, a model reloading


def tagged(tag: str, message: str) -> str:
    """The server-side message for an error of kind `tag` (a key of TAGS)."""
    if tag not in TAGS:
        raise ValueError(f"unknown error tag {tag!r}; known: {sorted(TAGS)}")
    return f"[dnsvr:{tag}] {message}"


def error_from_message(message: str, status: str | None = None) -> DnsvrError:
    """The exception for a server error: a tagged message by its tag (found anywhere in it, since Triton
    prefixes ensemble/BLS context); else by gRPC status name: INVALID_ARGUMENT (Triton's own dtype/shape
    checks) -> InvalidVideo, UNAVAILABLE / DEADLINE_EXCEEDED -> ServerUnavailable, a model whose python instance
    died or that is being reloaded (`RETRYABLE_MESSAGES`) -> ServerUnavailable, others -> ServerError."""
    found = TAG_PATTERN.search(message)
    if found:
        return TAGS[found["tag"]](found["message"].strip())
    if status in ("StatusCode.INVALID_ARGUMENT", "INVALID_ARGUMENT"):
        return InvalidVideo(message)
    if status in ("StatusCode.UNAVAILABLE", "UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"):
        return ServerUnavailable(message)
    if any(marker in message for marker in RETRYABLE_MESSAGES):
        return ServerUnavailable(message)
    return ServerError(message)
