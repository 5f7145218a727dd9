"""The near-duplicates of a video about to be indexed, free of Triton: the served search, cut at a threshold.

    duplicate_policy(inputs, default_threshold) -> DuplicatePolicy of the request's `on_duplicate` /
        `duplicate_threshold` (absent: the pack's default threshold)
        (BadRequest naming the problem for an unknown mode, a threshold outside [0, 1] or NaN)
    find_duplicates(store, calls, embedding, video_id, threshold, fusion, calibration) -> [Duplicate] best first

The ranking is `dnsvr.serving.pipelines.search.search` with its default policy and candidates (coarse top-K',
the selector, the fine re-rank, `ranking.fuse` by the pack's default fusion): a near-duplicate is a hit whose
score there is >= the threshold, so `index` and `search` agree on what a video's score against the collection
is.  The video's own id is left out (re-indexing an id replaces it), and no copied segments are looked for.  The
read is at Strong consistency: a video acknowledged by another index call just before is seen.  Checking is a read and
writing follows it; two copies indexed at the same moment by two calls may both be stored (nothing serialises
concurrent index calls).
"""

from __future__ import annotations

from dnsvr.client.duplicates import DEFAULT_DUPLICATE_THRESHOLD, DuplicatePolicy
from dnsvr.client.results import Duplicate
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs
from dnsvr.serving.pipelines.search import Embedding, ModelCalls, search
from dnsvr.serving.store.video_store import VideoStore
from dnsvr.training.ranking import DEFAULT_FUSION, RerankPolicy, ScoreCalibration

REPORTED_DUPLICATES = 100  # at most this many near-duplicates are reported, best first
CHECK_CONSISTENCY = "Strong"


def duplicate_policy(inputs: RequestInputs, default_threshold: float = DEFAULT_DUPLICATE_THRESHOLD
                     ) -> DuplicatePolicy:
    """The request's policy (absent inputs: the defaults; `default_threshold`: the pack's); BadRequest naming the
    problem."""
    try:
        return DuplicatePolicy.parse(inputs.text("on_duplicate") or None, inputs.number("duplicate_threshold"),
                                     default_threshold)
    except ValueError as error:
        raise BadRequest(str(error)) from None


def find_duplicates(store: VideoStore, calls: ModelCalls, embedding: Embedding, video_id: str,
                    threshold: float, fusion: str = DEFAULT_FUSION,
                    calibration: ScoreCalibration | None = None) -> list[Duplicate]:
    """The indexed videos (other than `video_id`) whose served score against `embedding` is >= `threshold`,
    best first, at most REPORTED_DUPLICATES; scored as a search naming no policy is (`fusion`: the pack's
    default, with its `calibration`)."""
    ranking, _ = search(store, calls, embedding, REPORTED_DUPLICATES, RerankPolicy(fusion=fusion),
                        exclude_id=video_id, consistency=CHECK_CONSISTENCY, localise=False, calibration=calibration)
    return [Duplicate(hit, float(score)) for hit, score in zip(ranking.ids, ranking.scores, strict=True)
            if score >= threshold]
