"""Search latency through the real local Triton + Milvus, per stage and end to end (median, p95).

The collection is grown to each `--sizes` with synthetic videos written straight into the store the service
uses (unit coarse vectors near a few cluster centres, random packed S^f_B codes of `--frames` frames), plus
the real sample videos indexed through the service.  Each size is then searched with every `--rerank`
fraction of `--candidates` coarse neighbours: `--queries` searches by indexed id (the stored embedding,
no CNN: the retrieval path), `--video-queries` searches by a real video file (decode + CNN included) and
`--clip-queries` searches by a synthetic 30 s 720p clip (the issue's query-by-file case).

    python benchmarks/serving_bench.py                         # 1k and 10k videos, fractions 0, 0.05, 0.2
    python benchmarks/serving_bench.py --repository model_repository --sizes 1000 --backends server

Backends (`--backends`): `isolated` is what `dnsvr serve` starts by default (the Milvus 2.3.5 server of the
`milvus` wheel in a network namespace of its own, reached through a Unix socket relay); `server` is the same
server started here on 127.0.0.1 and given to the service as a server URI (as a remote deployment is reached:
side by side with `isolated`, it shows what the namespace and its relay cost); both with the frame layout of
`--server-layout`.  `lite` is Milvus Lite (`dnsvr serve --store PATH.db`, chunk layout).  After the
timed searches of each size, `--clients` threads search by id at once (rerank 0.05): searches/s and errors.

Server settings side by side (`--server-env`, `--rounds`): the Milvus server reads its settings from
environment variables over its configuration file (`DATACOORD_SEGMENT_MAXSIZE` for dataCoord.segment.maxSize),
so each `--server-env NAME:KEY=VALUE,...` measures the server backends once more with those variables set,
alternating with the settings `dnsvr serve` ships, `--rounds` times (every other round in the reverse order, so
that no setting always runs first), each run on a fresh store:

    python benchmarks/serving_bench.py --backends isolated --sizes 10000 --rounds 3 --settle-s 150 \
        --server-env 512mb:DATACOORD_SEGMENT_MAXSIZE=512,QUERYNODE_SEGCORE_INTERIMINDEX_ENABLEINDEX=true

Writes benchmarks/results/serving.md.  Numbers are for this machine (CPU only); the networks run in ONNX
Runtime inside python-backend models, as `dnsvr serve` runs them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
from decode_bench import encode_clip
from dnsvr.client import NotFound, VideoSearchClient
from dnsvr.export.manifest import model_version, read_manifest
from dnsvr.serving.local.milvus_servers import MilvusStandaloneServer
from dnsvr.serving.local.service import LocalService
from dnsvr.serving.pipelines.store_access import ServiceStore
from dnsvr.serving.store.schema import IndexedVideo
from dnsvr.training import paths
from dnsvr.training.networks.codes import pack_codes
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serving.md"
VIDEOS = paths.shared_videos_dir()
STAGES = ("embed", "coarse_search", "selector", "fetch_codes", "fine_similarity", "localisation", "total", "round_trip")
INSERT_BATCH = 500
WARM_UP = 2
BACKENDS = ("isolated", "server", "lite")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def unit_rows(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """[count, dim] float32 unit vectors around 50 cluster centres (so neighbours are meaningful)."""
    centres = np.random.default_rng(7).normal(size=(50, dim))
    vectors = centres[rng.integers(0, 50, count)] + 0.5 * rng.normal(size=(count, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


VIEW_COSINE = 0.96  # the sample videos' crop views to their full frame, on average (crop_view_cosine.py)
SEGMENT_COSINE = 0.99  # the benchmark videos' frame windows (0.25) to their full frame, on average (0.988-0.991)


def view_cosine_arg(text: str) -> float | None:
    """--view-cosine: a cosine, or 'none' (crop views independent of the full frame)."""
    return None if text.lower() == "none" else float(text)


def near(coarse: np.ndarray, count: int, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """`count` unit vectors per row of `coarse` `[N, D]`, each at `cosine` to its row in a random direction ->
    `[N, count, D]` float32."""
    noise = rng.normal(size=(len(coarse), count, coarse.shape[1]))  # [N, V, D]
    noise -= np.einsum("nvd,nd->nv", noise, coarse)[..., None] * coarse[:, None]  # orthogonal to the frame
    noise /= np.linalg.norm(noise, axis=-1, keepdims=True)
    return (cosine * coarse[:, None] + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


def synthetic_videos(start: int, count: int, dim: int, frames: int, rng: np.random.Generator,
                     text_dim: int = 0, views: int = 0, view_cosine: float | None = VIEW_COSINE,
                     view_codes: bool = False, segments: int = 0) -> list[IndexedVideo]:
    """Clustered coarse vectors, random codes, selector ~ U(0, 1), a clustered text-video vector when the store
    holds them (`text_dim` > 0: a pack with a text-video student), and `views` crop-view vectors (a pack with
    crop views), each at cosine `view_cosine` to its video's full frame in a random direction, as real crop views
    are, or (None) clustered and independent of it (the worst case for the crop-view search: most of the K' come
    in by a crop), with random fine codes of each view where `view_codes` (an export with `--view-codes`), and
    `segments` frame-window vectors (a pack with segment views) at cosine SEGMENT_COSINE to the full frame."""
    coarse = unit_rows(count, dim, rng)
    text = unit_rows(count, text_dim, rng) if text_dim else [None] * count
    if not views:
        crops = [None] * count
    elif view_cosine is None:
        crops = unit_rows(count * views, dim, rng).reshape(count, views, dim)
    else:
        crops = near(coarse, views, view_cosine, rng)
    windows = near(coarse, segments, SEGMENT_COSINE, rng) if segments else [None] * count
    return [
        IndexedVideo(f"synthetic-{start + i:06d}", coarse[i], float(rng.uniform()),
                     pack_codes(rng.choice([-1.0, 1.0], size=(frames, 9, 512)).astype(np.float32)), text=text[i],
                     views=crops[i],
                     view_codes=rng.integers(0, 256, size=(views, frames, 9, 64), dtype=np.uint8)
                     if views and view_codes else None, segments=windows[i])
        for i in range(count)
    ]


def grow(store, target: int, frames: int, rng: np.random.Generator, view_cosine: float | None = VIEW_COSINE,
         pace_every: int = 0) -> None:
    """Insert synthetic videos until the store holds `target`; with `pace_every`, wait after each that many for
    the server to index what was written (`settle`), so that fewer segments are sealed and indexed at once."""
    have = store.count()
    dim = store.meta.coarse_dim
    with tqdm(total=target - have, desc=f"inserting to {target}", unit="video") as bar:
        while have < target:
            count = min(INSERT_BATCH, target - have)
            store.upsert_many(synthetic_videos(have, count, dim, frames, rng, store.meta.text_dim, store.meta.views,
                                               view_cosine, store.meta.has_view_codes, store.meta.segments))
            if pace_every and (have + count) // pace_every > have // pace_every:
                settle(store, 0)
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


def visible(client: VideoSearchClient, ids: list[str], timeout_s: float = 60.0) -> None:
    """Wait until the service sees the videos this process wrote (a server's Session consistency covers only
    the writer's own session; other processes see the rows within its time tick)."""
    deadline = time.monotonic() + timeout_s
    for video_id in ids:
        while True:
            try:
                client.search(video_id=video_id, top_k=1, rerank=0)
                break
            except NotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def concurrent_searches(client: VideoSearchClient, ids: list[str], clients: int, per_client: int, rerank: float,
                        candidates: int, top_k: int) -> tuple[float, int]:
    """`clients` threads, each `per_client` searches by id at once -> (searches per second, errors)."""
    errors: list[Exception] = []

    def work(offset: int) -> None:
        for i in range(per_client):
            try:
                client.search(video_id=ids[(offset + i) % len(ids)], top_k=top_k, rerank=rerank, candidates=candidates)
            except Exception as error:  # counted and reported, the run goes on
                errors.append(error)

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, [c * per_client for c in range(clients)]))
    return clients * per_client / (time.perf_counter() - began), len(errors)


