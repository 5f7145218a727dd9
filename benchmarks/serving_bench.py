"""Search latency through the real local Triton + Milvus Lite, per stage and end to end (median, p95).

The collection is grown to each `--sizes` with synthetic videos written straight into the store the service
uses (unit coarse vectors near a few cluster centres, random packed S^f_B codes of `--frames` frames), plus
the real sample videos indexed through the service.  Each size is then searched with every `--rerank`
fraction of `--candidates` coarse neighbours: `--queries` searches by indexed id (the stored embedding,
no CNN: the retrieval path) and `--video-queries` searches by a real video file (decode + CNN included).

    python benchmarks/serving_bench.py                         # 1k and 10k videos, fractions 0, 0.05, 0.2
    python benchmarks/serving_bench.py --repository model_repository --sizes 1000

Writes benchmarks/results/serving.md.  Numbers are for this machine (CPU only); the networks run in ONNX
Runtime inside python-backend models, as `dnsvr serve` runs them.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from dnsvr.client import VideoSearchClient
from dnsvr.export.manifest import model_version, read_manifest
from dnsvr.serving.local.service import LocalService
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.serving.store.schema import IndexedVideo
from dnsvr.training import paths
from dnsvr.training.networks.codes import pack_codes
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serving.md"
VIDEOS = paths.shared_videos_dir()
STAGES = ("embed", "coarse_search", "selector", "fetch_codes", "fine_similarity", "total", "round_trip")
INSERT_BATCH = 500
WARM_UP = 2


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def synthetic_videos(start: int, count: int, dim: int, frames: int, rng: np.random.Generator) -> list[IndexedVideo]:
    """Videos around 50 cluster centres (so coarse neighbours are meaningful), random codes, selector ~ U(0, 1)."""
    centres = np.random.default_rng(7).normal(size=(50, dim))
    coarse = centres[rng.integers(0, 50, count)] + 0.5 * rng.normal(size=(count, dim))
    coarse = (coarse / np.linalg.norm(coarse, axis=1, keepdims=True)).astype(np.float32)
    return [
        IndexedVideo(f"synthetic-{start + i:06d}", coarse[i], float(rng.uniform()),
                     pack_codes(rng.choice([-1.0, 1.0], size=(frames, 9, 512)).astype(np.float32)))
        for i in range(count)
    ]


def grow(store, target: int, frames: int, rng: np.random.Generator) -> None:
    have = store.count()
    dim = store.meta.coarse_dim
    with tqdm(total=target - have, desc=f"inserting to {target}", unit="video") as bar:
        while have < target:
            count = min(INSERT_BATCH, target - have)
            store.upsert_many(synthetic_videos(have, count, dim, frames, rng))
            have += count
            bar.update(count)


def measure(client: VideoSearchClient, queries: list, rerank: float, candidates: int, top_k: int) -> dict:
    """Search each query once, after WARM_UP untimed searches (one per dnsvr_search instance) -> timings."""
    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    reranked = []
    for index, query in enumerate([queries[0]] * WARM_UP + queries):
        kind, value = query
        result = client.search(value if kind == "video" else None, video_id=value if kind == "id" else None,
                               top_k=top_k, rerank=rerank, candidates=candidates)
        if index < WARM_UP:
            continue
        for stage in STAGES:
            timings[stage].append(result.timings_ms.get(stage, 0.0))
        reranked.append(sum(hit.reranked for hit in result))
    return {"timings": timings, "reranked_in_top": statistics.mean(reranked)}


def table_rows(size: int, kind: str, rerank: float, candidates: int, measured: dict) -> str:
    cells = [f"{size:,}", kind, f"{rerank:g}", f"{int(rerank * min(candidates, size))}"]
    for stage in STAGES:
        values = measured["timings"][stage]
        cells.append(f"{statistics.median(values):.1f} / {percentile(values, 95):.1f}")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="exported model repository (default: export the bundled "
                        "pack, else the golden checkpoints, into a temporary folder)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--rerank", type=float, nargs="+", default=[0.0, 0.05, 0.2])
    parser.add_argument("--candidates", type=int, default=1000, help="coarse candidates K' (default 1000)")
    parser.add_argument("--frames", type=int, default=30, help="frames per synthetic video (default 30)")
    parser.add_argument("--queries", type=int, default=20, help="searches by indexed id per setting")
    parser.add_argument("--video-queries", type=int, default=3, help="searches by video file per setting")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dnsvr-serving-bench-") as scratch:
        repository = args.repository or export_repository(Path(scratch) / "model_repository")
        service = LocalService(repository, store=Path(scratch) / "milvus.db", log_dir=Path(scratch))
        began = time.perf_counter()
        with service, VideoSearchClient(service.grpc_url, timeout_s=900) as client:
            print(f"service ready in {time.perf_counter() - began:.1f} s", flush=True)
            videos = sorted(VIDEOS.glob("*.mp4"))
            client.index_many([(path.stem, path) for path in videos])
            store = ServiceStore(repository, {"store_uri": service.store_uri}).get(create=False)
            rng = np.random.default_rng(0)
            rows = []
            for size in args.sizes:
                grow(store, size, args.frames, rng)
                ids = [f"synthetic-{i:06d}" for i in rng.choice(size - len(videos), args.queries, replace=False)]
                for rerank in args.rerank:
                    by_id = measure(client, [("id", i) for i in ids], rerank, args.candidates, args.top_k)
                    rows.append(table_rows(size, "id", rerank, args.candidates, by_id))
                    files = [("video", videos[i % len(videos)]) for i in range(args.video_queries)]
                    by_video = measure(client, files, rerank, args.candidates, args.top_k)
                    rows.append(table_rows(size, "video", rerank, args.candidates, by_video))
                    print(rows[-2], rows[-1], sep="\n", flush=True)
            store.close()
        manifest = read_manifest(repository)
        models = f"{manifest.get('source')} ({manifest.get('pack_version') or model_version(manifest)})"
    write_report(rows, args, models)


def export_repository(target: Path) -> Path:
    from dnsvr.export.repository import build_repository
    from dnsvr.export.weights import resolve_weights
    print("exporting the bundled pack ...", flush=True)
    build_repository(resolve_weights(["bundled"]), target)
    return target


def write_report(rows: list[str], args: argparse.Namespace, models: str) -> None:
    header = ["videos", "query", "rerank", "fine pairs", *[f"{stage} ms" for stage in STAGES]]
    lines = [
        "# Serving benchmark: search through the local Triton + Milvus Lite",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, CPU only; "
        f"`python benchmarks/serving_bench.py` ({time.strftime('%Y-%m-%d')}).",
        f"Collection: the 7 sample videos + synthetic videos of {args.frames} frames written into the store. "
        f"K' = {args.candidates} coarse candidates, top-{args.top_k}; the selector picks `rerank` x K' pairs for "
        f"the fine student. `id`: {args.queries} searches by indexed id (stored embedding, no CNN); `video`: "
        f"{args.video_queries} searches by a sample video file (decode + CNN at 1 fps included).",
        f"Networks: {models}; latency does not depend on the weights' values.",
        "Cells are median / p95 in milliseconds; stages as reported by dnsvr_search, `round_trip` by the client.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *rows,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
