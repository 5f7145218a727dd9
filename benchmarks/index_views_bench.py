"""What crop and segment views cost the served system: indexing time per video and the coarse search, with and
without them.

    .venv/bin/python benchmarks/index_views_bench.py [--videos 2000] [--queries 40]
    .venv/bin/python benchmarks/index_views_bench.py --videos 10000 --candidates 1000 --reranks 0 0.05 \
        --settle-s 150 --out benchmarks/results/index_views_10k.md        # issue 12's setting

Issue 15's crop views (pack.json `index_views`; `video_views`, the store's `{prefix}_views`) and segment views
(pack.json `index_segments`: the S^c vectors of frame windows, embedded by `dnsvr_index`, in the same collection):
one export of the bundled pack (crop views), a copy of it whose manifest also records frame windows (`dnsvr export
--index-segments 0.25`) and one with neither (`--index-views none`); the local service (Triton + the Milvus server
`dnsvr serve` starts) on each in turn, in one run:

    indexing   the sample videos through `dnsvr_index` (each indexed `--repeats` times: a re-index replaces it),
               the round trip per video, the `crop_views` stage (video_views) and the `segment_views` stage, per
               frame
    search     the store grown to `--videos` synthetic videos (with 9 crop views and 7 frame windows each where
               the repository has them, written straight into the store; `--settle-s`: then wait for the server
               to index them), then `--queries` searches by indexed id with K' = `--candidates` (default: the
               service's) at each of `--reranks` (default: coarse only and the default re-rank): the
               `coarse_search` stage and the round trip, median and p95

Writes benchmarks/results/index_views.md.  CPU only; the networks run in ONNX Runtime inside python-backend
models, as `dnsvr serve` runs them.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from dnsvr.client import VideoSearchClient
from dnsvr.serving.local.service import LocalService
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.training import paths
from dnsvr.training.files import atomic_write_text
from serving_bench import export_repository, grow, percentile, settle, visible

RESULTS = Path(__file__).resolve().parent / "results" / "index_views.md"
VIDEOS = paths.shared_videos_dir()


def exported_variant(repository: Path, target: Path, **manifest: object) -> Path:
    """A copy of `repository` whose manifest has these fields changed: `index_views=None` is what `--index-views
    none` exports, `view_codes=True` what `--view-codes` does (the graphs are the same)."""
    shutil.copytree(repository, target, symlinks=True)
    changed = {**json.loads((target / "manifest.json").read_text()), **manifest}
    (target / "manifest.json").write_text(json.dumps(changed, indent=2))
    return target


def measure(repository: Path, scratch: Path, args: argparse.Namespace) -> dict:
    """Index the sample videos, grow the store, search by id -> the timings (module docstring)."""
    files = sorted(VIDEOS.glob("*.mp4"))
    out: dict = {"index_ms": [], "views_ms_per_frame": [], "segments_ms_per_frame": [], "frames": 0}
    with LocalService(repository, store=scratch / "store", log_dir=scratch) as service, \
            VideoSearchClient(service.grpc_url, timeout_s=900) as client:
        for repeat in range(args.repeats):
            for path in files:
                began = time.perf_counter()
                result = client.index(path.stem, path)
                out["index_ms"].append(1000 * (time.perf_counter() - began))
                out["frames"] += result.frame_count if repeat == 0 else 0
                if "crop_views" in result.timings_ms:
                    out["views_ms_per_frame"].append(result.timings_ms["crop_views"] / result.frame_count)
                if "segment_views" in result.timings_ms:
                    out["segments_ms_per_frame"].append(result.timings_ms["segment_views"] / result.frame_count)
        stores = ServiceStore(repository, {"store_uri": service.store_uri})
        store = stores.get(create=False)
        grow(store, args.videos, args.frames, np.random.default_rng(0))
        if args.settle_s is not None:
            settle(store, args.settle_s)
        out["views"] = store.meta.view_vectors or 1
        stores.close()
        ids = [f"synthetic-{i:06d}" for i in np.random.default_rng(1).choice(np.arange(len(files), args.videos),
                                                                            args.queries)]
        visible(client, ids[:1])
        for rerank in args.reranks:
            coarse, trips = [], []
            for index, video_id in enumerate([ids[0], *ids]):
                began = time.perf_counter()
                result = client.search(video_id=video_id, top_k=10, rerank=rerank, candidates=args.candidates)
                if index:
                    trips.append(1000 * (time.perf_counter() - began))
                    coarse.append(result.timings_ms["coarse_search"])
            out[f"search_{rerank:g}"] = {"coarse_search": coarse, "round_trip": trips}
    return out


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} / {percentile(values, 95):.1f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="exported bundled repository (default: export one into a "
                        "temporary folder)")
    parser.add_argument("--videos", type=int, default=2000, help="videos in the store when searching (default 2000)")
    parser.add_argument("--frames", type=int, default=60, help="frames per synthetic video (default 60)")
    parser.add_argument("--queries", type=int, default=40, help="timed searches by id per re-rank setting")
    parser.add_argument("--repeats", type=int, default=2, help="times each sample video is indexed (default 2)")
    parser.add_argument("--candidates", type=int, default=None, help="K' (default: the service's)")
    parser.add_argument("--reranks", type=float, nargs="+", default=[0.0, 0.1],
                        help="re-rank fractions searched (default: 0 0.1)")
    parser.add_argument("--settle-s", type=float, default=None,
                        help="after the fill, wait for the server to index it and this many seconds more")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="index-views-bench-") as folder:
        scratch = Path(folder)
        repository = args.repository or export_repository(scratch / "repository")
        variants = {"crop and segment views (--index-segments 0.25)": exported_variant(
                        repository, scratch / "segments", index_segments={"lengths": [0.25]}),
                    "crop views (the bundled pack)": repository,
                    "full frame only (--index-views none)": exported_variant(repository, scratch / "plain",
                                                                             index_views=None)}
        results = {}
        for name, variant in variants.items():
            print(f"{name} ...", flush=True)
            run = scratch / f"run-{len(results)}"
            run.mkdir()
            results[name] = measure(variant, run, args)
    settings = (f" --candidates {args.candidates}" if args.candidates else "") + " --reranks " + " ".join(
        f"{r:g}" for r in args.reranks) + (f" --settle-s {args.settle_s:g}" if args.settle_s is not None else "")
    lines = ["# Crop and segment views: what they cost the served system\n",
             f"`benchmarks/index_views_bench.py --videos {args.videos} --queries {args.queries} --repeats "
             f"{args.repeats}{settings}` ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
             "CPU only, the Milvus server `dnsvr serve` starts). Indexing: the sample videos through "
             "`dnsvr_index`, round trip per video; `crop_views`: video_views' stage per frame; `segment_views`: "
             f"the frame windows' stage per frame. Search: by indexed id over {args.videos:,} videos (synthetic "
             "beyond the samples, with crop views and frame windows where the repository has them), K' = "
             f"{args.candidates or 'the service default'}, top 10, median / p95 ms.\n",
             "| index | coarse vectors a video | index round trip (ms / video) | crop_views (ms / frame) | "
             "segment_views (ms / frame) | " + " | ".join(f"coarse_search, re-rank {r:g} | round trip, re-rank {r:g}"
                                                         for r in args.reranks) + " |",
             "|---|---:|---:|---:|---:|" + "---:|---:|" * len(args.reranks)]
    for name, out in results.items():
        searches = " | ".join(f"{cell(out[f'search_{r:g}']['coarse_search'])} | "
                              f"{cell(out[f'search_{r:g}']['round_trip'])}" for r in args.reranks)
        lines.append(f"| {name} | {out['views']} | {cell(out['index_ms'])} | {cell(out['views_ms_per_frame'])} | "
                     f"{cell(out['segments_ms_per_frame'])} | {searches} |")
    frames = next(iter(results.values()))["frames"]
    lines.append(f"\nThe sample videos: {len(list(VIDEOS.glob('*.mp4')))} files, {frames} frames at 1 fps.")
    table = "\n".join(lines) + "\n"
    print(table)
    atomic_write_text(args.out, table)


if __name__ == "__main__":
    main()
