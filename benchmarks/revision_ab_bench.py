"""A change to the serving code, measured: the same repository served with some of dnsvr's source files as they
are and as they were at a git revision, in alternating rounds, searching by the same video file.

The Triton python stubs import dnsvr from this checkout when the service starts, so a round with the baseline
writes the `--files` as they were at `--baseline` (`git show REV:PATH`) over the checkout, starts the service,
measures, stops it, and puts the files back (also when the run fails or is interrupted; a copy of each file as
it was stays in the scratch folder until the end).  Commit or stash first: the files must be as committed or
as you mean to measure them.  The order of the two alternates from round to round.

Each round: a fresh service on the run's store (the sample videos, indexed in the first round, and with
`--videos N` synthetic videos of 60 frames written into it as `serving_bench.py` writes them, then left
`--settle-s` to the server's index builds); `--queries` searches by a synthetic 30 s 1280x720 30 fps H.264 clip
(`decode_bench.encode_clip`, keyframe every second) after 2 untimed, top-10, no re-ranking, then `--indexes`
index calls of the same clip (after 1 untimed); with `--videos`, also `--id-searches` searches by indexed id
(after 2 untimed), K' = `--candidates`, top-10, `--rerank` of them re-ranked: the issue-12 retrieval path.
Reported: median (p95) ms of each round trip and of the stages that dnsvr_search reports; the ratio baseline
over current.

    python benchmarks/revision_ab_bench.py --baseline de3f2f8 --files serving/triton/base.py --rounds 4
    python benchmarks/revision_ab_bench.py --baseline 51c7d7f --files training/localisation.py --videos 10000 \
        --queries 0 --indexes 0

A change that also changes what `dnsvr export` writes (a graph, a config) serves, in the baseline rounds, a
repository exported with the baseline code (`--baseline-repository DIR`).

Writes benchmarks/results/revision_ab.md (`--out`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from decode_bench import encode_clip
from dnsvr.client import VideoSearchClient
from dnsvr.serving.local.service import LocalService
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.training import paths
from embed_bench import percentile
from serving_bench import export_repository, grow, settle, visible
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "revision_ab.md"
CURRENT, BASELINE = "current", "baseline"


def at_revision(revision: str, path: str) -> bytes:
    """The file `path` (relative to the checkout) as committed at `revision`."""
    return subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True, capture_output=True).stdout


ID_STAGES = ("coarse_search", "fetch_codes", "fine_similarity", "localisation")  # reported for searches by id


def measure(repository: Path, store: Path, logs: Path, clip: bytes, args: argparse.Namespace
            ) -> dict[str, list[float]]:
    """One round on a fresh service over the store at `store` (filled in the first round) -> {measure: [ms]}."""
    times: dict[str, list[float]] = {}
    fresh = not store.exists()
    with LocalService(repository, store=store, log_dir=logs) as service, \
            VideoSearchClient(service.grpc_url, timeout_s=600) as client:
        videos = sorted(paths.shared_videos_dir().glob("*.mp4"))
        if fresh:
            client.index_many([(path.stem, path) for path in videos])
        if args.videos:
            ids = by_id_queries(client, repository, service.store_uri, len(videos), args)
            for index, video_id in enumerate(ids[:2] + ids):
                began = time.perf_counter()
                result = client.search(video_id=video_id, top_k=10, rerank=args.rerank, candidates=args.candidates)
                if index >= 2:
                    times.setdefault("search by id, round trip", []).append(1000 * (time.perf_counter() - began))
                    for stage in ID_STAGES:
                        times.setdefault(f"search by id, {stage}", []).append(result.timings_ms.get(stage, 0.0))
        for index in range(2 + args.queries if args.queries else 0):
            began = time.perf_counter()
            result = client.search(clip, top_k=10, rerank=0.0)
            if index >= 2:
                times.setdefault("search round trip", []).append(1000 * (time.perf_counter() - began))
                times.setdefault("search embed", []).append(result.timings_ms["embed"])
        for index in range(1 + args.indexes if args.indexes else 0):
            began = time.perf_counter()
            client.index(f"clip-{index}", clip)
            if index >= 1:
                times.setdefault("index round trip", []).append(1000 * (time.perf_counter() - began))
    return times


def by_id_queries(client: VideoSearchClient, repository: Path, store_uri: str, samples: int,
                  args: argparse.Namespace) -> list[str]:
    """Grow the store to `args.videos` (synthetic videos after the `samples` sample videos) and let the server
    settle, then -> `args.id_searches` synthetic ids to search by (the same in every round), visible to the
    service."""
    store = ServiceStore(repository, {"store_uri": store_uri}).get(create=False)
    try:
        if store.count() < args.videos:
            grow(store, args.videos, 60, np.random.default_rng(0))
        settle(store, args.settle_s)
    finally:
        store.close()
    chosen = np.random.default_rng(1).choice(np.arange(samples, args.videos), args.id_searches, replace=False)
    ids = [f"synthetic-{i:06d}" for i in chosen]
    visible(client, ids)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the git revision whose files are the baseline")
    parser.add_argument("--files", nargs="+", required=True, help="source files (relative to the checkout) swapped")
    parser.add_argument("--repository", type=Path, help="exported model repository (default: export the bundled "
                        "pack into a temporary folder)")
    parser.add_argument("--baseline-repository", type=Path, help="the repository the baseline rounds serve, where "
                        "the change also changes what `dnsvr export` writes (export it with the baseline code "
                        "first; default: the same repository for both)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, each serving both (default 4)")
    parser.add_argument("--queries", type=int, default=6, help="timed searches per round and side (default 6)")
    parser.add_argument("--indexes", type=int, default=3, help="timed index calls per round and side (default 3)")
    parser.add_argument("--videos", type=int, default=0, help="synthetic videos in the store, searched by id "
                        "(default 0: none, no searches by id)")
    parser.add_argument("--id-searches", type=int, default=30, help="timed searches by id per round and side "
                        "(default 30)")
    parser.add_argument("--rerank", type=float, default=0.05, help="fraction re-ranked in the searches by id "
                        "(default 0.05)")
    parser.add_argument("--candidates", type=int, default=1000, help="K' of the searches by id (default 1000)")
    parser.add_argument("--settle-s", type=float, default=30.0, help="seconds left to the server after its index "
                        "builds, each round, before the searches by id (default 30)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    args = parser.parse_args()
    baseline = {path: at_revision(args.baseline, path) for path in args.files}
    current = {path: (ROOT / path).read_bytes() for path in args.files}
    results: dict[str, dict[str, list[float]]] = {CURRENT: {}, BASELINE: {}}
    with tempfile.TemporaryDirectory(prefix="revision-ab-") as folder:
        scratch = Path(folder)
        (scratch / "as-it-was").mkdir()
        for path, content in current.items():
            (scratch / "as-it-was" / path.replace(os.sep, "__")).write_bytes(content)
        repository = args.repository or export_repository(scratch / "repository")
        clip = encode_clip(30, 30, 30) if args.queries or args.indexes else b""  # searched and indexed
        sides = [CURRENT, BASELINE]
        with tqdm(total=2 * args.rounds, desc="rounds x sides") as progress:
            for round_ in range(args.rounds):
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    try:
                        for path, content in (baseline if side == BASELINE else current).items():
                            (ROOT / path).write_bytes(content)
                        served = args.baseline_repository if side == BASELINE and args.baseline_repository \
                            else repository
                        measured = measure(served, scratch / "store", scratch / f"run-{side}-{round_}", clip, args)
                    finally:
                        for path, content in current.items():
                            (ROOT / path).write_bytes(content)
                    for key, values in measured.items():
                        results[side].setdefault(key, []).extend(values)
                    progress.update()
                    progress.write(f"round {round_ + 1} {side}: " + ", ".join(
                        f"{key} {statistics.median(values):.0f}" for key, values in measured.items()))
        clip_mb = len(clip) / 1e6
    write_report(results, args, clip_mb)


def write_report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace, clip_mb: float) -> None:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} ({percentile(values, 0.95):.0f})"

    lines = ["# A change to the serving code: current vs baseline files, alternating rounds", "",
             f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores. `python benchmarks/"
             f"revision_ab_bench.py --baseline {args.baseline} --files {' '.join(args.files)} --rounds {args.rounds} "
             f"--queries {args.queries} --indexes {args.indexes} --videos {args.videos}`: the bundled pack served as "
             f"`dnsvr serve` serves it (embedded store of the sample videos and {args.videos:,} synthetic videos of 60 "
             f"frames); {args.id_searches} searches by indexed id a round and side (K' = {args.candidates}, top-10, "
             f"re-rank {args.rerank:g}), {args.queries} by a 30 s 1280x720 H.264 clip ({clip_mb:.1f} MB; top-10, no "
             "re-ranking), the same clip indexed "
             f"{args.indexes} times.  Median (p95) ms over every round; stages as dnsvr_search reports them."
             + (" The baseline rounds serve the repository exported with the baseline code "
                "(`--baseline-repository`)." if args.baseline_repository else ""), "",
             f"| measure | current | baseline ({args.baseline}) | baseline / current |", "|---|---:|---:|---:|"]
    for key in results[CURRENT]:
        current_ms, baseline_ms = statistics.median(results[CURRENT][key]), statistics.median(results[BASELINE][key])
        ratio = f"{baseline_ms / current_ms:.3f}x" if current_ms > 0 else "-"  # a stage neither side ran: 0 ms
        lines.append(f"| {key} | {cell(results[CURRENT][key])} | {cell(results[BASELINE][key])} | {ratio} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
