"""Official retrieval protocols (FIVR, CC_WEB_VIDEO, EVVE, SVD) with the AP definitions the DnS paper reports.

Input everywhere is `similarities: {query_id: {target_id: score}}` (str ids, finite float scores;
higher = more similar).  Each protocol's `evaluate(...)` returns a metrics dict of floats plus two ints,
`queries_evaluated` and `queries_missing` (protocol queries absent from `similarities`; they are left out
of the mean as in the reference code, except EVVE's per-event mAP, which counts them as AP 0 like the
reference does).

AP definitions (matching the reference implementation's numbers):

* FIVR and CC_WEB_VIDEO: non-interpolated AP, `sum_k P@k * rel(k) / N`, where N is the number of positives,
  including positives that are absent from the ranking (they contribute 0).  Tied scores are handled by the
  expected AP over all orderings of each tied group (McSherry & Najork, ECIR 2008), so a result never depends
  on how ties happen to be ordered; without ties this is exactly the reference's number.
* EVVE: the trapezoidal AP of the EVVE authors' `score_ap_from_ranks_1` (area under the PR curve, each step
  linearly interpolated between the precision before and after the positive).  Ties are broken by target id.
* SVD: scikit-learn's `average_precision_score` (step AP over distinct score thresholds, tied scores form
  one threshold), computed here without scikit-learn.

`rerank_selected` builds the DnS similarities for a re-ranked fraction (coarse scores, with the pairs the
selector ranks highest replaced by fine-student scores), as the reference's `evaluation_dns.py` does.

A query without any positive has an undefined AP: `average_precision` returns nan and the protocols leave
such queries out of their means.

Annotation files: the `.pickle` files shipped with the reference (`fivr.pickle`, `cc_web_video.pickle`,
`evve.pickle`) are read by `load_annotation_pickle`, a restricted unpickler that only rebuilds builtin
containers and scalars (dict, list, tuple, set, frozenset, str, bytes, int, float, bool, complex,
collections.OrderedDict); any other global, e.g. `os.system`, is refused with `pickle.UnpicklingError`.
SVD's plain-text `test_groundtruth` (`query target ... label` per line) and unlabeled-id list are parsed
as text.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from dnsvr.training.ranking import fine_to_unit, fraction_count

Similarities = Mapping[str, Mapping[str, float]]

SAFE_GLOBALS = {
    ("builtins", name)
    for name in (
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "str",
        "bytes",
        "bytearray",
        "int",
        "float",
        "bool",
        "complex",
    )
} | {("collections", "OrderedDict")}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds builtin containers only; every other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # Python 2 / protocol < 3 name
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: annotation pickles may only hold builtin containers"
        )


def load_annotation_pickle(path: str | Path) -> dict:
    """Load an annotation `.pickle` (dict at top level) with `RestrictedUnpickler`."""
    data = Path(path).read_bytes()
    obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    if not isinstance(obj, dict):
        raise ValueError(
            f"{path}: expected a dict at the top level of the annotation pickle, got {type(obj)}"
        )
    return obj


def _require_keys(obj: Mapping, keys: Iterable[str], what: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError(f"{what} lacks the keys {missing}; found {sorted(map(str, obj))}")


def rank_targets(
    scores: Mapping[str, float], keep: Iterable[str] | None = None
) -> tuple[list[str], list[float]]:
    """Targets sorted by descending score (ties by id), optionally only those in `keep` -> (ids, scores)."""
    keep_set = None if keep is None else set(keep)
    items = []
    for target, score in scores.items():
        if keep_set is not None and target not in keep_set:
            continue
        score = float(score)
        if not math.isfinite(score):
            raise ValueError(f"similarity of target {target!r} is {score}; scores must be finite")
        items.append((target, score))
    items.sort(key=lambda item: (-item[1], item[0]))
    return [t for t, _ in items], [s for _, s in items]


def average_precision(
    ranked_ids: Sequence[str],
    positives: Iterable[str],
    *,
    scores: Sequence[float] | None = None,
    num_positives: int | None = None,
) -> float:
    """Non-interpolated AP of a ranking: `sum_k P@k * rel(k) / num_positives`.

    ranked_ids: best first.  positives: the relevant ids (those missing from the ranking count as retrieved
    never, i.e. add 0).  num_positives: the denominator, default `len(set(positives))`.  scores: the scores
    of `ranked_ids` (non-increasing); when given, each group of equal scores contributes its expected value
    over all orderings of the group.  Returns nan when there are no positives.
    """
    positive_set = set(positives)
    total = len(positive_set) if num_positives is None else int(num_positives)
    if total <= 0:
        return float("nan")
    is_positive = [target in positive_set for target in ranked_ids]
    if scores is None:
        groups = [(1, int(p)) for p in is_positive]
    else:
        if len(scores) != len(ranked_ids):
            raise ValueError(f"{len(scores)} scores for {len(ranked_ids)} ranked ids")
        if any(b > a for a, b in zip(scores[:-1], scores[1:], strict=True)):
            raise ValueError("scores must be non-increasing along the ranking")
        groups = []
        start = 0
        for end in range(1, len(ranked_ids) + 1):
            if end == len(ranked_ids) or scores[end] != scores[start]:
                groups.append((end - start, sum(is_positive[start:end])))
                start = end
    ap, seen, hits = 0.0, 0, 0
    for size, group_hits in groups:
        if group_hits:
            # Position j (1-based) in the group holds a positive with probability group_hits / size; given
            # that, the expected number of other positives before it is (j - 1)(group_hits - 1)/(size - 1).
            spread = (group_hits - 1) / (size - 1) if size > 1 else 0.0
            for j in range(1, size + 1):
                ap += group_hits / size * (hits + 1 + (j - 1) * spread) / (seen + j)
        seen += size
        hits += group_hits
    return ap / total


def trapezoid_average_precision(positive_ranks: Sequence[int], num_positives: int) -> float:
    """EVVE's AP: area under the PR curve with trapezoids; `positive_ranks` 0-based, ascending.

    Returns 0 when there are no positives or none was retrieved (the EVVE convention).
    """
    if num_positives <= 0 or len(positive_ranks) == 0:
        return 0.0
    ap = 0.0
    for found, rank in enumerate(positive_ranks):
        precision_before = 1.0 if rank == 0 else found / rank
        precision_after = (found + 1) / (rank + 1)
        ap += (precision_before + precision_after) / (2.0 * num_positives)
    return ap


def threshold_average_precision(labels: Sequence[int], scores: Sequence[float]) -> float:
    """scikit-learn's `average_precision_score` for binary labels: `sum_n (R_n - R_{n-1}) P_n`.

    The thresholds n are the distinct scores, so tied items enter together.  nan when no label is positive.
    """
    labels_arr = np.asarray(labels, dtype=np.int64)
    scores_arr = np.asarray(scores, dtype=np.float64)
    if labels_arr.shape != scores_arr.shape or labels_arr.ndim != 1:
        raise ValueError(f"labels {labels_arr.shape} and scores {scores_arr.shape} must be equal 1-D shapes")
    total = int(labels_arr.sum())
    if total == 0:
        return float("nan")
    order = np.argsort(-scores_arr, kind="stable")
    labels_arr, scores_arr = labels_arr[order], scores_arr[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(scores_arr)), labels_arr.size - 1]
    true_pos = np.cumsum(labels_arr)[last_of_threshold]
    retrieved = last_of_threshold + 1
    recall_steps = np.diff(np.r_[0, true_pos]) / total
    return float(np.sum(recall_steps * true_pos / retrieved))


def rerank_selected(
    coarse: Similarities,
    fine: Similarities,
    selector_scores: Similarities,
    fraction: float,
) -> dict[str, dict[str, float]]:
    """DnS re-ranking: per query, the `ranking.fraction_count(fraction, N)` targets the selector scores highest
    (ties by id) take their fine-student similarity mapped by `ranking.fine_to_unit` (as the reference maps fine
    scores from [-1, 1] to [0, 1]); the other targets keep their coarse similarity.

    coarse, selector_scores: {query: {target: score}} over the same N targets; fine: needs at least the
    selected pairs.  -> {query: {target: score}}, fit for any protocol's `evaluate`.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    out: dict[str, dict[str, float]] = {}
    for query, coarse_scores in coarse.items():
        if query not in selector_scores:
            raise ValueError(f"no selector scores for query {query!r}")
        order, _ = rank_targets(selector_scores[query], keep=coarse_scores)
        if len(order) != len(coarse_scores):
            raise ValueError(
                f"query {query!r}: {len(coarse_scores) - len(order)} targets lack a selector score"
            )
        out[query] = {t: float(v) for t, v in coarse_scores.items()}
        for target in order[: fraction_count(fraction, len(order))]:
            fine_score = fine.get(query, {}).get(target)
            if fine_score is None:
                raise ValueError(
                    f"query {query!r}: target {target!r} was selected but has no fine similarity"
                )
            out[query][target] = fine_to_unit(float(fine_score))
    return out


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