def table_rows(backend: str, size: int, kind: str, rerank: float, candidates: int, measured: dict) -> str:
    cells = [backend, f"{size:,}", kind, f"{rerank:g}", f"{int(rerank * min(candidates, size))}"]
    for stage in STAGES:
        values = measured["timings"][stage]
        cells.append(f"{statistics.median(values):.1f} / {percentile(values, 95):.1f}")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="exported model repository (default: export the bundled "
                        "pack, else the golden checkpoints, into a temporary folder)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--server-layout", choices=("auto", "vector", "chunk"), default="auto",
                        help="frame layout of the server backends' stores (auto: a row per frame over TCP, "
                        "chunk rows behind the isolated engine's Unix socket)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--rerank", type=float, nargs="+", default=[0.0, 0.05, 0.2])
    parser.add_argument("--candidates", type=int, default=1000, help="coarse candidates K' (default 1000)")
    parser.add_argument("--frames", type=int, default=60, help="frames per synthetic video (default 60)")
    parser.add_argument("--queries", type=int, default=60,
                        help="searches by indexed id per setting (default 60; with 20, medians moved ~5 ms run to run)")
    parser.add_argument("--video-queries", type=int, default=3, help="searches by video file per setting")
    parser.add_argument("--clip-queries", type=int, default=3,
                        help="searches by a synthetic 720p H.264 clip of --clip-seconds per setting (default 3)")
    parser.add_argument("--clip-seconds", type=int, default=30, help="length of that clip (default 30)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the throughput run (0: no "
                        "throughput run)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--view-cosine", type=view_cosine_arg, default=VIEW_COSINE,
                        help="with a pack that indexes crop views: the synthetic videos' crop views' cosine to their "
                             f"full frame (default {VIEW_COSINE}, what real crop views show); 'none': clustered and "
                             "independent of it, the worst case for the crop-view search")
    parser.add_argument("--settle-s", type=float, default=30.0,
                        help="seconds to wait after the server has indexed the rows written, before measuring "
                             "(its compactions; default 30; at 100k use 240: after 30 s the server's background "
                             "work still shares the cores, and the re-ranked searches took 1.3-2x longer)")
    parser.add_argument("--pace-every", type=int, default=0,
                        help="while filling, wait after every this many videos until the server has indexed them "
                             "(default 0: never; a fast fill to 100k with crop views peaked at 20.7 GiB of server "
                             "memory, sealing and indexing many segments at once)")
    parser.add_argument("--server-env", type=server_env_arg, action="append", default=[],
                        metavar="NAME:KEY=VALUE,...",
                        help="measure the server backends once more with these environment variables (Milvus "
                             "settings, e.g. 512mb:DATACOORD_SEGMENT_MAXSIZE=512); repeat for more variants")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every backend and variant this many times, alternating (every other round "
                             "in the reverse order), each on a fresh store; the report adds the median over rounds "
                             "of each p50")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    args = parser.parse_args()

    rows: list[str] = []
    throughput: list[str] = []
    medians: dict[str, dict[tuple[int, float], list[float]]] = {}  # setting -> (size, rerank) -> p50 by id, per round
    variants = [("shipped", {}), *args.server_env]
    with tempfile.TemporaryDirectory(prefix="dnsvr-serving-bench-") as scratch:
        repository = args.repository or export_repository(Path(scratch) / "model_repository")
        for round_ in range(1, args.rounds + 1):
            # every other round in the reverse order (A B, B A, ...), so that no setting always runs first
            runs = [(variant, backend) for variant in variants for backend in args.backends]
            for (name, variables), backend in runs if round_ % 2 else runs[::-1]:
                if variables and backend == "lite":
                    continue  # Milvus Lite has no server settings
                setting = backend + (f" ({name})" if len(variants) > 1 else "")
                label = setting + (f", round {round_}" if args.rounds > 1 else "")
                with mock.patch.dict(os.environ, variables):  # the Milvus server it starts inherits them
                    run_backend(backend, label, repository, Path(scratch) / f"{backend}-{name}-{round_}", args,
                                rows, throughput, medians.setdefault(setting, {}))
        manifest = read_manifest(repository)
        models = f"{manifest.get('source')} ({manifest.get('pack_version') or model_version(manifest)})"
    write_report(rows, throughput, args, models, medians)


