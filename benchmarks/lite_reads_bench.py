"""Milvus Lite 3.2.2 scalar reads: could an in-process coarse index beside Lite be kept in sync cheaply?

An in-process exact or HNSW index (faiss) of the coarse vectors would make the embedded default's top-K'
search ~1 ms, if it could be filled and kept current from the store of record.  This measures the reads such a
mirror needs on a Lite collection shaped like the per-video one (video_id pk, 1024-d vector, generation,
indexed_at), after a flush, one client, median of a few calls:

    poll none / poll 10     `indexed_at > X` matching 0 / 10 rows (what changed since the last look?)
    in 10 / in 1000         `video_id in [...]` with 10 / 1000 ids (validate a window of candidates)
    scan id,generation      every row's id and generation (the initial fill, without the vectors)
    count                   count(*)

    python benchmarks/lite_reads_bench.py                 # 10k rows
    python benchmarks/lite_reads_bench.py --videos 2000

Writes benchmarks/results/lite_reads.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from dnsvr.serving.local.milvus_servers import MilvusLiteServer

RESULTS = Path(__file__).resolve().parent / "results" / "lite_reads.md"
DIM = 1024
BATCH = 2_000


def median_ms(call: Callable[[], list], repeats: int) -> tuple[float, int]:
    """(median ms over `repeats` calls after one warm-up, rows returned)."""
    rows = len(call())
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times), rows


def run(videos: int, repeats: int) -> list[tuple[str, float, int]]:
    from pymilvus import DataType, MilvusClient

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="dnsvr-lite-reads-") as scratch:
        server = MilvusLiteServer(Path(scratch) / "data").start()
        try:
            client = MilvusClient(uri=server.uri)
            schema = client.create_schema(auto_id=False)
            schema.add_field("video_id", DataType.VARCHAR, max_length=256, is_primary=True)
            schema.add_field("coarse", DataType.FLOAT_VECTOR, dim=DIM)
            schema.add_field("generation", DataType.INT64)
            schema.add_field("indexed_at", DataType.INT64)
            index = client.prepare_index_params()
            index.add_index("coarse", index_type="HNSW", metric_type="IP", params={"M": 16, "efConstruction": 200})
            client.create_collection("videos", schema=schema, index_params=index)
            vectors = rng.normal(size=(videos, DIM)).astype(np.float32)
            for start in range(0, videos, BATCH):
                client.insert("videos", [{"video_id": f"v{i}", "coarse": vectors[i].tolist(), "generation": i,
                                          "indexed_at": i} for i in range(start, min(videos, start + BATCH))])
            client.flush("videos")
            fields = ["video_id", "generation"]

            def query(expression: str, limit: int | None = None) -> Callable[[], list]:
                extra = {"limit": limit} if limit else {}
                return lambda: client.query("videos", filter=expression, output_fields=fields, **extra)

            few = [f"v{i}" for i in range(0, videos, max(1, videos // 10))][:10]
            many = [f"v{i}" for i in range(0, videos, max(1, videos // 1000))][:1000]
            calls = [
                ("poll none", query(f"indexed_at > {videos}")),
                ("poll 10", query(f"indexed_at > {videos - 11}")),
                ("in 10", query(f"video_id in {few}")),
                ("in 1000", query(f"video_id in {many}")),
                ("scan id,generation", query("generation >= 0", limit=16_384)),
                ("count", lambda: client.query("videos", filter="", output_fields=["count(*)"])),
            ]
            return [(name, *median_ms(call, repeats if "scan" not in name else 1)) for name, call in calls]
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=10_000, help="rows in the collection (default 10,000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per read (default 3)")
    args = parser.parse_args()
    rows = run(args.videos, args.repeats)
    lines = [f"# Milvus Lite 3.2.2 scalar reads, {args.videos:,} rows ({platform.processor() or platform.machine()}, "
             f"median of {args.repeats})", "", "| read | ms | rows |", "|---|---:|---:|"]
    lines += [f"| {name} | {ms:.1f} | {count} |" for name, ms, count in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
