"""Video store benchmark: insert throughput, search_coarse and fetch_codes latency, bytes per video on disk.

Synthetic videos (unit coarse vectors, random packed S^f_B codes, `--frames` frames each) are upserted in
batches into a fresh store on each backend, growing through `--sizes`; at each size the latencies are measured
with random queries / candidate ids.  Backends run as local processes on 127.0.0.1:
    lite    `milvus-lite server` (Milvus Lite 3.2.2; chunk layout, the embedded default)
    server  `milvus-server` (Milvus 2.3.5 standalone; vector layout: BINARY_VECTOR(4608) per frame)
Disk bytes are the size of the backend's data directory after the inserts (the paper's estimate for DnS
storage: 576 B per frame + 4 KB per video).

    python benchmarks/store_bench.py                          # 10k videos, both backends
    python benchmarks/store_bench.py --sizes 1000 10000 100000 --backends server
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from dnsvr.serving.local.milvus_servers import MilvusLiteServer, MilvusStandaloneServer
from dnsvr.serving.store.schema import IndexedVideo
from dnsvr.serving.store.settings import StoreSettings
from dnsvr.serving.store.video_store import VideoStore
from tqdm import tqdm

RESULTS = Path(__file__).resolve().parent / "results" / "store.md"
PAPER_BYTES_PER_FRAME = 576
PAPER_BYTES_PER_VIDEO = 4096
SERVERS = {"lite": MilvusLiteServer, "server": MilvusStandaloneServer}


def synthetic_videos(start: int, count: int, frames: int, dim: int, rng: np.random.Generator) -> list[IndexedVideo]:
    """`count` videos: coarse [dim] unit float32, fine codes [frames, 9, 64] uint8 random bits."""
    coarse = rng.normal(size=(count, dim)).astype(np.float32)
    coarse /= np.linalg.norm(coarse, axis=1, keepdims=True)
    codes = rng.integers(0, 256, size=(count, frames, 9, 64), dtype=np.uint8)
    return [IndexedVideo(f"video-{start + i:07d}", coarse[i], float(rng.random()), codes[i],
                         source_uri=f"s3://bench/{start + i}.mp4") for i in range(count)]


def digest(codes: np.ndarray) -> bytes:
    """A short fingerprint of one video's codes [T, 9, 64] uint8, to check what fetch_codes returns."""
    return hashlib.blake2b(np.ascontiguousarray(codes).tobytes(), digest_size=8).digest()


