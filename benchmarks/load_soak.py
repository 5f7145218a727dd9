"""Load and soak: concurrent clients search (by indexed id and by video file), index and delete against the
service `dnsvr serve` runs (Triton + its default engine, supervised) holding --videos indexed videos, for a
bounded time; then a consistency check of everything the clients were told.

    python benchmarks/load_soak.py                               # 10k videos, 8 clients, 120 s
    python benchmarks/load_soak.py --videos 1000 --clients 16 --seconds 60
    python benchmarks/load_soak.py --engine lite                 # on Milvus Lite (`dnsvr serve --store X.db`)

Engines (`--engine`): `server` is what `dnsvr serve` starts by default, the Milvus 2.3.5 server in a network
namespace of its own behind a Unix socket (chunk rows); `lite` is Milvus Lite.

Each client draws its operations from the mix --mix (weights of search by id, search by file, index, delete;
default 60/10/20/10), with a seed of its own.  Index writes a new id (frames of the sample videos, 4 to 8 of
them); delete removes one of the ids this client indexed.  Every call's latency and outcome is recorded.

After the run: `store check` (no incomplete video, no orphan older than the grace period), every id whose index
was acknowledged and not deleted since is found by a search by id, every acknowledged delete is gone (NotFound),
and the store's count equals the preloaded videos plus the acknowledged indexes minus the acknowledged deletes.
Prints and writes the table to --out (default benchmarks/results/load_soak.md).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from dnsvr.client import DnsvrError, NotFound, VideoSearchClient
from dnsvr.serving.local.service import LocalService
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.training import paths
from dnsvr.training.data.video import decode_video
from serving_bench import export_repository, grow

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "load_soak.md"
OPERATIONS = ("search_id", "search_file", "index", "delete")
ENGINES = {"server": "milvus-server", "lite": "milvus.db"}  # --engine -> the store path `dnsvr serve` is given
ENGINE_NAMES = {"server": "the isolated Milvus 2.3.5 server", "lite": "Milvus Lite"}


@dataclass
class Ledger:
    """What one client did and was told."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter = field(default_factory=Counter)
    indexed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def client_loop(number: int, url: str, deadline: float, mix: list[float], ids: list[str], files: list[Path],
                frames: list[np.ndarray], ledger: Ledger) -> None:
    rng = random.Random(number)
    with VideoSearchClient(url, timeout_s=300) as client:
        counter = 0
        while time.monotonic() < deadline:
            operation = rng.choices(OPERATIONS, weights=mix)[0]
            if operation == "delete" and not ledger.indexed:
                operation = "index"
            began = time.perf_counter()
            try:
                if operation == "search_id":
                    client.search(video_id=rng.choice(ids), top_k=10, rerank=0.1)
                elif operation == "search_file":
                    client.search(rng.choice(files), top_k=10, rerank=0.1)
                elif operation == "index":
                    video_id = f"soak-{number}-{counter}"
                    counter += 1
                    clip = rng.choice(frames)
                    client.index(video_id, clip[: rng.randint(4, min(8, len(clip)))])
                    ledger.indexed.append(video_id)
                else:
                    video_id = ledger.indexed.pop(rng.randrange(len(ledger.indexed)))
                    if client.delete(video_id):
                        ledger.deleted.append(video_id)
            except DnsvrError as error:
                ledger.errors[f"{operation}: {type(error).__name__}"] += 1
                continue
            ledger.latencies[operation].append((time.perf_counter() - began) * 1000.0)


def verify(client: VideoSearchClient, store_uri: str, repository: Path, preloaded: int,
           ledgers: list[Ledger]) -> list[str]:
    """The consistency checks of the module docstring -> lines of the report."""
    present = [v for ledger in ledgers for v in ledger.indexed]
    gone = [v for ledger in ledgers for v in ledger.deleted]
    missing = []
    for video_id in present:
        try:
            client.search(video_id=video_id, top_k=1, rerank=0)
        except NotFound:
            missing.append(video_id)
    resurrected = []
    for video_id in gone:
        try:
            client.search(video_id=video_id, top_k=1, rerank=0)
            resurrected.append(video_id)
        except NotFound:
            pass
    stores = ServiceStore(repository, {"store_uri": store_uri})
    store = stores.get(create=False)
    report = store.check()
    count = store.count()
    stores.close()
    expected = preloaded + len(present)
    return [
        f"- acknowledged indexes still present: {len(present) - len(missing)} / {len(present)} (missing: "
        f"{missing[:5]})",
        f"- acknowledged deletes gone: {len(gone) - len(resurrected)} / {len(gone)}",
        f"- store count {count:,} = preloaded {preloaded:,} + acknowledged indexes kept {len(present)}: "
        f"{'yes' if count == expected else f'NO (expected {expected:,})'}",
        f"- store check: {report.videos:,} videos, incomplete {len(report.incomplete_video_ids)}, orphan rows "
        f"older than the grace period {report.orphan_rows} (younger, skipped: {report.skipped_recent_rows})",
    ]