def server_setting(text: str) -> tuple[str, str]:
    """`KEY=VALUE` -> (KEY, VALUE), for a server setting (--server-env here, --server-config in store_memory_bench)."""
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def server_env_arg(text: str) -> tuple[str, dict[str, str]]:
    """--server-env NAME:KEY=VALUE,KEY=VALUE -> (NAME, {KEY: VALUE})."""
    name, sep, assignments = text.partition(":")
    items = [item for item in assignments.split(",") if item]
    if not sep or not name or not items:
        raise argparse.ArgumentTypeError(f"expected NAME:KEY=VALUE[,KEY=VALUE...], got {text!r}")
    return name, dict(server_setting(item) for item in items)


def run_backend(backend: str, label: str, repository: Path, scratch: Path, args: argparse.Namespace,
                rows: list[str], throughput: list[str], medians: dict[tuple[int, float], list[float]]) -> None:
    """Start the service on `backend`, grow its store through args.sizes and measure; rows (named `label`) are
    appended, and each by-id setting's round-trip p50 to medians[(size, rerank)]."""
    scratch.mkdir(parents=True)
    server = MilvusStandaloneServer(scratch / "milvus-server").start() if backend == "server" else None
    env = {}
    if backend != "lite":
        config = scratch / "store.toml"
        config.write_text(f'[store]\nlayout = "{args.server_layout}"\n')
        env[paths.CONFIG] = str(config)
    try:
        store_path = {"isolated": scratch / "milvus-server", "server": server and server.uri,
                      "lite": scratch / "milvus.db"}[backend]
        service = LocalService(repository, store=store_path, log_dir=scratch, env=env)
        began = time.perf_counter()
        with service, VideoSearchClient(service.grpc_url, timeout_s=900) as client:
            print(f"{label}: service ready in {time.perf_counter() - began:.1f} s", flush=True)
            videos = sorted(VIDEOS.glob("*.mp4"))
            clip = scratch / "clip.mp4"
            if args.clip_queries:
                clip.write_bytes(encode_clip(args.clip_seconds, 30, 30))
            client.index_many([(path.stem, path) for path in videos])
            store = ServiceStore(repository, {"store_uri": service.store_uri}).get(create=False)
            rng = np.random.default_rng(0)
            for size in args.sizes:
                grow(store, size, args.frames, rng, args.view_cosine, args.pace_every)
                settle(store, args.settle_s)
                synthetic = np.arange(len(videos), size)  # grow() numbers them after the sample videos
                ids = [f"synthetic-{i:06d}" for i in rng.choice(synthetic, args.queries, replace=False)]
                visible(client, ids)
                for rerank in args.rerank:  # by id first: file queries' decoding bursts do not precede them
                    by_id = measure(client, [("id", i) for i in ids], rerank, args.candidates, args.top_k)
                    rows.append(table_rows(label, size, "id", rerank, args.candidates, by_id))
                    medians.setdefault((size, rerank), []).append(
                        statistics.median(by_id["timings"]["round_trip"]))
                    print(rows[-1], flush=True)
                for rerank in args.rerank:
                    by_file = [("video", [("video", videos[i % len(videos)]) for i in range(args.video_queries)]),
                               (f"clip {args.clip_seconds} s", [("video", clip)] * args.clip_queries)]
                    for kind, queries in by_file:
                        if queries:
                            timed = measure(client, queries, rerank, args.candidates, args.top_k)
                            rows.append(table_rows(label, size, kind, rerank, args.candidates, timed))
                            print(rows[-1], flush=True)
                if args.clients:
                    rate, errors = concurrent_searches(client, ids, args.clients, 10, 0.05, args.candidates,
                                                       args.top_k)
                    throughput.append(f"| {label} | {size:,} | {args.clients} | {rate:.1f} | {errors} |")
                    print(throughput[-1], flush=True)
            store.close()
    finally:
        if server is not None:
            server.stop()


