"""The coarse search of a store with crop views against one without, in the store itself (no Triton).

    .venv/bin/python benchmarks/view_search_bench.py [--videos 10000] [--queries 40] [--ks 100 1000]
    .venv/bin/python benchmarks/view_search_bench.py --view-cosine 0.96 --segments 7 --ks 1000
    .venv/bin/python benchmarks/view_search_bench.py --query-source indexed --baseline b06f0b6


One Milvus 2.3.5 server (the engine `dnsvr serve` starts), two stores side by side in it: the same synthetic
videos (`serving_bench.synthetic_videos`: clustered unit coarse vectors) with 9 crop views each, and without.
The crop views are drawn independently of their video's full frame (most of a query's K' best videos then come
in by a crop, so their rows must be read: `VideoStore._best_view_per_video`), or at a cosine to it
(`--view-cosine`; real crop views of the sample videos are at 0.96 on average, `crop_view_cosine.py`: fewer
videos come in by a crop, and a listed video's own crops score near its full frame); with `--segments W`, each
video of a store with views also has W frame-window vectors at cosine SEGMENT_COSINE to its full frame (an export
with `--index-segments 0.25`: 7).  Each store with views is searched at each of `--view-depths` up to K' (the
store setting `view_depth`: how many places are ranked exactly by best view, each costing `view_vectors` view
rows read) and, with `--baseline REV`, by the store code of that git revision (`serving/store/video_store.py`
as it was, loaded beside today's: a before/after in one run), in turn on the same queries.
After the server has indexed every row, each store answers `--queries` searches for every K' in `--ks` (query
vectors from the same distribution, or with `--query-source indexed` the full frames of stored videos, as a
served search by id asks); per search: the wall time of `search_coarse`, how many Milvus searches and video-row
reads it made, how many of its K' videos are not among the exhaustive full-frame top K' (came in by a crop), down
to which rank the list is the exhaustive best-view ranking, scores rank by rank, and its recall of that
ranking's top 100 and top K' (HNSW itself is approximate, and stop 43 found the server's HNSW under the crop
reads' filters far more so, `docs/storage.md`: `--coarse-index FLAT` separates the index from the search).
Median and p95 over the queries (recalls: mean and lowest).

`--probe-filters` also measures the server's own search of the views collection of the first store with views,
the finding behind the best-view search's unfiltered reads (stop 44): for each query, `--probe-limit` rows
(default 1,016: K' = 1000 plus 16) with no filter, with `view > 0` (the crops only), leaving out the query's
best 100 videos (`video_id not in [...]`, how a search once skipped the videos it had settled) and scoped to
the full frames' top 1000 videos (`video_id in [...]`), at each ef of `--probe-efs`; then range searches
(radius: the probe limit's unfiltered score, 16,384 rows at most) at each ef.  Reported per filter and ef:
rows returned and their recall of the exhaustive top rows under that filter (mean, lowest).

Writes benchmarks/results/view_search.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from align_bench import loaded
from dnsvr.serving.local.milvus_servers import MilvusStandaloneServer
from dnsvr.serving.store.expressions import greater, is_in, is_not_in
from dnsvr.serving.store.search_columns import SearchColumns, search_columns
from dnsvr.serving.store.settings import VIEW_DEPTH, StoreSettings
from dnsvr.serving.store.video_store import VideoStore
from revision_ab_bench import at_revision
from serving_bench import SEGMENT_COSINE, VIEW_COSINE, settle, synthetic_videos, view_cosine_arg
from tqdm import tqdm

RESULTS = Path(__file__).resolve().parent / "results" / "view_search.md"
STORE_SOURCE = "serving/store/video_store.py"  # the file `--baseline` loads as it was
DIM, VIEWS, FRAMES, BATCH = 1024, 9, 4, 500
RANGE_LIMIT = 16_384  # the most rows one Milvus search returns


class Counted:
    """Counts a VideoStore's vector searches, the hits they return and its video-row reads (a mixin)."""

    searches = rows_read = hits_read = 0

    def _search_vectors(self, *args, **kwargs) -> SearchColumns:
        self.searches += 1
        found = super()._search_vectors(*args, **kwargs)
        self.hits_read += len(found)
        return found

    def _video_rows(self, video_ids, *args, **kwargs) -> dict:
        self.rows_read += len(video_ids)
        return super()._video_rows(video_ids, *args, **kwargs)


