"""Reading K videos' fine codes from the frame collection, with and without scalar indexes on its filter fields.

The store reads a video's chunk rows by `video_id in [...] and generation in [...]` (`VideoStore.read_codes`).
Without an index, the Milvus 2.3.5 server evaluates that filter on every row of every segment; with a Trie index
on `video_id` and a sorted index on `generation` (`video_store.SCALAR_INDEXES`, what new stores get) it looks
the values up.  This writes `--videos` videos of `--frames` random S^f_B frames in the store's own chunk-row
schema and rows (`schema.frame_schema`, `schema.frame_rows`) into the isolated server `dnsvr serve` starts,
measures `--queries` reads of K random videos' rows (query only: the rows arrive, nothing is decoded), then
adds the indexes to the same collection (released, indexed, loaded again) and measures again.

    python benchmarks/scalar_index_bench.py                          # 100,000 videos, K = 50
    python benchmarks/scalar_index_bench.py --videos 10000 --k 50 200

Writes benchmarks/results/scalar_index.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from dnsvr.serving.local.milvus_servers import MilvusStandaloneServer
from dnsvr.serving.store.schema import frame_rows, frame_schema, make_meta
from dnsvr.serving.store.video_store import SCALAR_INDEXES, _group_filter
from tqdm import tqdm

RESULTS = Path(__file__).resolve().parent / "results" / "scalar_index.md"
FIELDS = ["video_id", "generation", "frame_start", "codes"]


def timed_reads(client, name: str, generations: np.ndarray, k: int, queries: int,
                rng: np.random.Generator) -> tuple[float, float]:
    """Median and p95 ms of `queries` reads of k random videos' rows; every read must return all their rows."""
    times = []
    for _ in range(queries):
        picked = rng.choice(len(generations), k, replace=False)
        expression = _group_filter({f"video-{i:07d}": int(generations[i]) for i in picked})
        began = time.perf_counter()
        rows = client.query(name, filter=expression, output_fields=FIELDS, limit=16_384)
        times.append(1000 * (time.perf_counter() - began))
        assert len(rows) == k, f"{len(rows)} rows for {k} videos"
    return statistics.median(times), float(np.percentile(times, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100_000, help="videos written (default 100,000)")
    parser.add_argument("--frames", type=int, default=60, help="frames per video (default 60: one chunk row)")
    parser.add_argument("--k", type=int, nargs="+", default=[50], help="videos read per query (default 50)")
    parser.add_argument("--queries", type=int, default=40, help="timed reads per cell (default 40)")
    parser.add_argument("--settle-s", type=float, default=60.0,
                        help="seconds to wait after the flush for the server's compactions (default 60)")
    args = parser.parse_args()
    from pymilvus import MilvusClient

    rng = np.random.default_rng(0)
    meta = make_meta("bench", 1024, "binary", "chunk")
    generations = rng.choice(1 << 40, args.videos, replace=False) + (1 << 50)
    results: dict[str, dict[int, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as folder, \
            MilvusStandaloneServer(Path(folder) / "data", isolated=True) as server:
        client = MilvusClient(uri=server.uri)
        index = client.prepare_index_params()
        index.add_index("placeholder", index_type="FLAT", metric_type="L2")
        client.create_collection("frames", schema=frame_schema(MilvusClient, meta), index_params=index,
                                 consistency_level="Session")
        began = time.time()
        for start in tqdm(range(0, args.videos, 200), desc="write"):
            rows = []
            for i in range(start, min(args.videos, start + 200)):
                codes = rng.integers(0, 256, (args.frames, 9, 64), dtype=np.uint8)
                rows += frame_rows(f"video-{i:07d}", int(generations[i]), codes, meta)
            client.insert("frames", rows)
        client.flush("frames")
        written_s = time.time() - began
        time.sleep(args.settle_s)
        results["no scalar index (stores made before)"] = {
            k: timed_reads(client, "frames", generations, k, args.queries, rng) for k in args.k}
        client.release_collection("frames")
        index = client.prepare_index_params()
        for field_name, kind in SCALAR_INDEXES:
            index.add_index(field_name, index_type=kind, index_name=field_name)
        client.create_index("frames", index)
        client.load_collection("frames")
        results[" + ".join(f"{kind} on {field_name}" for field_name, kind in SCALAR_INDEXES) + " (new stores)"] = {
            k: timed_reads(client, "frames", generations, k, args.queries, rng) for k in args.k}
        client.close()
    lines = ["# Reading K videos' chunk rows: scalar indexes on the filter fields", "",
             f"Machine: {platform.machine()}, 2 cores; Milvus 2.3.5 isolated server (as `dnsvr serve` starts it); "
             f"{args.videos:,} videos of {args.frames} frames in the store's chunk-row schema, written in "
             f"{written_s:.0f} s; {args.queries} reads per cell, the query only (rows received, not decoded).  "
             "`python benchmarks/scalar_index_bench.py`.", "",
             "| frame collection | " + " | ".join(f"K = {k}: median (p95) ms" for k in args.k) + " |",
             "|---|" + "---:|" * len(args.k)]
    for label, cells in results.items():
        lines.append(f"| {label} | " + " | ".join(f"{median:.1f} ({p95:.1f})" for median, p95 in cells.values())
                     + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