def table(ledgers: list[Ledger], seconds: float) -> list[str]:
    rows = ["| operation | calls | per second | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---|"]
    errors = sum((ledger.errors for ledger in ledgers), Counter())
    for operation in OPERATIONS:
        values = [v for ledger in ledgers for v in ledger.latencies[operation]]
        failed = {k.split(": ", 1)[1]: n for k, n in errors.items() if k.startswith(f"{operation}:")}
        if not values and not failed:
            continue
        p50 = statistics.median(values) if values else float("nan")
        p99 = float(np.percentile(values, 99)) if values else float("nan")
        rows.append(f"| {operation} | {len(values)} | {len(values) / seconds:.1f} | {p50:.0f} | {p99:.0f} | "
                    f"{', '.join(f'{k} {n}' for k, n in failed.items()) or 'none'} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="exported model repository (default: export the bundled "
                        "pack into a temporary folder)")
    parser.add_argument("--videos", type=int, default=10_000, help="videos in the store before the run")
    parser.add_argument("--frames", type=int, default=30, help="frames per preloaded synthetic video")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--mix", type=float, nargs=4, default=[60, 10, 20, 10], metavar=("ID", "FILE", "INDEX", "DEL"))
    parser.add_argument("--engine", choices=ENGINES, default="server",
                        help="the store engine (default: server, what `dnsvr serve` starts by default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    files = sorted(paths.shared_videos_dir().glob("*.mp4"))
    frames = [decode_video(path, max_frames=8) for path in files]
    with tempfile.TemporaryDirectory(prefix="dnsvr-soak-") as scratch:
        repository = args.repository or export_repository(Path(scratch) / "model_repository")
        with LocalService(repository, store=Path(scratch) / ENGINES[args.engine], log_dir=Path(scratch),
                          env={paths.MAX_FRAMES: "60"}) as service:
            with VideoSearchClient(service.grpc_url, timeout_s=900) as client:
                client.index("anchor", frames[0])  # creates the store with the served model version
                stores = ServiceStore(repository, {"store_uri": service.store_uri})
                grow(stores.get(create=False), args.videos, args.frames, np.random.default_rng(0))
                stores.close()
                ids = [f"synthetic-{i:06d}" for i in np.random.default_rng(1).choice(np.arange(1, args.videos), 500)]
                ledgers = [Ledger() for _ in range(args.clients)]
                deadline = time.monotonic() + args.seconds
                print(f"{args.clients} clients for {args.seconds:.0f} s over {args.videos:,} videos ...", flush=True)
                threads = [threading.Thread(target=client_loop, args=(n, service.grpc_url, deadline, args.mix, ids,
                                                                      files, frames, ledgers[n]))
                           for n in range(args.clients)]
                began = time.monotonic()
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                elapsed = time.monotonic() - began
                rows = table(ledgers, elapsed)
                checks = verify(client, service.store_uri, repository, args.videos, ledgers)
            events = list(service.supervisor.events)
    lines = [
        "# Load and soak (benchmarks/load_soak.py)",
        "",
        f"{args.clients} concurrent clients for {elapsed:.0f} s against `dnsvr serve` (Triton 2.51 cpu_local + "
        f"{ENGINE_NAMES[args.engine]}) holding {args.videos:,} videos of {args.frames} frames; mix "
        f"search by id / by file / index / delete = {'/'.join(f'{w:g}' for w in args.mix)}; searches top-10, "
        f"re-rank 0.1 of 100 candidates.  {platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} cores.",
        "",
        *rows,
        "",
        "Consistency after the run:",
        "",
        *checks,
        f"- supervisor events during the run: {events or 'none'}",
    ]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
