"""What `dnsvr_search` does between its model calls, free of Triton (unit-testable): DnS retrieval.

The networks are reached through `ModelCalls` (the adapter passes Triton requests; tests pass functions),
the store through `dnsvr.serving.pipelines.store_access.ServiceStore` / `VideoStore`.

    search_request(inputs, stores, calls, consistency, cache, fps) -> the outputs of one request
    search(store, calls, query, top_k, policy, candidates, filter, exclude_id, consistency, cache, fps,
           calibration=...) -> (Ranking, timings ms)

Request: video BYTES [1] | frames uint8 [T, 224, 224, 3] | video_id BYTES [1] (exactly one), top_k int32 [1],
rerank BYTES [1] (policy and fusion, `ranking.RerankPolicy`; default "fraction:0.1" with the pack's default
fusion, `ServiceStore.default_fusion`), candidates int32 [1]
(K', default max(top_k, 100)), filter BYTES [1] (Milvus expression over the per-video fields).  Outputs:
video_ids BYTES [n], scores / coarse_scores / selector_scores float32 [n], reranked bool [n], the re-ranked
hits' copied segments (`spec.SEGMENT_OUTPUTS`: segment_hits int32 [S], segment_times float32 [S, 4],
segment_confidences float32 [S]), timings BYTES [1] (JSON, ms per stage).  The embedding (or the stored one of
`video_id`, which is then left out of the results) -> Milvus coarse top-K' -> selector_score -> the policy's
pairs -> fine codes from the model instance's `CodeCache`, the misses from Milvus in a few reads on a reader
thread (the coarse hits carry each row's generation and frame count) -> fine_similarity in batches as the
codes arrive (scores and each pair's frame-to-frame matrix) -> `ranking.fuse` by the policy's fusion (mix,
cascade, or calibrated with the pack's `ScoreCalibration`) -> `localisation.hit_segments` over the re-ranked
hits' matrices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from dnsvr.client import spec
from dnsvr.serving.pipelines.batching import MAX_PAIRS_PER_BATCH, fine_batches, padded_batch
from dnsvr.serving.pipelines.code_cache import CodeCache, CodeKey
from dnsvr.serving.pipelines.localisation import hit_segments, segment_outputs
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs, Stopwatch, bytes_array, shortened
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.serving.store.schema import check_video_id
from dnsvr.serving.store.video_store import StoreError, StoreUnavailable, VideoNotFound, VideoStore
from dnsvr.training.localisation import Segment
from dnsvr.training.ranking import (
    RerankPolicy,
    ScoreCalibration,
    check_fusion,
    fuse,
    ranking_order,
    selector_rows,
)


@dataclass
class Embedding:
    """One video as dnsvr_embed returns it: coarse [C] float32 (unit norm), fine [T, 9, 64] uint8 or
    [T, 9, 512] float32, selector self-similarity (float), with a text-video student its vector text [D]
    float32 (unit norm; None without one), its JPEG thumbnail (None when not asked for) and, indexed with the
    pack's crop grid, its crop views' S^c vectors views [B, C] float32 and fine codes view_codes [B, T, 9, W]
    (video_views; None otherwise); indexed with the pack's frame windows, its full-frame features [T, 9, 512]
    float32 (dnsvr_embed's, when asked for) and its segment views' S^c vectors segments [W, C] (None otherwise).

    An indexed video's embedding may come without its codes (`fine` None): `stored` = (video_id, generation,
    frame_count) then says which to read, and the search reads them with its first candidates' codes
    (`indexed_query`)."""

    coarse: np.ndarray
    fine: np.ndarray | None
    selector: float
    text: np.ndarray | None = None
    thumbnail: bytes | None = None
    stored: tuple[str, int, int] | None = None
    views: np.ndarray | None = None
    view_codes: np.ndarray | None = None
    features: np.ndarray | None = None
    segments: np.ndarray | None = None

    @property
    def frame_count(self) -> int:
        return int(self.fine.shape[0]) if self.fine is not None else int(self.stored[2])

    @classmethod
    def from_outputs(cls, outputs: dict[str, np.ndarray]) -> Embedding:
        """dnsvr_embed's outputs (batch axis of 1) -> Embedding."""
        text = outputs["text_video"][0] if "text_video" in outputs else None
        thumbnail = outputs["thumbnail"].reshape(-1)[0] if "thumbnail" in outputs else None
        features = outputs["features"][0][outputs["mask"][0]] if "features" in outputs else None  # [T, 9, 512]
        return cls(outputs["coarse"][0], outputs["fine"][0], float(outputs["selector"].reshape(-1)[0]), text,
                   thumbnail, features=features)