class FIVR:
    """FIVR-5K / FIVR-200K: DSVR (ND+DS), CSVR (+CS), ISVR (+IS) and the audio task DAVR (DA).

    annotation: {query: {label: [video ids]}}; the query itself and videos outside the database (or
    outside `all_db`) are removed from its ranking; positives outside `all_db` are not counted.
    """

    TASK_LABELS = {
        "DSVR": ("ND", "DS"),
        "CSVR": ("ND", "DS", "CS"),
        "ISVR": ("ND", "DS", "CS", "IS"),
        "DAVR": ("DA",),
    }

    def __init__(
        self,
        annotation: Mapping[str, Mapping[str, Sequence[str]]],
        queries: Iterable[str],
        database: Iterable[str],
        version: str = "200k",
    ) -> None:
        self.version = version
        self.annotation = annotation
        self.queries = sorted(queries)
        self.database = sorted(database)
        unknown = [q for q in self.queries if q not in annotation]
        if unknown:
            raise ValueError(f"FIVR-{version}: {len(unknown)} queries lack an annotation, e.g. {unknown[:3]}")

    @classmethod
    def from_pickle(cls, path: str | Path, version: str = "200k") -> FIVR:
        """Read the reference's `fivr.pickle`: {'annotation', '5k' and '200k': {'queries', 'database'}}."""
        data = load_annotation_pickle(path)
        _require_keys(data, ("annotation", version), f"{path}")
        _require_keys(data[version], ("queries", "database"), f"{path}[{version!r}]")
        return cls(data["annotation"], data[version]["queries"], data[version]["database"], version)

    def query_ap(self, query: str, scores: Mapping[str, float], all_db: set[str], task: str) -> float:
        """AP of one query for one task; `all_db` already intersected with the database."""
        labels = self.annotation[query]
        positives = {v for label in self.TASK_LABELS[task] for v in labels.get(label, ())} & all_db
        ranked, ranked_scores = rank_targets(scores, keep=all_db - {query})
        return average_precision(ranked, positives, scores=ranked_scores)

    def evaluate(
        self,
        similarities: Similarities,
        all_db: Iterable[str] | None = None,
        tasks: Sequence[str] = ("DSVR", "CSVR", "ISVR"),
    ) -> dict[str, float]:
        """-> {task: mAP for each of `tasks`, 'queries_evaluated', 'queries_missing'}."""
        unknown = [t for t in tasks if t not in self.TASK_LABELS]
        if unknown:
            raise ValueError(f"unknown FIVR tasks {unknown}; choose from {list(self.TASK_LABELS)}")
        database = set(self.database) if all_db is None else set(self.database) & set(all_db)
        present = [q for q in self.queries if q in similarities]
        metrics: dict[str, float] = {}
        for task in tasks:
            task_queries = present
            if task == "DAVR":
                task_queries = [q for q in present if "DA" in self.annotation[q]]
            metrics[task] = _mean([self.query_ap(q, similarities[q], database, task) for q in task_queries])
        metrics["queries_evaluated"] = len(present)
        metrics["queries_missing"] = len(self.queries) - len(present)
        return metrics