def settle(store, quiet_s: float, timeout_s: float = 3600.0) -> None:
    """Wait until the server has indexed every row written (its background index builds after a large insert
    compete with the searches for the cores), then `quiet_s` more for its compactions."""
    deadline = time.monotonic() + timeout_s
    while (pending := store.pending_index_rows()) and time.monotonic() < deadline:
        print(f"waiting for the server to index {pending:,} rows ...", flush=True)
        time.sleep(5)
    time.sleep(quiet_s)


def export_repository(target: Path) -> Path:
    from dnsvr.export.repository import build_repository
    from dnsvr.export.weights import resolve_weights
    print("exporting the bundled pack ...", flush=True)
    build_repository(resolve_weights(["bundled"]), target)
    return target


def rounds_table(medians: dict[str, dict[tuple[int, float], list[float]]]) -> list[str]:
    """Markdown rows: per setting, size and rerank fraction, the median over rounds of the round-trip p50 of the
    searches by id, with its lowest and highest round."""
    lines = ["| backend (settings) | videos | rerank | p50 over rounds, ms | lowest | highest | rounds |",
             "|---|---|---|---:|---:|---:|---:|"]
    for setting, by_key in medians.items():
        for (size, rerank), values in by_key.items():
            lines.append(f"| {setting} | {size:,} | {rerank:g} | {statistics.median(values):.1f} | "
                         f"{min(values):.1f} | {max(values):.1f} | {len(values)} |")
    return lines