@dataclass
class ModelCalls:
    """The networks search needs.

    embed: {"video": [1] bytes} or {"frames": uint8 [T, 224, 224, 3]} -> Embedding (dnsvr_embed).
    selector_score: [K, 3] float32 -> [K] float32 in (0, 1).
    fine_similarity: query [Tq, 9, W], query_mask [Tq], candidates [K, Tt, 9, W], candidate_mask [K, Tt]
    -> (similarity [K] float32 in [-1, 1], f2f [K, Tq, Tt] float32: each pair's frame-to-frame similarities at
    its real frames, 0 elsewhere).
    views (indexing with the pack's crop grid; None otherwise): the same video input -> its crop views' S^c
    vectors [B, C] float32 and fine codes [B, T, 9, W] (video_views; None where the store keeps none).
    segments (indexing with the pack's frame windows; None otherwise): full-frame features [T, 9, 512] -> its
    segment views' S^c vectors [W, C] float32 (`views.segment_vectors` over coarse_embed).
    """

    embed: Callable[[dict[str, np.ndarray]], Embedding]
    selector_score: Callable[[np.ndarray], np.ndarray]
    fine_similarity: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    views: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray | None]] | None = None
    segments: Callable[[np.ndarray], np.ndarray] | None = None


DEFAULT_CANDIDATES = 100


def candidate_count(top_k: int, candidates: int | None) -> int:
    """K': how many coarse neighbours to fetch: at least top_k, `candidates` if given (else 100)."""
    return max(top_k, candidates if candidates else DEFAULT_CANDIDATES)


