"""What a browser may upload as a query video: bounded bytes, read into memory, that PyAV can decode.

Nothing here touches the file system: the body is read chunk by chunk into memory (stopping past the limit),
and the decoder reads those bytes; no name or path from the request is ever used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

DEFAULT_MAX_UPLOAD_MB = 64
MEGABYTE = 1 << 20


class UploadRejected(ValueError):
    """An upload the page refuses; `status` is the HTTP status to answer with (a 4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class UploadLimit:
    """The largest upload accepted, in bytes."""

    max_bytes: int

    @classmethod
    def from_megabytes(cls, megabytes: float) -> UploadLimit:
        if megabytes <= 0:
            raise ValueError(f"the upload limit must be positive, got {megabytes} MB")
        return cls(int(megabytes * MEGABYTE))

    def describe(self) -> str:
        return f"{self.max_bytes / MEGABYTE:g} MB"

    def check_declared(self, content_length: str | None) -> None:
        """Refuse early (413) when the request's Content-Length already says it is too big."""
        if content_length is not None and content_length.isdigit() and int(content_length) > self.max_bytes:
            raise UploadRejected(413, f"the video is {int(content_length) / MEGABYTE:.1f} MB, over the "
                                      f"{self.describe()} limit")


async def read_upload(chunks: AsyncIterator[bytes], limit: UploadLimit) -> bytes:
    """The request body in memory; 413 as soon as it passes the limit, 400 when it is empty."""
    body = bytearray()
    async for chunk in chunks:
        body.extend(chunk)
        if len(body) > limit.max_bytes:
            raise UploadRejected(413, f"the video is over the {limit.describe()} limit")
    if not body:
        raise UploadRejected(400, "the upload is empty (0 bytes): choose a video file")
    return bytes(body)


@dataclass(frozen=True)
class QueryVideo:
    """An accepted upload: its bytes (sent to the service as they are), duration in seconds (None when the
    container does not say) and a few evenly spaced RGB frames for thumbnails."""

    data: bytes
    duration_s: float | None
    frames: list


def checked_video(data: bytes, thumbnails: int = 8, thumbnail_size: int = 96) -> QueryVideo:
    """Decode `data` far enough to know it is a video (415 when it is not) and take `thumbnails` frames spread
    over its duration, each with its shorter side `thumbnail_size` pixels."""
    from dnsvr.training.data.video import VideoDecodeError, decode_video, probe_video

    try:
        duration = probe_video(data).duration
        fps = min(1.0, thumbnails / duration) if duration else 1.0
        frames = decode_video(data, fps=fps, size=thumbnail_size, full_frames=True, max_frames=thumbnails,
                              min_frames=0)
    except VideoDecodeError as error:
        raise UploadRejected(415, f"not a video this page can read: {error}") from None
    return QueryVideo(data=data, duration_s=duration, frames=list(frames))