class CCWebVideo:
    """CC_WEB_VIDEO: 24 query sets; mAP ranks only the set's annotated videos, mAP* ("all videos") ranks
    every video; the "clean" variants (`_c`) drop the set's `excluded` videos from ranking and positives.

    index: {video id: video number}; ground_truth[i]: {video number: label} for query set i (positive labels
    E, S, L, M, V; X = dissimilar); excluded[i]: video numbers removed in the clean variants; queries[i]:
    the query id of set i.  The denominator is the number of annotated positives (the query itself is one,
    label E), whether or not they appear in the ranking.
    """

    POSITIVE_LABELS = frozenset("ESLMV")

    def __init__(
        self,
        index: Mapping[str, int],
        queries: Sequence[str],
        ground_truth: Sequence[Mapping[int, str]],
        excluded: Sequence[Iterable[int]],
    ) -> None:
        if not len(queries) == len(ground_truth) == len(excluded):
            raise ValueError(
                f"CC_WEB_VIDEO: {len(queries)} queries, {len(ground_truth)} ground-truth sets and "
                f"{len(excluded)} excluded sets must be the same count"
            )
        self.index = index
        self.queries = list(queries)
        self.ground_truth = list(ground_truth)
        self.excluded = [set(e) for e in excluded]
        self.database = sorted(map(str, index))

    @classmethod
    def from_pickle(cls, path: str | Path) -> CCWebVideo:
        """Read the reference's `cc_web_video.pickle` ({'index', 'queries', 'ground_truth', 'excluded'})."""
        data = load_annotation_pickle(path)
        _require_keys(data, ("index", "queries", "ground_truth", "excluded"), f"{path}")
        return cls(data["index"], data["queries"], data["ground_truth"], data["excluded"])

    def query_ap(
        self,
        set_number: int,
        scores: Mapping[str, float],
        all_videos: bool,
        clean: bool,
        all_db: set[str] | None = None,
    ) -> float:
        labels = self.ground_truth[set_number]
        excluded = self.excluded[set_number] if clean else set()
        keep = [
            video
            for video in scores
            if video in self.index
            and (all_db is None or video in all_db)
            and (all_videos or self.index[video] in labels)
            and self.index[video] not in excluded
        ]
        ranked, ranked_scores = rank_targets(scores, keep=keep)
        positive_numbers = {n for n, label in labels.items() if label in self.POSITIVE_LABELS} - excluded
        positives = [video for video in ranked if self.index[video] in positive_numbers]
        return average_precision(ranked, positives, scores=ranked_scores, num_positives=len(positive_numbers))

    def evaluate(self, similarities: Similarities, all_db: Iterable[str] | None = None) -> dict[str, float]:
        """-> {'mAP', 'mAP_star', 'mAP_c', 'mAP_c_star', 'queries_evaluated', 'queries_missing'}.

        all_db: optionally restrict rankings to these ids (the reference's dict path ranks every scored id).
        """
        db = None if all_db is None else set(all_db)
        present = [i for i, q in enumerate(self.queries) if q in similarities]
        metrics: dict[str, float] = {}
        for key, all_videos, clean in (
            ("mAP", False, False),
            ("mAP_star", True, False),
            ("mAP_c", False, True),
            ("mAP_c_star", True, True),
        ):
            metrics[key] = _mean(
                [self.query_ap(i, similarities[self.queries[i]], all_videos, clean, db) for i in present]
            )
        metrics["queries_evaluated"] = len(present)
        metrics["queries_missing"] = len(self.queries) - len(present)
        return metrics


