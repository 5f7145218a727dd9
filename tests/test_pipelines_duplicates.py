"""Duplicates at ingest, free of Triton: the policy rule (`dnsvr.client.duplicates`) and `index_request` with
on_duplicate keep / report / skip on a real embedded Milvus Lite store, the networks stand-ins with known
answers (selector = coarse similarity, fine similarity = agreement of the codes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dnsvr.client.duplicates import DEFAULT_DUPLICATE_THRESHOLD, DuplicatePolicy
from dnsvr.serving.pipelines.duplicates import duplicate_policy
from dnsvr.serving.pipelines.index import index_request
from dnsvr.serving.pipelines.requests import BadRequest, RequestInputs
from dnsvr.serving.pipelines.search import Embedding, ModelCalls
from dnsvr.training.networks.codes import pack_codes, unpack_codes

DIM = 16
RNG = np.random.default_rng(5)
ORIGINAL = Embedding((v := RNG.normal(size=DIM)) / np.linalg.norm(v), pack_codes(RNG.choice([-1.0, 1.0], (4, 9, 512))),
                     0.4)
OTHER = Embedding((w := RNG.normal(size=DIM)) / np.linalg.norm(w), pack_codes(RNG.choice([-1.0, 1.0], (4, 9, 512))),
                  0.4)
VIDEOS = {b"original": ORIGINAL, b"copy": ORIGINAL, b"other": OTHER}  # video bytes -> what dnsvr_embed returns


def fine_agreement(query, query_mask, candidates, candidate_mask) -> tuple[np.ndarray, np.ndarray]:
    """([K] in [-1, 1]: mean agreement of the codes, frame by frame (equal lengths here); an all-zero f2f
    [K, Tq, Tt]: no copied segment)."""
    q = unpack_codes(query[query_mask])
    scores = [(q * unpack_codes(c[m])).mean() for c, m in zip(candidates, candidate_mask, strict=True)]
    return np.array(scores, np.float32), np.zeros((len(candidates), len(query), candidates.shape[1]), np.float32)


EMBEDDED: list[bytes] = []


def embed(video: dict[str, np.ndarray]) -> Embedding:
    EMBEDDED.append(video["video"].reshape(-1)[0])
    return VIDEOS[video["video"].reshape(-1)[0]]


CALLS = ModelCalls(embed=embed, selector_score=lambda pairs: pairs[:, 2], fine_similarity=fine_agreement)


def request(video_id: str, video: bytes, **inputs) -> RequestInputs:
    arrays = {"video_id": np.array([video_id.encode()], object), "video": np.array([video], object)}
    for name, value in inputs.items():
        arrays[name] = np.array([value.encode()], object) if isinstance(value, str) else value
    return RequestInputs(arrays)


def duplicates_of(outputs: dict[str, np.ndarray]) -> dict[str, float]:
    return {video_id.decode(): float(score) for video_id, score in zip(
        outputs["duplicate_ids"], outputs["duplicate_scores"], strict=True)}


def test_policy_modes_decide_search_and_store() -> None:
    assert DuplicatePolicy.parse() == DuplicatePolicy("keep", DEFAULT_DUPLICATE_THRESHOLD)
    keep, report, skip = (DuplicatePolicy.parse(mode, 0.5) for mode in ("keep", "report", "skip"))
    assert (keep.checks, report.checks, skip.checks) == (False, True, True)
    assert keep.stores(3) and report.stores(3) and report.stores(0) and skip.stores(0) and not skip.stores(1)
    assert DuplicatePolicy.parse("skip", 0).threshold == 0 and DuplicatePolicy.parse("skip", 1.0).threshold == 1.0
    assert DuplicatePolicy.parse("skip", np.float32(0.5)).threshold == 0.5
    assert DuplicatePolicy.parse("skip", None, 0.93).threshold == 0.93  # a server's pack default
    assert DuplicatePolicy.parse("skip", 0.5, 0.93).threshold == 0.5  # a named threshold wins


@pytest.mark.parametrize(("mode", "threshold", "message"), [
    ("drop", None, "on_duplicate must be one of keep, report, skip, got 'drop'"),
    ("", None, "on_duplicate must be one of"),
    ("skip", -0.01, r"duplicate_threshold must be a number in \[0.0, 1.0\] .*got -0.01"),
    ("skip", 1.5, "got 1.5"),
    ("skip", float("nan"), "got nan"),
    ("skip", "0.9", "got '0.9'"),
    ("skip", True, "got True"),
])
def test_policy_refuses_bad_values(mode, threshold, message) -> None:
    with pytest.raises(ValueError, match=message):
        DuplicatePolicy.parse(mode, threshold)


def test_request_policy_names_the_problem() -> None:
    assert duplicate_policy(RequestInputs()) == DuplicatePolicy()
    given = RequestInputs({"on_duplicate": np.array([b"skip"], object),
                           "duplicate_threshold": np.array([0.75], np.float32)})
    assert duplicate_policy(given) == DuplicatePolicy("skip", 0.75)
    for arrays, message in [({"on_duplicate": np.array([b"maybe"], object)}, "on_duplicate must be one of"),
                            ({"duplicate_threshold": np.array([np.nan], np.float32)}, "got nan"),
                            ({"duplicate_threshold": np.array([2.0], np.float32)}, "got 2.0"),
                            ({"duplicate_threshold": np.array([1], np.int32)}, "one floating-point number")]:
        with pytest.raises(BadRequest, match=message):
            duplicate_policy(RequestInputs(arrays))


def test_keep_report_and_skip(stores) -> None:
    first = index_request(request("original", b"original", on_duplicate="skip"), stores, CALLS)  # an empty store
    assert first["stored"].tolist() == [True] and duplicates_of(first) == {}
    kept = index_request(request("other", b"other"), stores, CALLS)
    assert kept["stored"].tolist() == [True] and duplicates_of(kept) == {}
    assert "duplicate_check" not in json.loads(kept["timings"][0])  # keep does not search
    store = stores.existing()

    skipped = index_request(request("copy", b"copy", on_duplicate="skip"), stores, CALLS)
    assert skipped["stored"].tolist() == [False] and skipped["frame_count"].tolist() == [4]
    assert duplicates_of(skipped) == {"original": pytest.approx(1.0)} and store.count() == 2
    assert "store" not in json.loads(skipped["timings"][0])

    unrelated = index_request(request("other", b"other", on_duplicate="skip", duplicate_threshold=np.array(
        [0.99], np.float32)), stores, CALLS)  # a re-index: its own id is no duplicate
    assert unrelated["stored"].tolist() == [True] and duplicates_of(unrelated) == {} and store.count() == 2

    reported = index_request(request("copy", b"copy", on_duplicate="report"), stores, CALLS)
    assert reported["stored"].tolist() == [True] and list(duplicates_of(reported)) == ["original"]
    assert store.count() == 3

    again = index_request(request("original", b"original", on_duplicate="skip"), stores, CALLS)
    assert again["stored"].tolist() == [False] and list(duplicates_of(again)) == ["copy"]  # never its own id
    everything = index_request(request("copy2", b"copy", on_duplicate="report", duplicate_threshold=np.array(
        [0.0], np.float32)), stores, CALLS)
    scores = list(duplicates_of(everything).values())  # every hit scoring >= 0, best first
    assert set(duplicates_of(everything)) >= {"original", "copy"} and scores == sorted(scores, reverse=True)
    assert min(scores) >= 0.0


def test_bad_policies_write_and_embed_nothing(stores) -> None:
    EMBEDDED.clear()
    for inputs, message in [({"on_duplicate": "sometimes"}, "on_duplicate"),
                            ({"on_duplicate": "skip", "duplicate_threshold": np.array([np.nan], np.float32)}, "nan"),
                            ({"duplicate_threshold": np.array([-1.0], np.float32)}, "got -1.0")]:
        with pytest.raises(BadRequest, match=message):
            index_request(request("copy", b"copy", **inputs), stores, CALLS)
    assert EMBEDDED == [] and stores.existing() is None