def latency_ms(action: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and p95 wall time of `action` in milliseconds (after one warm-up call)."""
    action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_reads(store: VideoStore, digests: dict[str, bytes], kind: str, args: argparse.Namespace) -> dict:
    """Latency cells (median, p95 in ms) of search_coarse and fetch_codes(K) on the stored videos, and
    "fetch wrong": videos fetched missing, short or with other codes than were stored / videos fetched."""
    stored = len(digests)
    ids = [f"video-{i:07d}" for i in range(stored)]
    rng = np.random.default_rng(1)
    store.count()  # Strong read: everything inserted is visible before timing reads
    queries = iter(synthetic_videos(0, 2 * args.repeats + 2, 1, args.dim, rng))
    cells = {"search ms (p95)": latency_ms(lambda: store.search_coarse(next(queries).coarse, args.k),
                                           args.repeats)}
    if kind == "server":
        query = next(queries).coarse
        cells["search Strong ms"] = latency_ms(lambda: store.search_coarse(query, args.k, consistency="Strong"), 5)

    checked, wrong = [0], []

    def fetch(candidates: int) -> None:
        chosen = [ids[i] for i in rng.choice(len(ids), size=min(candidates, len(ids)), replace=False)]
        fetched = store.fetch_codes(chosen)
        for index, video_id in enumerate(chosen):
            frames = int(fetched.frame_counts[index])
            if frames != args.frames or digest(fetched.codes[index, :frames]) != digests[video_id]:
                wrong.append(f"{video_id} ({frames} frames)")
        checked[0] += len(chosen)

    for candidates in (10, 50, 200):
        cells[f"fetch K={candidates} ms (p95)"] = latency_ms(lambda k=candidates: fetch(k), args.repeats)
    if wrong:
        tqdm.write(f"fetch_codes returned wrong codes for {len(wrong)} fetches: {', '.join(wrong[:10])}")
    cells["fetch wrong"] = f"{len(wrong)}/{checked[0]}"
    return cells


def bench_backend(kind: str, sizes: list[int], args: argparse.Namespace, work: Path) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    data_dir = work / kind / "data"
    with SERVERS[kind](data_dir) as server:
        store = VideoStore(StoreSettings(uri=server.uri, prefix="bench", coarse_index=args.coarse_index),
                           model_version="bench", coarse_dim=args.dim, representation="binary")
        stored = 0
        digests: dict[str, bytes] = {}
        for size in sizes:
            started = time.perf_counter()
            with tqdm(total=size - stored, desc=f"{kind}: insert to {size:,}", unit="video") as progress:
                while stored < size:
                    count = min(args.batch, size - stored)
                    videos = synthetic_videos(stored, count, args.frames, args.dim, rng)
                    store.upsert_many(videos)
                    digests.update((video.video_id, digest(video.fine_codes)) for video in videos)
                    stored += count
                    progress.update(count)
            insert_s = time.perf_counter() - started
            previous = sizes[sizes.index(size) - 1] if sizes.index(size) else 0
            row = {
                "backend": f"{kind} ({store.server_version}, {store.meta.layout})",
                "videos": stored,
                "insert videos/s": (size - previous) / insert_s,
                **measure_reads(store, digests, kind, args),
            }
            store.close()
            row["disk B/video"] = directory_bytes(data_dir) / stored
            rows.append(row)
            tqdm.write(format_table([row], args).splitlines()[-1], file=sys.stdout)
            store = VideoStore(StoreSettings(uri=server.uri, prefix="bench", coarse_index=args.coarse_index))
        store.close()
    return rows


def format_table(rows: list[dict], args: argparse.Namespace) -> str:
    columns = ["backend", "videos", "insert videos/s", "search ms (p95)", "search Strong ms",
               "fetch K=10 ms (p95)", "fetch K=50 ms (p95)", "fetch K=200 ms (p95)", "fetch wrong", "disk B/video"]

    def cell(value: object) -> str:
        if isinstance(value, tuple):
            return f"{value[0]:.1f} ({value[1]:.1f})"
        if isinstance(value, float):
            return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
        if isinstance(value, int):
            return f"{value:,}"
        return "—" if value is None else str(value)

    paper = PAPER_BYTES_PER_FRAME * args.frames + PAPER_BYTES_PER_VIDEO
    lines = [
        f"{args.frames} frames/video, coarse dim {args.dim} ({args.coarse_index}), top-{args.k}, "
        f"{args.repeats} timed calls per cell, Session consistency unless noted; insert batches of {args.batch}. "
        f"Paper's storage estimate: {PAPER_BYTES_PER_FRAME} B/frame + {PAPER_BYTES_PER_VIDEO} B = {paper:,} B/video.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(column)) for column in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000], help="store sizes, ascending")
    parser.add_argument("--backends", nargs="+", choices=sorted(SERVERS), default=["lite", "server"])
    parser.add_argument("--frames", type=int, default=60, help="frames per video (default 60)")
    parser.add_argument("--dim", type=int, default=1024, help="coarse vector dimension (default 1024)")
    parser.add_argument("--coarse-index", default="HNSW", choices=["FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"])
    parser.add_argument("--k", type=int, default=100, help="top-k of search_coarse (default 100)")
    parser.add_argument("--batch", type=int, default=200, help="videos per upsert_many call (default 200)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per latency cell (default 20)")
    parser.add_argument("--work-dir", type=Path, help="where the stores are written (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"markdown table (default {RESULTS})")
    args = parser.parse_args(argv)
    if sorted(args.sizes) != args.sizes:
        parser.error("--sizes must be ascending")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        for kind in args.backends:
            rows += bench_backend(kind, args.sizes, args, Path(work))
    table = format_table(rows, args)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Video store benchmark (`benchmarks/store_bench.py`)\n\n" + table + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
