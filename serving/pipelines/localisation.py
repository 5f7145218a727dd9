"""Where the copy is, for each re-ranked search hit: `align` over the frame-to-frame matrix the fine similarity
model already gave (its `f2f` output), no second pass over the codes.

    hit_segments(f2f_by_id, ids, reranked, fps) -> [[Segment, ...] per hit]   [] where not re-ranked
    segment_outputs(segments) -> {"segment_hits": int32 [S], "segment_times": float32 [S, 4],
                                  "segment_confidences": float32 [S]}   (`spec.SEGMENT_OUTPUTS`)

Both videos' frames are at the served decode rate (`spec.DECODE_FPS`, what video_features decodes and the store
holds), so frame i of either is time i / fps.  Matrices are a pair's real frames only: `[Lq, Lt]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from dnsvr.training.localisation import Segment, align


def hit_segments(f2f_by_id: Mapping[str, np.ndarray], ids: Sequence[str], reranked: np.ndarray,
                 fps: float) -> list[list[Segment]]:
    """Per hit (ids `[n]`, reranked bool `[n]`), its copied segments best first: `align` over its matrix
    `f2f_by_id[id]` `[Lq, Lt]` at `fps` on both axes where it was re-ranked, [] elsewhere."""
    return [align(f2f_by_id[video_id], fps, fps) if flag else []
            for video_id, flag in zip(ids, np.asarray(reranked, bool), strict=True)]


def segment_outputs(segments: Sequence[Sequence[Segment]]) -> dict[str, np.ndarray]:
    """Segments per hit -> dnsvr_search's segment tensors, flattened in hit order (a hit's best first):
    segment_hits int32 `[S]` (the hit's position), segment_times float32 `[S, 4]` (query start, query end,
    target start, target end; seconds), segment_confidences float32 `[S]`."""
    flat = [(position, segment) for position, found in enumerate(segments) for segment in found]
    times = [(s.query_start_s, s.query_end_s, s.target_start_s, s.target_end_s) for _, s in flat]
    return {
        "segment_hits": np.array([position for position, _ in flat], np.int32),
        "segment_times": np.array(times, np.float32).reshape(-1, 4),
        "segment_confidences": np.array([s.confidence for _, s in flat], np.float32),
    }
