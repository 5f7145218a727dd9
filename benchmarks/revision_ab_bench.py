"""A change to the serving code, measured: the same repository served with some of dnsvr's source files as they
are and as they were at a git revision, in alternating rounds, searching by the same video file.

The Triton python stubs import dnsvr from this checkout when the service starts, so a round with the baseline
writes the `--files` as they were at `--baseline` (`git show REV:PATH`) over the checkout, starts the service,
measures, stops it, and puts the files back (also when the run fails or is interrupted; a copy of each file as
it was stays in the scratch folder until the end).  Commit or stash first: the files must be as committed or
as you mean to measure them.  The order of the two alternates from round to round.

Each round: a fresh service on a store of the sample videos; `--queries` searches by a synthetic 30 s 1280x720
30 fps H.264 clip (`decode_bench.encode_clip`, keyframe every second) after 2 untimed, top-10, no re-ranking,
then `--indexes` index calls of the same clip (after 1 untimed).  Reported: median (p95) ms of the search's
round trip and its `embed` stage, and of the index round trip; the ratio baseline over current.

    python benchmarks/revision_ab_bench.py --baseline de3f2f8 --files serving/triton/base.py --rounds 4

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

from decode_bench import encode_clip
from dnsvr.client import VideoSearchClient
from dnsvr.serving.local.service import LocalService
from dnsvr.training import paths
from embed_bench import percentile
from serving_bench import export_repository
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "revision_ab.md"
CURRENT, BASELINE = "current", "baseline"


def at_revision(revision: str, path: str) -> bytes:
    """The file `path` (relative to the checkout) as committed at `revision`."""
    return subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True, capture_output=True).stdout


def measure(repository: Path, scratch: Path, clip: bytes, queries: int, indexes: int) -> dict[str, list[float]]:
    """One round on a fresh service -> {"search round trip" | "search embed" | "index round trip": [ms]}."""
    times: dict[str, list[float]] = {"search round trip": [], "search embed": [], "index round trip": []}
    with LocalService(repository, store=scratch / "store", log_dir=scratch) as service, \
            VideoSearchClient(service.grpc_url, timeout_s=600) as client:
        client.index_many([(path.stem, path) for path in sorted(paths.shared_videos_dir().glob("*.mp4"))])
        for index in range(2 + queries):
            began = time.perf_counter()
            result = client.search(clip, top_k=10, rerank=0.0)
            if index >= 2:
                times["search round trip"].append(1000 * (time.perf_counter() - began))
                times["search embed"].append(result.timings_ms["embed"])
        for index in range(1 + indexes):
            began = time.perf_counter()
            client.index(f"clip-{index}", clip)
            if index >= 1:
                times["index round trip"].append(1000 * (time.perf_counter() - began))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the git revision whose files are the baseline")
    parser.add_argument("--files", nargs="+", required=True, help="source files (relative to the checkout) swapped")
    parser.add_argument("--repository", type=Path, help="exported model repository (default: export the bundled "
                        "pack into a temporary folder)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, each serving both (default 4)")
    parser.add_argument("--queries", type=int, default=6, help="timed searches per round and side (default 6)")
    parser.add_argument("--indexes", type=int, default=3, help="timed index calls per round and side (default 3)")
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
        clip = encode_clip(30, 30, 30)
        sides = [CURRENT, BASELINE]
        with tqdm(total=2 * args.rounds, desc="rounds x sides") as progress:
            for round_ in range(args.rounds):
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    try:
                        for path, content in (baseline if side == BASELINE else current).items():
                            (ROOT / path).write_bytes(content)
                        measured = measure(repository, scratch / f"run-{side}-{round_}", clip, args.queries,
                                           args.indexes)
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
             f"--queries {args.queries} --indexes {args.indexes}`: the bundled pack served as `dnsvr serve` serves it "
             f"(embedded store of the sample videos), queried by a 30 s 1280x720 H.264 clip ({clip_mb:.1f} MB), "
             "top-10, no re-ranking; the same clip indexed.  Median (p95) ms over every round.", "",
             f"| measure | current | baseline ({args.baseline}) | baseline / current |", "|---|---:|---:|---:|"]
    for key in results[CURRENT]:
        ratio = statistics.median(results[BASELINE][key]) / statistics.median(results[CURRENT][key])
        lines.append(f"| {key} | {cell(results[CURRENT][key])} | {cell(results[BASELINE][key])} | {ratio:.3f}x |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
