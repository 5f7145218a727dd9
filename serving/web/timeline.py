"""A hit's matched segments as bars on two timelines, the query's and the target's, in percent of each.

The query's timeline spans its duration when known; the target's duration is not part of a hit, so its timeline
spans up to its last matched second (and the query's too when its duration is unknown).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dnsvr.client import SearchHit

MIN_WIDTH_PCT = 0.75  # a one-frame match stays visible


@dataclass(frozen=True)
class Bar:
    """One matched span on a timeline: position and width in percent, the span in seconds, its confidence."""

    left_pct: float
    width_pct: float
    start_s: float
    end_s: float
    confidence: float


def bars(spans: list[tuple[float, float, float]], scale_s: float) -> list[Bar]:
    """(start_s, end_s, confidence) spans as bars on a timeline of `scale_s` seconds, clipped to it; spans that
    are empty or fall outside are left out, and none is narrower than MIN_WIDTH_PCT."""
    if scale_s <= 0:
        return []
    placed = []
    for start, end, confidence in spans:
        start, end = max(0.0, start), min(scale_s, end)
        if end < start or start >= scale_s:
            continue
        left = 100.0 * start / scale_s
        width = min(max(100.0 * (end - start) / scale_s, MIN_WIDTH_PCT), 100.0 - left)
        placed.append(Bar(round(left, 3), round(width, 3), start, end, confidence))
    return placed


def hit_timeline(hit: SearchHit, query_duration_s: float | None) -> dict:
    """The JSON the page draws for one hit: its segments (none when it was not re-ranked), and the bars of both
    timelines with their scales."""
    segments = list(hit.segments)
    last_query = max((segment.query_end_s for segment in segments), default=0.0)
    query_scale = query_duration_s if query_duration_s else last_query
    target_scale = max((segment.target_end_s for segment in segments), default=0.0)
    return {
        "segments": [{name: float(getattr(segment, name)) for name in
                      ("query_start_s", "query_end_s", "target_start_s", "target_end_s", "confidence")}
                     for segment in segments],
        "query_scale_s": query_scale,
        "target_scale_s": target_scale,
        "query_bars": [asdict(bar) for bar in bars(
            [(s.query_start_s, s.query_end_s, s.confidence) for s in segments], query_scale)],
        "target_bars": [asdict(bar) for bar in bars(
            [(s.target_start_s, s.target_end_s, s.confidence) for s in segments], target_scale)],
    }
