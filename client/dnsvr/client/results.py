"""Typed results of the dnsvr client: search hits in rank order, index outcomes and duplicates, health."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    """Where a copy is: query [query_start_s, query_end_s) matches hit [target_start_s, target_end_s), seconds;
    confidence in [0, 1] (how far above the copy threshold the frame similarities along the match lie)."""

    query_start_s: float
    query_end_s: float
    target_start_s: float
    target_end_s: float
    confidence: float


@dataclass(frozen=True)
class SearchHit:
    """One ranked video: final `score` (where `reranked`, by the policy's fusion, the pack's default unless
    the policy names one: the fine score s/2 + 0.5 with 'mix', a coarse score the re-ranked block held with
    'cascade', the calibrated fine score with 'calibrated'; else the coarse cosine), plus its coarse score, the
    selector's score (None where the selector did not run) and, where `reranked`, the copied segments the
    server found in the pair, best first (empty where not re-ranked or none found)."""

    video_id: str
    score: float
    reranked: bool
    coarse_score: float
    selector_score: float | None
    segments: tuple[Segment, ...] = ()


@dataclass(frozen=True)
class SearchResult:
    """Hits best first and the server's per-stage timings in milliseconds (embed, coarse_search, selector,
    fetch_codes, fine_similarity, total) plus `round_trip` measured by the client."""

    hits: list[SearchHit]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __iter__(self) -> Iterator[SearchHit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, index: int) -> SearchHit:
        return self.hits[index]

    @property
    def ids(self) -> list[str]:
        return [hit.video_id for hit in self.hits]


@dataclass(frozen=True)
class Duplicate:
    """An indexed video found to be a near-duplicate of a video being indexed: its id and served score."""

    video_id: str
    score: float


@dataclass(frozen=True)
class IndexResult:
    """A video indexed (or re-indexed: the id now holds only this version): frames it has, timings in ms, whether
    it was `stored` (False: on_duplicate="skip" found a near-duplicate) and the near-duplicates found, best first
    (always empty with on_duplicate="keep", which does not search)."""

    video_id: str
    frame_count: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    stored: bool = True
    duplicates: list[Duplicate] = field(default_factory=list)


@dataclass(frozen=True)
class IndexOutcome:
    """One item of `index_many`: the result, or the error that item raised (the others still ran)."""

    video_id: str
    result: IndexResult | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Health:
    """Server live/ready, which pipeline models are ready, and the store's report (or the error reaching it)."""

    live: bool
    ready: bool
    models: dict[str, bool]
    store: dict | None
    store_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.live and self.ready and all(self.models.values()) and self.store_error is None
