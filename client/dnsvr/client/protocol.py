"""The requests the client sends to the pipeline models and how their responses become typed results.

Shared by the blocking and the asyncio client: `*_request(...)` -> `Request` (model, inputs, outputs);
`parse_*(outputs)` -> result objects.  Tensor names and dtypes come from `dnsvr.client.spec.PIPELINES`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
from dnsvr.client import spec
from dnsvr.client.duplicates import DuplicatePolicy
from dnsvr.client.errors import InvalidVideo
from dnsvr.client.ids import check_video_id
from dnsvr.client.results import Duplicate, IndexResult, SearchHit, SearchResult, Segment
from dnsvr.client.video_input import VideoLike, video_tensor

INDEX, SEARCH, DELETE, STATS = "dnsvr_index", "dnsvr_search", "dnsvr_delete", "dnsvr_stats"
SEARCH_TEXT = "dnsvr_search_text"
THUMBNAILS = "dnsvr_thumbnails"
TOKEN_HEADER = "dnsvr-token"  # carries the access token; the server forwards it to the pipelines
TOKEN_ENV = "DNSVR_ACCESS_TOKEN"


def call_headers(token: str | None, headers: dict[str, str] | None) -> dict[str, str]:
    """The headers of every call: `headers`, plus the access token (given, else $DNSVR_ACCESS_TOKEN)."""
    token = token or os.environ.get(TOKEN_ENV)
    return {**(headers or {}), **({TOKEN_HEADER: token} if token else {})}
PIPELINE_MODELS = ("dnsvr_embed", INDEX, SEARCH, SEARCH_TEXT, DELETE, STATS, THUMBNAILS)


@dataclass(frozen=True)
class Request:
    """One inference request: model name, {input name: array}, wanted output names."""

    model: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]

    def infer_inputs(self, input_class) -> list:
        """tritonclient InferInput objects (grpc or grpc.aio class), typed by the spec."""
        model = spec.model(self.model)
        built = []
        for name, array in self.inputs.items():
            tensor = input_class(name, list(array.shape), model.input(name).triton_dtype)
            tensor.set_data_from_numpy(array)
            built.append(tensor)
        return built

    def payload_bytes(self) -> int:
        """The bytes the inputs carry (an encoded video's included)."""
        return sum(sum(map(len, array.flat)) if array.dtype == np.object_ else array.nbytes
                   for array in self.inputs.values())


def _text(value: str) -> np.ndarray:
    return np.array([value.encode("utf-8")], dtype=np.object_)


def _outputs(model: str) -> tuple[str, ...]:
    return spec.model(model).output_names


def index_request(video_id: str, video: VideoLike, source_uri: str = "", metadata: dict | None = None,
                  on_duplicate: str | None = None, duplicate_threshold: float | None = None) -> Request:
    """on_duplicate / duplicate_threshold: `dnsvr.client.duplicates` (None: the server's defaults); checked here
    first (InvalidVideo naming the problem)."""
    try:
        DuplicatePolicy.parse(on_duplicate, duplicate_threshold)
    except ValueError as error:
        raise InvalidVideo(str(error)) from None
    name, array = video_tensor(video)
    inputs = {"video_id": _text(check_video_id(video_id)), name: array}
    if on_duplicate is not None:
        inputs["on_duplicate"] = _text(on_duplicate)
    if duplicate_threshold is not None:
        inputs["duplicate_threshold"] = np.array([duplicate_threshold], np.float32)
    if source_uri:
        inputs["source_uri"] = _text(source_uri)
    if metadata:
        try:
            inputs["metadata"] = _text(json.dumps(metadata, allow_nan=False))
        except (TypeError, ValueError) as error:
            raise InvalidVideo(f"metadata is not JSON-serialisable: {error}") from None
    return Request(INDEX, inputs, _outputs(INDEX))


def rerank_text(rerank: float | str | None) -> str:
    """A re-rank policy for the server: a float is the fraction of candidates; strings pass as they are
    ('fraction:0.1', 'threshold:0.5', 'count:20', 'none'); None is the server's default."""
    if rerank is None:
        return ""
    if isinstance(rerank, (int, float)) and not isinstance(rerank, bool):
        if not 0.0 <= float(rerank) <= 1.0:
            raise InvalidVideo(f"rerank fraction must be in [0, 1], got {rerank}")
        return f"fraction:{float(rerank)}"
    if isinstance(rerank, str):
        return rerank
    raise InvalidVideo(f"rerank must be a fraction, a policy string or None, got {rerank!r}")


def search_request(
    video: VideoLike | None = None,
    video_id: str | None = None,
    top_k: int = 10,
    rerank: float | str | None = 0.1,
    candidates: int | None = None,
    filter: str | None = None,
) -> Request:
    if (video is None) == (video_id is None):
        raise InvalidVideo("search takes exactly one of video= or video_id=")
    inputs = _top_k_and_filter(top_k, filter)
    if video is not None:
        name, array = video_tensor(video)
        inputs[name] = array
    else:
        inputs["video_id"] = _text(check_video_id(video_id))
    policy = rerank_text(rerank)
    if policy:
        inputs["rerank"] = _text(policy)
    if candidates:
        inputs["candidates"] = np.array([candidates], np.int32)
    return Request(SEARCH, inputs, _outputs(SEARCH))


def _top_k_and_filter(top_k: int, filter: str | None) -> dict[str, np.ndarray]:
    """The `top_k` and optional `filter` inputs every search takes, checked."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= spec.MAX_TOP_K:
        raise InvalidVideo(f"top_k must be an int in 1..{spec.MAX_TOP_K}, got {top_k!r}")
    inputs: dict[str, np.ndarray] = {"top_k": np.array([top_k], np.int32)}
    if filter:
        if not isinstance(filter, str) or len(filter.encode("utf-8")) > spec.MAX_FILTER_BYTES:
            raise InvalidVideo(f"filter must be a str of at most {spec.MAX_FILTER_BYTES} bytes of UTF-8")
        inputs["filter"] = _text(filter)
    return inputs


def search_text_request(text: str, top_k: int = 10, filter: str | None = None) -> Request:
    if not isinstance(text, str) or not text.strip():
        raise InvalidVideo("the text query must be a non-empty str")
    if len(text.encode("utf-8")) > spec.MAX_TEXT_BYTES:
        raise InvalidVideo(f"the text query is {len(text.encode('utf-8'))} bytes of UTF-8, the maximum is "
                           f"{spec.MAX_TEXT_BYTES}")
    inputs = {"text": _text(text), **_top_k_and_filter(top_k, filter)}
    return Request(SEARCH_TEXT, inputs, _outputs(SEARCH_TEXT))


def delete_request(video_id: str) -> Request:
    return Request(DELETE, {"video_id": _text(check_video_id(video_id))}, _outputs(DELETE))


def thumbnails_request(video_ids: list[str]) -> Request:
    """At most spec.MAX_TOP_K distinct ids, each checked by the id rule (InvalidVideo otherwise)."""
    unique = list(dict.fromkeys(check_video_id(video_id) for video_id in video_ids))
    if not 1 <= len(unique) <= spec.MAX_TOP_K:
        raise InvalidVideo(f"ask for the thumbnails of 1 to {spec.MAX_TOP_K} ids, got {len(unique)}")
    ids = np.array([video_id.encode("utf-8") for video_id in unique], dtype=np.object_)
    return Request(THUMBNAILS, {"video_ids": ids}, _outputs(THUMBNAILS))


def stats_request(what: str = "stats") -> Request:
    return Request(STATS, {"request": _text(what)}, _outputs(STATS))


def _decoded(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _timings(outputs: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(v) for k, v in json.loads(_decoded(outputs["timings"].reshape(-1)[0])).items()}


def parse_index(video_id: str, outputs: dict[str, np.ndarray]) -> IndexResult:
    duplicates = [Duplicate(_decoded(duplicate), float(score)) for duplicate, score in zip(
        outputs["duplicate_ids"].reshape(-1), outputs["duplicate_scores"].reshape(-1), strict=True)]
    return IndexResult(video_id, int(outputs["frame_count"].reshape(-1)[0]), _timings(outputs),
                       stored=bool(outputs["stored"].reshape(-1)[0]), duplicates=duplicates)


def _segments_by_hit(outputs: dict[str, np.ndarray], hits: int) -> list[tuple[Segment, ...]]:
    """dnsvr_search's segment tensors (`spec.SEGMENT_OUTPUTS`) -> per hit its segments, in the server's order."""
    found: list[list[Segment]] = [[] for _ in range(hits)]
    for hit, times, confidence in zip(outputs["segment_hits"].reshape(-1), outputs["segment_times"].reshape(-1, 4),
                                      outputs["segment_confidences"].reshape(-1), strict=True):
        found[int(hit)].append(Segment(*(float(t) for t in times), confidence=float(confidence)))
    return [tuple(segments) for segments in found]


def parse_search(outputs: dict[str, np.ndarray]) -> SearchResult:
    ids = outputs["video_ids"].reshape(-1)
    hits = [
        SearchHit(
            video_id=_decoded(video_id),
            score=float(score),
            reranked=bool(reranked),
            coarse_score=float(coarse),
            selector_score=None if math.isnan(selector) else float(selector),
            segments=segments,
        )
        for video_id, score, reranked, coarse, selector, segments in zip(
            ids, outputs["scores"].reshape(-1), outputs["reranked"].reshape(-1), outputs["coarse_scores"].reshape(-1),
            outputs["selector_scores"].reshape(-1), _segments_by_hit(outputs, len(ids)), strict=True)
    ]
    return SearchResult(hits, _timings(outputs))


def parse_search_text(outputs: dict[str, np.ndarray]) -> SearchResult:
    """Text search hits: `score` is the cosine of the text and video vectors (also `coarse_score`; never
    re-ranked)."""
    hits = [SearchHit(video_id=_decoded(video_id), score=float(score), reranked=False, coarse_score=float(score),
                      selector_score=None)
            for video_id, score in zip(outputs["video_ids"].reshape(-1), outputs["scores"].reshape(-1), strict=True)]
    return SearchResult(hits, _timings(outputs))


def parse_thumbnails(request: Request, outputs: dict[str, np.ndarray]) -> dict[str, bytes]:
    """{video_id: JPEG bytes} of the requested ids that have a thumbnail."""
    ids = [_decoded(video_id) for video_id in request.inputs["video_ids"]]
    return {video_id: bytes(jpeg) for video_id, jpeg in zip(ids, outputs["thumbnails"].reshape(-1), strict=True)
            if jpeg}


def parse_delete(outputs: dict[str, np.ndarray]) -> bool:
    return bool(outputs["deleted"].reshape(-1)[0])


def parse_report(outputs: dict[str, np.ndarray]) -> dict:
    return json.loads(_decoded(outputs["report"].reshape(-1)[0]))