class EVVE:
    """EVVE: 13 events; trapezoidal AP per query, mAP per event and overall.

    annotation: {event: (query ids, positive ids, null ids)}.  Rankings count only videos of `all_db`
    (default: database + queries); a scored id outside it does not shift the ranks.  Per-event mAP divides
    the APs' sum by the event's queries in `all_db` (missing queries count as 0); overall mAP averages the
    evaluated queries.
    """

    def __init__(
        self,
        annotation: Mapping[str, tuple[Iterable[str], Iterable[str], Iterable[str]]],
        queries: Iterable[str],
        database: Iterable[str],
    ) -> None:
        self.events = {name: (set(q), set(p), set(n)) for name, (q, p, n) in annotation.items()}
        self.queries = sorted(queries)
        self.database = sorted(database)
        self.query_to_event = {q: name for name, (qs, _, _) in self.events.items() for q in qs}
        orphans = [q for q in self.queries if q not in self.query_to_event]
        if orphans:
            raise ValueError(f"EVVE: {len(orphans)} queries belong to no event, e.g. {orphans[:3]}")

    @classmethod
    def from_pickle(cls, path: str | Path) -> EVVE:
        """Read the reference's `evve.pickle` ({'annotation', 'queries', 'database'})."""
        data = load_annotation_pickle(path)
        _require_keys(data, ("annotation", "queries", "database"), f"{path}")
        return cls(data["annotation"], data["queries"], data["database"])

    def query_ap(self, query: str, scores: Mapping[str, float], all_db: set[str]) -> float:
        positives = self.events[self.query_to_event[query]][1] & all_db
        ranked, _ = rank_targets(scores, keep=all_db)
        positive_ranks = [rank for rank, video in enumerate(ranked) if video in positives]
        return trapezoid_average_precision(positive_ranks, len(positives))

    def evaluate(self, similarities: Similarities, all_db: Iterable[str] | None = None) -> dict[str, Any]:
        """-> {'mAP', 'events': {event: mAP}, 'queries_evaluated', 'queries_missing'}."""
        db = set(self.database) | set(self.queries) if all_db is None else set(all_db)
        per_event: dict[str, list[float]] = {name: [] for name in self.events}
        present = [q for q in self.queries if q in similarities]
        for query in present:
            per_event[self.query_to_event[query]].append(self.query_ap(query, similarities[query], db))
        events = {}
        for name in sorted(self.events):
            event_queries = len(self.events[name][0] & db)
            events[name] = sum(per_event[name]) / event_queries if event_queries else float("nan")
        all_aps = [ap for aps in per_event.values() for ap in aps]
        return {
            "mAP": _mean(all_aps),
            "events": events,
            "queries_evaluated": len(present),
            "queries_missing": len(self.queries) - len(present),
        }


