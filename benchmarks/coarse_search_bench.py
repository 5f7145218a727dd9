"""Coarse search on the Milvus engines that run here: start time, insert rate, latency at K' and recall@100.

A collection shaped like the store's per-video one (video_id pk, a 1024-d unit coarse vector, selector,
generation, frame_count, metadata JSON) is filled with `--videos` clustered vectors on each engine and index,
then searched by `--queries` perturbed copies of stored vectors:

    isolated `milvus-server` (Milvus 2.3.5 standalone from the `milvus` wheel) in a network namespace of its
             own, reached through its Unix socket relay: what `dnsvr serve` starts by default
    server   the same server on 127.0.0.1 TCP (`--no-isolation`, or a server reached by URI)
    lite     `milvus-lite server` (Milvus Lite 3.2.2: `dnsvr serve --store PATH.db`)

Latency is per search, one query, Session consistency, as dnsvr_search asks: top-10 without output fields,
top-K' with the fields the DnS ranking reads, and top-K' under a metadata filter.  Recall@100 is against
an exact inner-product scan in numpy of the same vectors (the top 100 of a top-K' search).

    python benchmarks/coarse_search_bench.py      # 10k videos: isolated HNSW/FLAT, server HNSW, lite HNSW
    python benchmarks/coarse_search_bench.py --videos 100000 --configs server:HNSW

Writes benchmarks/results/coarse_search.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from dnsvr.serving.local.milvus_servers import MilvusLiteServer, MilvusStandaloneServer
from tqdm import tqdm

RESULTS = Path(__file__).resolve().parent / "results" / "coarse_search.md"
SERVERS = {"isolated": partial(MilvusStandaloneServer, isolated=True), "server": MilvusStandaloneServer,
           "lite": MilvusLiteServer}
INDEX_PARAMS = {"HNSW": {"M": 16, "efConstruction": 200}, "IVF_FLAT": {"nlist": 128}, "FLAT": {}}
DIM = 1024
BATCH = 2_000
FIELDS = ["video_id", "selector", "generation", "frame_count"]


def clustered_unit_vectors(count: int, rng: np.random.Generator) -> np.ndarray:
    """[count, DIM] float32 unit vectors around 50 centres (neighbours are meaningful, as in a real corpus)."""
    centres = rng.normal(size=(50, DIM))
    vectors = centres[rng.integers(0, 50, count)] + 0.5 * rng.normal(size=(count, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def search_params(index: str, k: int) -> dict:
    params = {"HNSW": {"ef": max(k, 64)}, "IVF_FLAT": {"nprobe": 32}}.get(index, {})
    return {"metric_type": "IP", "params": params}


def measure(engine: str, index: str, vectors: np.ndarray, queries: np.ndarray, candidates: int) -> dict:
    """Fill one fresh engine, then time its searches -> the row's numbers."""
    from pymilvus import DataType, MilvusClient

    with tempfile.TemporaryDirectory(prefix="dnsvr-coarse-bench-") as scratch:
        began = time.perf_counter()
        server = SERVERS[engine](Path(scratch) / "data").start()
        try:
            started = time.perf_counter() - began
            client = MilvusClient(uri=server.uri)
            schema = client.create_schema(auto_id=False)
            schema.add_field("video_id", DataType.VARCHAR, is_primary=True, max_length=256)
            schema.add_field("coarse", DataType.FLOAT_VECTOR, dim=DIM)
            for name, kind in (("selector", DataType.FLOAT), ("generation", DataType.INT64),
                               ("frame_count", DataType.INT64), ("metadata", DataType.JSON)):
                schema.add_field(name, kind)
            index_params = client.prepare_index_params()
            index_params.add_index("coarse", index_type=index, metric_type="IP", params=INDEX_PARAMS[index])
            client.create_collection("videos", schema=schema, index_params=index_params, consistency_level="Session")
            began = time.perf_counter()
            for start in tqdm(range(0, len(vectors), BATCH), desc=f"{engine} {index} insert", unit="batch"):
                client.insert("videos", [{"video_id": f"v{i:07d}", "coarse": vectors[i].tolist(), "selector": 0.5,
                                          "generation": i, "frame_count": 60, "metadata": {"channel": i % 7}}
                                         for i in range(start, min(len(vectors), start + BATCH))])
                client.flush("videos")
            insert_rate = len(vectors) / (time.perf_counter() - began)
            client.load_collection("videos")

            def timed(k: int, fields: list[str], expression: str = "") -> tuple[list[float], list]:
                times, results = [], []
                for query in queries:
                    t0 = time.perf_counter()
                    results.append(client.search("videos", data=[query.tolist()], limit=k, anns_field="coarse",
                                                 search_params=search_params(index, k), output_fields=fields,
                                                 filter=expression, consistency_level="Session")[0])
                    times.append((time.perf_counter() - t0) * 1000)
                return times, results

            timed(10, [])  # warm-up: loads the segments
            top10, _ = timed(10, [])
            top_k, hits = timed(candidates, FIELDS)
            filtered, _ = timed(candidates, FIELDS, 'metadata["channel"] == 3')
            exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :100]
            recall = statistics.mean(
                len({hit["entity"]["video_id"] for hit in result[:100]} & {f"v{i:07d}" for i in wanted}) / 100
                for result, wanted in zip(hits, exact, strict=True))
            client.close()
        finally:
            server.stop()
    return {"start_s": started, "insert_per_s": insert_rate, "top10": top10, "top_k": top_k, "filtered": filtered,
            "recall": recall}


def cell(times: list[float]) -> str:
    return f"{statistics.median(times):.1f} / {float(np.percentile(times, 95)):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--configs", nargs="+",
                        default=["isolated:HNSW", "isolated:FLAT", "server:HNSW", "lite:HNSW"],
                        help="engine:index pairs (engines: isolated, server, lite; indexes: HNSW, IVF_FLAT, FLAT)")
    parser.add_argument("--candidates", type=int, default=1000, help="K', the coarse candidates of a DnS search")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    vectors = clustered_unit_vectors(args.videos, rng)
    picked = vectors[rng.choice(args.videos, args.queries, replace=False)]
    queries = picked + 0.05 * rng.normal(size=picked.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rows = []
    for config in args.configs:
        engine, index = config.split(":")
        found = measure(engine, index, vectors, queries, args.candidates)
        rows.append(f"| {engine} | {index} | {found['start_s']:.1f} | {found['insert_per_s']:,.0f} | "
                    f"{cell(found['top10'])} | {cell(found['top_k'])} | {cell(found['filtered'])} | "
                    f"{found['recall']:.3f} |")
        print(rows[-1], flush=True)
    lines = [
        f"# Coarse search: {args.videos:,} videos x {DIM}-d, K' = {args.candidates}",
        "",
        f"Machine: {platform.machine()}, CPU only; `python benchmarks/coarse_search_bench.py` "
        f"({time.strftime('%Y-%m-%d')}).  One query per search, Session consistency, {args.queries} queries; "
        "latency median / p95 in ms; recall@100 of the top-K' search against an exact scan.",
        "",
        f"| engine | index | start s | inserts/s | top-10 ms | top-{args.candidates} + fields ms | "
        f"top-{args.candidates} + filter ms | recall@100 |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
