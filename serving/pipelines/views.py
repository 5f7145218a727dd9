"""What `video_views` does, free of Triton: one video -> the S^c vectors and fine codes of its crop views (issue 15);
and what dnsvr_index does with the pack's frame windows: features -> its segment views' S^c vectors.

    view_vectors(inputs, decoding, layout, extract, coarse, fine, batch, coarse_batch)
        -> {"views": float32 [1, B, C], "view_codes": [1, B, T, 9, 64] uint8 / [1, B, T, 9, 512] float32}
        (fine None, a repository whose store keeps no crop views' codes: {"views"} alone)
    segment_vectors(features, layout, coarse) -> float32 [W, C]

The video is decoded exactly as video_features decodes it (`video.frame_chunks`: the same frames, so the same
frame count).  Every frame's zoomed crops of `layout` (`CropLayout.zoomed`: B square crops, each resized back to
224 x 224) go through the extractor at most `batch` images a request; each crop's frames `[T, 9, 512]`, a short
clip repeated to MIN_FRAMES as its full frame is, go through the coarse network at most `coarse_batch` crops a
request: one unit vector per crop, in the grid's order (row by row); and through the fine student's index
network, each crop's fine codes (the same frames as the full frame's `fine`).  With the full frame's (dnsvr_embed's
`coarse` and `fine`, view 0) these are the 1 + B views the store ranks a target by, its best view
(`VideoStore.search_coarse`), and whose codes the fine student compares (`CoarseHits.code_views`).  Queries never
take this path: a query keeps its full frame.  The offline evaluation's twin is `tradeoff.index_videos(crops=...)`
(with `VideoIndex.fine_view` "best"), which the tests hold it to.

Segment views (`SegmentLayout`): the coarse network on windows of the full frame's features as dnsvr_embed gives
them (video_features', short clips already repeated), windows of one length in one request, so no frame is
padded; a window shorter than 4 frames repeated as a short clip is.  Their offline twin is
`tradeoff.index_videos(segments=...)`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs
from dnsvr.serving.pipelines.video import Decoding, Extract, checked_video, frame_chunks
from dnsvr.training.data.crop_regions import CropLayout
from dnsvr.training.data.segments import SegmentLayout
from dnsvr.training.data.video import VideoDecodeError, pad_frames

Coarse = Callable[[np.ndarray, np.ndarray], np.ndarray]  # features [n, T, 9, 512], mask [n, T] -> [n, C]
Fine = Callable[[np.ndarray, np.ndarray], np.ndarray]  # features [n, T, 9, 512], mask [n, T] -> [n, T, 9, W]


def view_vectors(inputs: RequestInputs, decoding: Decoding, layout: CropLayout, extract: Extract, coarse: Coarse,
                 fine: Fine | None, batch: int = spec.FEATURE_EXTRACTOR.max_batch_size,
                 coarse_batch: int = spec.COARSE_EMBED.max_batch_size) -> dict[str, np.ndarray]:
    """`video_views`' output for one request (see the module); BadRequest for a bad or undecodable video."""
    video = checked_video(inputs, decoding)
    crops = len(layout.boxes)
    per_chunk = []
    try:
        for frames in frame_chunks(video, decoding):
            zoomed = layout.zoomed(frames)  # [B * n, 224, 224, 3], crop after crop
            features = np.concatenate([extract(zoomed[start:start + batch])["features"]
                                       for start in range(0, len(zoomed), batch)])  # [B * n, 9, 512]
            per_chunk.append(features.reshape(crops, len(frames), *features.shape[1:]))  # [B, n, 9, 512]
    except VideoDecodeError as error:
        raise BadRequest(str(error)) from None
    by_frame = np.concatenate(per_chunk, axis=1).transpose(1, 0, 2, 3)  # [T, B, 9, 512]
    views = np.ascontiguousarray(pad_frames(by_frame, spec.MIN_FRAMES).transpose(1, 0, 2, 3))  # [B, T', 9, 512]
    mask = np.ones(views.shape[:2], bool)  # [B, T']
    vectors = np.concatenate([coarse(views[start:start + coarse_batch], mask[start:start + coarse_batch])
                              for start in range(0, crops, coarse_batch)])  # [B, C]
    if fine is None:
        return {"views": vectors.astype(np.float32)[None]}
    codes = np.concatenate([fine(views[start:start + coarse_batch], mask[start:start + coarse_batch])
                            for start in range(0, crops, coarse_batch)])  # [B, T', 9, W]
    return {"views": vectors.astype(np.float32)[None], "view_codes": codes[None]}


def segment_vectors(features: np.ndarray, layout: SegmentLayout, coarse: Coarse,
                    batch: int = spec.COARSE_EMBED.max_batch_size) -> np.ndarray:
    """A video's full-frame features `[T, 9, 512]` -> its segment views' unit S^c vectors `[W, C]` float32, in the
    layout's order (module docstring); at most `batch` windows a request."""

    def embed(windows: list[np.ndarray]) -> np.ndarray:
        vectors: list[np.ndarray | None] = [None] * len(windows)
        by_length: dict[int, list[int]] = {}
        for i, window in enumerate(windows):
            by_length.setdefault(len(window), []).append(i)
        for members in by_length.values():
            for start in range(0, len(members), batch):
                part = members[start:start + batch]
                stacked = np.stack([windows[i] for i in part])  # [n, L, 9, 512]
                for i, vector in zip(part, coarse(stacked, np.ones(stacked.shape[:2], bool)), strict=True):
                    vectors[i] = vector  # [C]
        return np.stack(vectors).astype(np.float32)

    return layout.vectors(np.asarray(features, np.float32), embed)