class SVD:
    """SVD (short-video dataset): per query, scikit-learn AP over its labelled targets plus, in the
    'unlabeled' version, every unlabeled distractor as a negative.

    ground_truth: {query: {target: 0/1}}.  Every target kept (labelled, or unlabeled within `all_db`) must
    have a score; a missing one is an error, since ranking it silently would change the metric.
    """

    def __init__(self, ground_truth: Mapping[str, Mapping[str, int]], unlabeled: Iterable[str] = ()) -> None:
        self.ground_truth = ground_truth
        self.unlabeled = list(unlabeled)
        self.queries = sorted(ground_truth)
        labelled = {t for targets in ground_truth.values() for t in targets}
        self.database = sorted(labelled | set(self.unlabeled))

    @staticmethod
    def read_ground_truth(path: str | Path) -> dict[str, dict[str, int]]:
        """`test_groundtruth`: lines `query target ... label` -> {query: {target: label}}."""
        ground_truth: dict[str, dict[str, int]] = collections.defaultdict(dict)
        for line_number, line in enumerate(Path(path).read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 3 or fields[-1] not in ("0", "1"):
                raise ValueError(f"{path}:{line_number}: expected 'query target ... 0|1', got {line!r}")
            ground_truth[fields[0]][fields[1]] = int(fields[-1])
        return dict(ground_truth)

    @classmethod
    def from_files(cls, ground_truth_path: str | Path, unlabeled_path: str | Path | None = None) -> SVD:
        """Labelled version without `unlabeled_path`; 'unlabeled' version (the paper's) with the id list."""
        unlabeled = []
        if unlabeled_path is not None:
            unlabeled = [
                line.strip() for line in Path(unlabeled_path).read_text().splitlines() if line.strip()
            ]
        return cls(cls.read_ground_truth(ground_truth_path), unlabeled)

    def query_ap(self, query: str, scores: Mapping[str, float], all_db: set[str] | None) -> float:
        targets = [
            (t, label) for t, label in self.ground_truth[query].items() if all_db is None or t in all_db
        ]
        targets += [(t, 0) for t in self.unlabeled if all_db is None or t in all_db]
        missing = [t for t, _ in targets if t not in scores]
        if missing:
            raise ValueError(
                f"SVD query {query!r}: no similarity for {len(missing)} targets, e.g. {missing[:3]}"
            )
        return threshold_average_precision([label for _, label in targets], [scores[t] for t, _ in targets])

    def evaluate(self, similarities: Similarities, all_db: Iterable[str] | None = None) -> dict[str, float]:
        """-> {'mAP', 'queries_evaluated', 'queries_missing'}."""
        db = None if all_db is None else set(all_db)
        present = [q for q in self.queries if q in similarities]
        return {
            "mAP": _mean([self.query_ap(q, similarities[q], db) for q in present]),
            "queries_evaluated": len(present),
            "queries_missing": len(self.queries) - len(present),
        }
