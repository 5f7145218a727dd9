"""Video thumbnails: made from the decoded frames when a video is indexed, kept in its store row, served by
`dnsvr_thumbnails` (the web page shows them beside the hits).

    jpeg_bytes(frame uint8 [H, W, 3], quality) -> JPEG bytes
    video_thumbnail(frames uint8 [T, 224, 224, 3]) -> JPEG bytes of the middle frame, spec.THUMBNAIL_SIZE px
        square, at most spec.MAX_THUMBNAIL_BYTES (lower JPEG quality where a busy frame needs it)
    thumbnails_request(inputs, stores, consistency) -> {"thumbnails": BYTES [n]}: the stored JPEG of each id of
        `video_ids` BYTES [n] (1 <= n <= spec.MAX_TOP_K), b"" where the id is not indexed or has none (a video
        indexed into a store made before thumbnails existed)
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from dnsvr.client import spec
from dnsvr.client.ids import check_video_id
from dnsvr.serving.pipelines.requests import RequestInputs, bytes_array

if TYPE_CHECKING:
    from dnsvr.serving.pipelines.store_access import ServiceStore

QUALITIES = (80, 60, 40, 20)  # tried in turn until the JPEG fits spec.MAX_THUMBNAIL_BYTES


def jpeg_bytes(frame: np.ndarray, quality: int = QUALITIES[0]) -> bytes:
    """One uint8 RGB frame [H, W, 3] as JPEG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def video_thumbnail(frames: np.ndarray) -> bytes:
    """uint8 [T, H, W, 3] (T >= 1) -> the JPEG thumbnail of frame T // 2, scaled to THUMBNAIL_SIZE px square."""
    from PIL import Image

    middle = Image.fromarray(np.ascontiguousarray(frames[len(frames) // 2]))
    small = np.asarray(middle.resize((spec.THUMBNAIL_SIZE, spec.THUMBNAIL_SIZE), Image.Resampling.BICUBIC))
    for quality in QUALITIES:
        jpeg = jpeg_bytes(small, quality)
        if len(jpeg) <= spec.MAX_THUMBNAIL_BYTES:
            return jpeg
    raise AssertionError(f"a {spec.THUMBNAIL_SIZE} px JPEG at quality {QUALITIES[-1]} is over "
                         f"{spec.MAX_THUMBNAIL_BYTES} bytes")


def thumbnails_request(inputs: RequestInputs, stores: ServiceStore, consistency: str) -> dict[str, np.ndarray]:
    """One `dnsvr_thumbnails` request -> its outputs (module docstring); every id is checked first."""
    video_ids = [check_video_id(video_id) for video_id in inputs.texts("video_ids", spec.MAX_TOP_K)]
    store = stores.existing()
    found = store.thumbnails(video_ids, consistency) if store is not None else {}
    return {"thumbnails": bytes_array([found.get(video_id, b"") for video_id in video_ids])}