def write_report(rows: list[str], throughput: list[str], args: argparse.Namespace, models: str,
                 medians: dict[str, dict[tuple[int, float], list[float]]]) -> None:
    header = ["backend", "videos", "query", "rerank", "fine pairs", *[f"{stage} ms" for stage in STAGES]]
    lines = [
        "# Serving benchmark: search through the local Triton + Milvus",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, CPU only; "
        f"`python benchmarks/serving_bench.py` ({time.strftime('%Y-%m-%d')}).  Backends: `isolated` = Milvus "
        f"2.3.5 standalone in its own network namespace behind a Unix socket relay (what `dnsvr serve` starts), "
        f"`server` = the same server on 127.0.0.1 TCP (layout {args.server_layout} for both), `lite` = Milvus "
        "Lite 3.2.2 (`dnsvr serve --store PATH.db`).",
        f"Collection: the 7 sample videos + synthetic videos of {args.frames} frames written into the store. "
        f"K' = {args.candidates} coarse candidates, top-{args.top_k}; the selector picks `rerank` x K' pairs for "
        f"the fine student. `id`: {args.queries} searches by indexed id (stored embedding, no CNN); `video`: "
        f"{args.video_queries} searches by a sample video file (decode + CNN at 1 fps included); `clip`: "
        f"{args.clip_queries} searches by a {args.clip_seconds} s 1280x720 30 fps H.264 clip with a keyframe "
        "every second (`decode_bench.encode_clip`).  With a pack that indexes crop views, each synthetic "
        "video's crop views " + ("are clustered and independent of its full frame." if args.view_cosine is None else
           f"are at cosine {args.view_cosine:g} to its full frame."),
        f"Filled {INSERT_BATCH} videos a write" + (f", waiting after every {args.pace_every:,} for the server to "
                                                   "index them" if args.pace_every else "")
        + f"; measured {args.settle_s:g} s after the server had indexed every row.",
        f"Networks: {models}; latency does not depend on the weights' values.",
        "Cells are median / p95 in milliseconds; stages as reported by dnsvr_search, `round_trip` by the client.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *rows,
        "",
        *([f"{args.clients} clients at once, 10 searches by id each (rerank 0.05):", "",
           "| backend | videos | clients | searches/s | errors |", "|---|---|---|---|---|", *throughput, ""]
          if args.clients else []),
    ]
    if args.server_env or args.rounds > 1:
        variables = "; ".join(f"`{name}`: " + " ".join(f"{key}={value}" for key, value in env.items())
                              for name, env in args.server_env)
        lines += [f"Settings side by side, {args.rounds} round(s), alternating" +
                  (f" (`shipped`: what `dnsvr serve` starts; {variables})" if variables else "") +
                  ": searches by id, round trip.", "", *rounds_table(medians), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