class CountedStore(Counted, VideoStore):
    """Today's VideoStore, counted."""


def baseline_store(revision: str) -> type:
    """The VideoStore of git revision `revision` (its `serving/store/video_store.py`, loaded as a module of its
    own beside today's), counted."""
    with tempfile.TemporaryDirectory() as folder:
        module = loaded(at_revision(revision, STORE_SOURCE), Path(folder), f"video_store_at_{revision}")
    return type("BaselineStore", (Counted, module.VideoStore), {})


def fill(store: VideoStore, videos: int, views: int, cosine: float | None, segments: int) -> np.ndarray:
    """`videos` synthetic videos with `views` crop views each (`serving_bench.synthetic_videos`: at `cosine` to
    the full frame, or independent of it) and `segments` frame windows -> every video's views, the full frame's
    first [N, 1 + views + segments, D]."""
    rng = np.random.default_rng(0)
    vectors = []
    for start in tqdm(range(0, videos, BATCH), desc=f"writing {videos:,} videos, {views} views, {segments} windows",
                      unit="batch"):
        batch = synthetic_videos(start, min(BATCH, videos - start), DIM, FRAMES, rng, 0, views, cosine,
                                 segments=segments)
        store.upsert_many(batch)
        vectors += [np.vstack([video.coarse[None], *([video.views] if views else []),
                               *([video.segments] if segments else [])]) for video in batch]
    return np.stack(vectors)


def measure(searchers: dict[str, Counted], vectors: np.ndarray, queries: np.ndarray,
            k: int) -> dict[str, dict[str, list[float]]]:
    """Each query's search by each of `searchers` (one store's data: at a view depth, or the baseline's code) in
    turn (after an untimed one; they take turns going first), against the exhaustive best-view ranking of
    `vectors` ([N, 1 + views, D]) -> {searcher: {measure: [one value a query]}}."""
    names = ("ms", "searches", "hits read", "rows read", "by a crop", "exact", "recall@100", "recall@K'")
    numbers = {label: {name: [] for name in names} for label in searchers}
    labels = list(searchers)
    for number, query in enumerate(queries):
        next(iter(searchers.values())).search_coarse(query, k)  # untimed: a query's first answer may differ
        found = {}
        for label in labels[number % len(labels):] + labels[:number % len(labels)]:  # each first in turn
            store = searchers[label]
            store.searches = store.rows_read = store.hits_read = 0
            start = time.perf_counter()
            found[label] = store.search_coarse(query, k)
            numbers[label]["ms"].append((time.perf_counter() - start) * 1000)
            for name, value in (("searches", store.searches), ("hits read", store.hits_read),
                                ("rows read", store.rows_read)):
                numbers[label][name].append(value)
        best = (vectors @ query).max(axis=1)  # [N] each video's best view
        full_top = set(np.argsort(-(vectors[:, 0] @ query), kind="stable")[:k].tolist())  # exhaustive, full frames
        for label, hits in found.items():  # HNSW on the server may answer a query twice a little differently
            mine = listed(hits.ids)  # [k]
            numbers[label]["by a crop"].append(len(set(mine.tolist()) - full_top))
            numbers[label]["exact"].append(exact_prefix(hits.scores, mine, best))
            for name, depth in (("recall@100", min(100, k)), ("recall@K'", k)):
                numbers[label][name].append(recall(mine, best, depth))
    return numbers