@dataclass
class Ranking:
    """Results best first: ids, final scores, whether the fine student re-ranked each, its coarse and
    selector scores (NaN where the selector did not run), and per hit its copied segments (best first; [] where
    not re-ranked)."""

    ids: list[str]
    scores: np.ndarray
    reranked: np.ndarray
    coarse_scores: np.ndarray
    selector_scores: np.ndarray
    segments: list[list[Segment]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def final_ranking(
    ids: Sequence[str],
    coarse_scores: np.ndarray,
    selector_scores: np.ndarray | None,
    reranked: np.ndarray,
    fine_similarity: np.ndarray,
    top_k: int,
    fusion: str = "mix",
    calibration: ScoreCalibration | None = None,
) -> Ranking:
    """`ranking.fuse` of the re-ranked pairs' fine similarities into the coarse scores, best first (ties: coarse
    order), top_k.

    ids/coarse/selector: [K] in coarse order; reranked: [n] candidate positions; fine_similarity: [n] in [-1, 1].
    """
    coarse = np.asarray(coarse_scores, np.float32).reshape(-1)
    if len(ids) != len(coarse):
        raise ValueError(f"{len(ids)} ids for {len(coarse)} coarse scores")
    selector = (np.full(len(coarse), np.nan, np.float32) if selector_scores is None
                else np.asarray(selector_scores, np.float32).reshape(-1))
    positions = np.asarray(reranked, np.int64).reshape(-1)
    scores = fuse(fusion, coarse, positions, fine_similarity, calibration)
    flags = np.zeros(len(coarse), bool)
    flags[positions] = True
    order = ranking_order(scores)[:top_k]
    return Ranking([ids[i] for i in order], scores[order], flags[order], coarse[order], selector[order])


def indexed_query(store: VideoStore, video_id: str, cache: CodeCache | None = None,
                  consistency: str = "Session") -> Embedding:
    """The stored embedding of an indexed video (raises VideoNotFound) from its row, in one query; its codes from
    `cache`, else left for the search to read with its candidates' first codes (`Embedding.stored`): a search
    that re-ranks nothing never reads them."""
    row = store.ranking_row(video_id, consistency)
    key = (video_id, row.generation, 0)
    codes = (cache if cache is not None else CodeCache(0)).lookup([key]).get(key)
    return Embedding(row.coarse, codes, row.selector, stored=(video_id, row.generation, row.frame_count))


def embedding_of_indexed(store: VideoStore, video_id: str, cache: CodeCache | None = None,
                         consistency: str = "Session") -> Embedding:
    """`indexed_query` with its codes: from `cache` or in one `read_codes` (kept in `cache`).  Codes found gone
    (a re-index swapped them between the two reads) are read once more at Strong consistency."""
    cache = cache if cache is not None else CodeCache(0)
    for level in dict.fromkeys((consistency, "Strong")):
        query = indexed_query(store, video_id, cache, level)
        if query.fine is None:
            _, generation, frame_count = query.stored
            query.fine = store.read_codes({video_id: (generation, frame_count)}, level).get(video_id)
            if query.fine is not None:
                cache.put((video_id, generation, 0), query.fine)
        if query.fine is not None:
            return query
    raise StoreError(f"video {video_id!r} has incomplete frames; run `dnsvr store check --repair`")


def search(
    store: VideoStore,
    calls: ModelCalls,
    query: Embedding,
    top_k: int,
    policy: RerankPolicy,
    candidates: int | None = None,
    filter: str | None = None,
    exclude_id: str | None = None,
    consistency: str = "Session",
    cache: CodeCache | None = None,
    fps: float = spec.DECODE_FPS,
    localise: bool = True,
    calibration: ScoreCalibration | None = None,
) -> tuple[Ranking, dict[str, float]]:
    """DnS retrieval for one query: coarse top-K' -> selector -> fine re-rank of the chosen -> top_k -> the
    re-ranked hits' copied segments.

    `cache`: fine codes kept between searches (None: every candidate's codes are read from the store); `fps`:
    the frame rate of the query's and the stored frames; `localise`: find the copied segments (False: every
    hit gets none, for callers that only rank); `calibration`: the pack's map of the fusion 'calibrated' (None:
    that fusion is refused with ValueError).  Returns the ranking and stage timings in ms (coarse_search,
    selector, fetch_codes, fine_similarity, localisation where a pair was re-ranked and `localise`).
    """
    check_fusion(policy.fusion, calibration)  # before any store read
    watch = Stopwatch()
    limit = candidate_count(top_k, candidates)
    with watch.stage("coarse_search"):
        hits = store.search_coarse(query.coarse, limit + (1 if exclude_id else 0), filter=filter,
                                   consistency=consistency)
    keep = [i for i, video_id in enumerate(hits.ids) if video_id != exclude_id][:limit]
    ids = [hits.ids[i] for i in keep]
    coarse, target_selectors = hits.scores[keep], hits.selectors[keep]
    selector_scores = None
    chosen = np.zeros(0, np.int64)
    fine_scores = np.zeros(0, np.float32)
    f2f_by_id: dict[str, np.ndarray] = {}
    if ids and policy.mode != "none":
        with watch.stage("selector"):
            selector_scores = np.asarray(
                calls.selector_score(selector_rows(query.selector, target_selectors, coarse)), np.float32)
        chosen = policy.choose(selector_scores)
    if len(chosen):
        rows = [keep[i] for i in chosen]
        wanted = [(hits.ids[r], int(hits.generations[r]), int(hits.frame_counts[r]), int(hits.code_views[r]))
                  for r in rows]
        fine_scores, matrices = _fine_scores(store, calls, query, wanted, watch, consistency,
                                             cache if cache is not None else CodeCache(0))
        found = ~np.isnan(fine_scores)  # a candidate deleted or re-indexed meanwhile keeps its coarse score
        f2f_by_id = {ids[i]: matrix for i, matrix, kept in zip(chosen, matrices, found, strict=True) if kept}
        chosen, fine_scores = chosen[found], fine_scores[found]
    ranking = final_ranking(ids, coarse, selector_scores, chosen, fine_scores, top_k, policy.fusion, calibration)
    if f2f_by_id and localise:
        with watch.stage("localisation"):
            ranking.segments = hit_segments(f2f_by_id, ranking.ids, ranking.reranked, fps)
    else:
        ranking.segments = [[] for _ in ranking.ids]
    return ranking, watch.stages


MIN_READ_CHUNK = 8  # candidates per store read, at least (each read is one round trip of a few ms)


def read_chunks(misses: list[str], max_chunk: int = MAX_PAIRS_PER_BATCH) -> list[list[str]]:
    """The candidates whose codes must be read, in the order of the reads: with 2 x MIN_READ_CHUNK or more, a
    first read of about a quarter of them (its fine similarity starts early and covers the next read), then the
    rest in even reads; every read of at most `max_chunk` (one fine_similarity request's worth)."""
    if len(misses) < 2 * MIN_READ_CHUNK:
        return [misses] if misses else []
    first = min(max_chunk, max(MIN_READ_CHUNK, math.ceil(len(misses) / 4)))
    rest = misses[first:]
    reads = math.ceil(len(rest) / max_chunk)
    size = math.ceil(len(rest) / reads)
    return [misses[:first], *(rest[start:start + size] for start in range(0, len(rest), size))]


def _fine_scores(store: VideoStore, calls: ModelCalls, query: Embedding, wanted: list[tuple[str, int, int, int]],
                 watch: Stopwatch, consistency: str, cache: CodeCache) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Raw fine similarities [n] in [-1, 1] of the candidates `wanted` [n] (video_id, generation, frame_count,
    the view whose codes to compare: `CoarseHits.code_views`), NaN where the store no longer holds that
    generation's frames (deleted or re-indexed since the coarse search), and per candidate its frame-to-frame
    matrix `[Tq, its frame count]` float32 (None where NaN).

    Codes come from `cache` where it holds them; the rest are read from the store in `read_chunks`, one after
    another on a reader thread, and kept.  The fine similarity of the codes at hand runs meanwhile: first the
    cached ones, then each chunk as it arrives.  An indexed query without its codes (`Embedding.stored`) gets
    them with the first read (set into `query.fine`).  Timings: `fetch_codes` is the time spent waiting for
    codes (the cache lookup included), `fine_similarity` the time in the fine student; together, the stage's
    wall time.
    """
    keys: list[CodeKey] = [(video_id, generation, view) for video_id, generation, _, view in wanted]
    position_of = {key: i for i, key in enumerate(keys)}
    with watch.stage("fetch_codes"):
        codes = cache.lookup(keys)
    misses = {video_id: (generation, count) for video_id, generation, count, view in wanted
              if (video_id, generation, view) not in codes}
    views = {video_id: view for video_id, _, _, view in wanted}
    scores = np.full(len(wanted), np.nan, np.float32)
    matrices: list[np.ndarray | None] = [None] * len(wanted)
    reads = [{video_id: misses[video_id] for video_id in chunk} for chunk in read_chunks(list(misses))]
    query_read = {} if query.fine is not None else {query.stored[0]: query.stored[1:]}
    if query_read:
        reads = [query_read | (reads[0] if reads else {}), *reads[1:]]
    waiting = [key for key in keys if key in codes]  # cached, scored as soon as the query's codes are there

    def score(ready: list[CodeKey]) -> None:
        """The fine similarity of these candidates (codes in `codes`), batched by length."""
        if not ready:
            return
        frame_bytes = codes[ready[0]][0].nbytes
        query_mask = np.ones(len(query.fine), bool)
        with watch.stage("fine_similarity"):
            for batch in fine_batches([len(codes[key]) for key in ready], frame_bytes):
                batch_keys = [ready[b] for b in batch]
                candidates, mask = padded_batch([codes[key] for key in batch_keys])
                similarity, f2f = calls.fine_similarity(query.fine, query_mask, candidates, mask)
                similarity = np.asarray(similarity, np.float32).reshape(-1)
                for row, key in enumerate(batch_keys):
                    scores[position_of[key]] = similarity[row]
                    matrices[position_of[key]] = f2f[row, :, : len(codes[key])]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-codes") as reader:
        futures = [reader.submit(store.read_codes, wanted_codes, consistency, views) for wanted_codes in reads]
        try:
            if not query_read:
                score(waiting)  # the cached ones, while the first chunk is read
                waiting = []
            for future in futures:
                with watch.stage("fetch_codes"):
                    found = future.result()
                    if query_read:
                        query.fine = _query_codes(store, query, found, cache)
                        query_read = {}
                for video_id, array in found.items():
                    key = (video_id, misses[video_id][0], views[video_id])
                    cache.put(key, array)
                    codes[key] = array
                    waiting.append(key)
                score(waiting)
                waiting = []
        finally:
            for future in futures:
                future.cancel()
    return scores, matrices


def _query_codes(store: VideoStore, query: Embedding, found: dict[str, np.ndarray], cache: CodeCache) -> np.ndarray:
    """An indexed query's codes from the first read (taken out of `found`), kept in `cache`; read again with
    its row at Strong consistency when a re-index swapped them since its row was read."""
    video_id, generation, _ = query.stored
    codes = found.pop(video_id, None)
    if codes is None:
        return embedding_of_indexed(store, video_id, cache, "Strong").fine
    cache.put((video_id, generation, 0), codes)
    return codes


def search_request(inputs: RequestInputs, stores: ServiceStore, calls: ModelCalls,
                   consistency: str = "Session", cache: CodeCache | None = None,
                   fps: float = spec.DECODE_FPS) -> dict[str, np.ndarray]:
    """One `dnsvr_search` request -> its outputs (module docstring); BadRequest / VideoNotFound name the problem.

    `cache`: the model instance's fine codes kept between requests; `fps`: the frames' rate.  A policy that
    names no fusion takes the pack's default (`stores.default_fusion`); 'calibrated' uses `stores.calibration`."""
    watch = Stopwatch()
    top_k = inputs.integer("top_k")
    if not 1 <= top_k <= spec.MAX_TOP_K:
        raise BadRequest(f"top_k must be in 1..{spec.MAX_TOP_K}, got {top_k}")
    candidates = inputs.integer("candidates", default=0)
    if not 0 <= candidates <= spec.MAX_CANDIDATES:
        raise BadRequest(f"candidates must be in 0..{spec.MAX_CANDIDATES} (0: default), got {candidates}")
    try:
        policy = RerankPolicy.parse(inputs.text("rerank"), stores.default_fusion)
        check_fusion(policy.fusion, stores.calibration)
    except ValueError as error:
        raise BadRequest(str(error)) from None
    expression = inputs.text("filter") or None
    if expression is not None and len(expression.encode("utf-8")) > spec.MAX_FILTER_BYTES:
        raise BadRequest(f"filter is {len(expression.encode('utf-8'))} bytes, the maximum is {spec.MAX_FILTER_BYTES}")
    query_id = inputs.text("video_id")
    if (query_id is None) == (not inputs.given_videos()):
        raise BadRequest("send exactly one of 'video', 'frames' or 'video_id'")
    with watch.stage("embed"):
        if query_id is not None:
            query_id = check_video_id(query_id)
            store = stores.existing()
            if store is None:
                raise VideoNotFound(query_id)
            query = indexed_query(store, query_id, cache, consistency)
        else:
            query = calls.embed(inputs.video())
            store = stores.get(len(query.coarse))
    try:
        ranking, stages = search(store, calls, query, top_k, policy, candidates or None, expression,
                                 exclude_id=query_id, consistency=consistency, cache=cache, fps=fps,
                                 calibration=stores.calibration)
    except StoreUnavailable:
        raise
    except StoreError as error:
        if expression is None:
            raise
        raise BadRequest(f"filter {shortened(expression)} was rejected by the store: {shortened(str(error))}") from None
    watch.stages.update(stages)
    return {
        "video_ids": bytes_array(list(ranking.ids)),
        "scores": ranking.scores.astype(np.float32),
        "reranked": ranking.reranked.astype(bool),
        "coarse_scores": ranking.coarse_scores.astype(np.float32),
        "selector_scores": ranking.selector_scores.astype(np.float32),
        **segment_outputs(ranking.segments),
        "timings": watch.report(),
    }