def listed(ids: list[str]) -> np.ndarray:
    """[k] int64 row numbers of the synthetic ids (`synthetic-000123` -> 123)."""
    return np.array([int(video_id.rsplit("-", 1)[1]) for video_id in ids], np.int64)


def recall(mine: np.ndarray, best: np.ndarray, depth: int) -> float:
    """Of the exhaustive best-view ranking's top `depth` videos (`best` [N]), the share among the list's first
    `depth` (`mine` [k] row numbers)."""
    truth = np.argsort(-best, kind="stable")[:depth]  # [depth]
    return len(set(mine[:depth].tolist()) & set(truth.tolist())) / depth


def exact_prefix(scores: np.ndarray, mine: np.ndarray, best: np.ndarray) -> int:
    """Down to which rank a list (`scores` [k] of the videos `mine` [k]) is the exhaustive best-view ranking
    (`best` [N]): rank by rank, the same score as that ranking's, and the listed video's own best view (ties may
    list either of two videos)."""
    ranked = -np.sort(-best)[:len(mine)]  # [k] the exhaustive ranking's scores
    same = (np.abs(scores - ranked) <= 1e-5) & (np.abs(scores - best[mine]) <= 1e-5)
    return int(np.argmin(same)) if not same.all() else len(mine)


def searchers_of(store: CountedStore, k: int, view_depths: list[int],
                 baseline: tuple[str, type] | None) -> dict[str, Counted]:
    """The searches of one store at K' = k: today's at each view depth up to k (the deepest at least), the
    baseline revision's; a store without views is searched one way."""
    if not store.meta.view_vectors:
        return {"full frames": store}
    depths = sorted({min(depth, k) for depth in view_depths})
    searchers: dict[str, Counted] = {f"view_depth {depth}": CountedStore(replace(store.settings, view_depth=depth),
                                                                       create=False) for depth in depths}
    if baseline is not None:
        revision, store_class = baseline
        searchers[f"{revision} (before)"] = store_class(store.settings, create=False)
    return searchers


def probe_filters(store: VideoStore, vectors: np.ndarray, queries: np.ndarray, limit: int,
                  efs: list[int]) -> list[str]:
    """The server's HNSW search of `store`'s views collection under filters, against the exhaustive answer:
    table rows | search | ef | rows returned | recall of the true top rows |, over `queries` [Q, D]; `vectors`
    [N, 1 + views, D] as written (row (i, j): video i's view j)."""
    numbers: dict[tuple[str, int], tuple[list[int], list[float]]] = {}
    everything = np.ones(vectors.shape[:2], bool)
    names = [f"synthetic-{i:06d}" for i in range(len(vectors))]
    for query in tqdm(queries, desc="probing filtered searches", unit="query"):
        scores = vectors @ query  # [N, 1 + views]
        settled = np.argsort(-scores.max(axis=1), kind="stable")[:100]  # by best view
        scope = np.argsort(-scores[:, 0], kind="stable")[:1000]  # by full frame
        left_out, scoped, crops = everything.copy(), np.zeros_like(everything), everything.copy()
        left_out[settled], scoped[scope], crops[:, 0] = False, True, False
        radius = float(np.sort(scores, axis=None)[-limit])
        probes = [("no filter", everything, "", limit, None),
                  ("view > 0", crops, greater("view", 0), limit, None),
                  ("best 100 videos left out", left_out, is_not_in("video_id", [names[i] for i in settled]), limit,
                   None),
                  ("scope: full frames' top 1000 videos", scoped, is_in("video_id", [names[i] for i in scope]), limit,
                   None),
                  (f"range, radius = {limit:,}th score", everything, "", RANGE_LIMIT, radius)]
        for name, allowed, expression, count, floor in probes:
            allowed_scores = np.where(allowed, scores, -np.inf)
            wanted = limit if floor is None else int((allowed_scores > floor).sum())
            truth = set(np.argsort(-allowed_scores, axis=None, kind="stable")[:wanted].tolist())  # row i * V + j
            for ef in efs:
                params = {"metric_type": "IP", "params": {"ef": ef, **({} if floor is None else {"radius": floor})}}
                hits = store._call("probe", lambda client, q=query, e=expression, c=count, p=params: search_columns(
                    client, store.view_collection, q, c, "vector", p, ["video_id", "view"], e, "Session"))
                rows = listed(hits.column("video_id")) * scores.shape[1] + np.array(hits.column("view"), np.int64)
                found = set(rows.tolist())
                returned, recalls = numbers.setdefault((name, ef), ([], []))
                returned.append(len(hits))
                recalls.append(len(found & truth) / max(len(truth), 1))
    return [f"| {name} | {ef:,} | {statistics.median(returned):.0f} | {np.mean(recalls):.3f} ({min(recalls):.3f}) |"
            for (name, ef), (returned, recalls) in numbers.items()]


def cell(values: list[float], name: str = "") -> str:
    """Median / p95; for a recall, the mean (the lowest)."""
    if name.startswith("recall"):
        return f"{float(np.mean(values)):.3f} ({min(values):.3f})"
    return f"{statistics.median(values):.1f} / {float(np.percentile(values, 95)):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=10_000, help="videos in each store (default 10,000)")
    parser.add_argument("--queries", type=int, default=40, help="searches per store and K' (default 40)")
    parser.add_argument("--ks", type=int, nargs="+", default=[100, 1000], help="K' values (default 100 1000)")
    parser.add_argument("--view-cosine", type=view_cosine_arg, nargs="+", default=[None, VIEW_COSINE],
                        help="the crop views' cosine to their full frame, one store each ('none': independent, the "
                             "worst case; default: none and 0.96, the mean over the 7 sample videos' 63 crop views "
                             "with the bundled pack)")
    parser.add_argument("--segments", type=int, default=0,
                        help="frame windows a video in each store with views, at cosine SEGMENT_COSINE to its full "
                             "frame (default 0; an export with --index-segments 0.25 has 7)")
    parser.add_argument("--view-depths", type=int, nargs="+", default=[VIEW_DEPTH, 1000],
                        help=f"the store setting view_depth, each in turn on every query, those up to K' (default "
                             f"{VIEW_DEPTH}, the default, and 1000: exact at K' = 1000)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also search each store with views by the store code of this git revision (before/after)")
    parser.add_argument("--coarse-index", default="HNSW", choices=("HNSW", "FLAT"),
                        help="the stores' vector index (default HNSW, the served default; FLAT: exhaustive reads, so "
                             "that `exact to rank` shows what the search itself gives up)")
    parser.add_argument("--query-source", default="synthetic", choices=("synthetic", "indexed"),
                        help="query vectors: fresh ones from the videos' distribution (default), or the full frames of "
                             "indexed videos, as a served search by id asks")
    parser.add_argument("--probe-filters", action="store_true",
                        help="also probe the server's filtered and range searches of the views collection")
    parser.add_argument("--probe-limit", type=int, default=1016, help="rows per probed search (default 1016)")
    parser.add_argument("--probe-efs", type=int, nargs="+", default=[1016, 4096, 16384],
                        help="HNSW ef values probed (default 1016 4096 16384)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    baseline = (args.baseline, baseline_store(args.baseline)) if args.baseline else None
    if args.query_source == "synthetic":
        queries = synthetic_videos(10**7, args.queries, DIM, 1, np.random.default_rng(1))
        query_vectors = np.stack([video.coarse for video in queries])
    windows = f", {args.segments} frame windows each at cosine {SEGMENT_COSINE:g}" if args.segments else ""
    lines = [f"# Coarse search with and without crop views, in the store ({args.videos:,} videos)", "",
             f"Machine: {platform.machine()}, CPU only; `python benchmarks/view_search_bench.py --videos "
             f"{args.videos} --coarse-index {args.coarse_index} --segments {args.segments} --query-source "
             f"{args.query_source} --ks {' '.join(map(str, args.ks))} --view-depths "
             f"{' '.join(map(str, args.view_depths))}{f' --baseline {args.baseline}' if args.baseline else ''}` "
             f"({time.strftime('%Y-%m-%d')}).  Milvus 2.3.5 server, {args.coarse_index}; synthetic videos, "
             f"{VIEWS} crop views each{windows}, the crops drawn independently of the full frame (most of the K' "
             "then come in by a crop) or at a cosine to it (fewer do).  `hits read`: the rows all the search's "
             "Milvus searches returned.  `exact to rank`: the list holds the exhaustive best-view ranking down to "
             "that rank; `recall@100`, `recall@K'`: of the exhaustive best-view ranking's top 100 / K' videos, the "
             "share in the list's (mean, lowest).  Queries: "
             f"{'the full frames of indexed videos' if args.query_source == 'indexed' else 'fresh vectors'}.  "
             "Each search (`view_depth N`: today's code with that setting"
             f"{f'; `{args.baseline}`: the store code of that revision' if args.baseline else ''}) in turn on each "
             f"query.  Median / p95 over {args.queries} searches.", "",
             "| store | K' | search | search ms | Milvus searches | hits read | video rows read | of the K' by a crop "
             "| exact to rank | recall@100 | recall@K' |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as scratch, MilvusStandaloneServer(Path(scratch) / "data") as server:
        stores = {}
        kinds = [(f"crop views, {'independent' if c is None else f'cosine {c:g}'}{windows and ' + windows'}", VIEWS,
                  c) for c in args.view_cosine] + [("full frame only", 0, None)]
        for number, (label, views, cosine) in enumerate(kinds):
            segments = args.segments if views else 0
            store = CountedStore(StoreSettings(uri=server.uri, prefix=f"store{number}",
                                               coarse_index=args.coarse_index), model_version="bench",
                                 coarse_dim=DIM, representation="binary", text_dim=0, views=views or None,
                                 segments=segments or None)
            stores[label] = store, fill(store, args.videos, views, cosine, segments)
        if args.query_source == "indexed":  # the full frames of stored videos (the same in every store)
            chosen = np.random.default_rng(1).choice(args.videos, args.queries, replace=False)
            query_vectors = next(iter(stores.values()))[1][chosen, 0]
        for store, _ in stores.values():
            settle(store, 10)
        for k in args.ks:
            for label, (store, vectors) in stores.items():
                searchers = searchers_of(store, k, args.view_depths, baseline)
                for name, numbers in measure(searchers, vectors, query_vectors, k).items():
                    cells = " | ".join(cell(numbers[name], name) for name in
                                       ("ms", "searches", "hits read", "rows read", "by a crop", "exact", "recall@100",
                                        "recall@K'"))
                    lines.append(f"| {label} | {k} | {name} | {cells} |")
                    print(lines[-1], flush=True)
                for searcher in searchers.values():
                    if searcher is not store:
                        searcher.close()
        if args.probe_filters:
            label, (store, vectors) = next((label, stored) for label, stored in stores.items()
                                           if stored[0].meta.view_vectors)
            lines += ["", f"The server's own search of the views collection of `{label}` "
                      f"(`--probe-filters`): {args.probe_limit:,} rows a search, {len(query_vectors)} queries; "
                      "recall of the exhaustive top rows under the same filter (range: of every row above the "
                      "radius), mean (lowest).", "", "| search | ef | rows returned (median) | recall |",
                      "|---|---:|---:|---:|",
                      *probe_filters(store, vectors, query_vectors, args.probe_limit, args.probe_efs)]
            print("\n".join(lines[-12:]), flush=True)
        for store, _ in stores.values():
            store.close()
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
