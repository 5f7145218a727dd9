"""Large uploads: glibc's allocator kept from handing big buffers back (`dnsvr.client.allocator`), in the client
and in the server, measured side by side in one run.

Each round starts a fresh local service for each server setting (`kept`: ALLOCATOR_ENVIRONMENT, as `dnsvr serve`
sets it; `glibc`: the allocator's defaults), a Milvus Lite store of the sample videos, and measures it for each
client setting (`kept`: `VideoSearchClient`'s default, `tune_allocator=True`; `glibc`: `tune_allocator=False`)
from two fresh client processes, one after the other:

  * clip: `--queries` searches by a 30 s 1280x720 30 fps H.264 clip (`decode_bench.encode_clip`, a keyframe
    every second, 23.5 MB) after 2 untimed, top-10, no re-ranking: round trip and the server's embed stage;
    the client process's CPU and page faults per search;
  * upload: `--uploads` searches by N MB of bytes, for each of `--sizes` MB, that the search model refuses
    before any work (InvalidVideo: `candidates` out of range): the client's serialisation, gRPC, Triton and the
    python model's copy of the bytes - the cost of a file's size alone.

The order of the settings alternates from round to round.  Medians (p95) over every round.

    python benchmarks/upload_bench.py --rounds 2

Writes benchmarks/results/upload.md (`--out`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from unittest import mock

from decode_bench import encode_clip
from dnsvr.client import InvalidVideo, VideoSearchClient, allocator, spec
from dnsvr.serving.local.service import LocalService
from dnsvr.serving.local.triton_server import ALLOCATOR_ENVIRONMENT
from dnsvr.training import paths
from embed_bench import percentile
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "upload.md"
KEPT, GLIBC = "kept", "glibc"
WARM_UP = 2


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({percentile(values, 0.95):.1f})"


def client_work(url: str, clip: Path | None, tune: bool, sizes: list[float], uploads: int, queries: int
                ) -> dict[str, list[float]]:
    """In a fresh process: with `clip`, {"clip round trip" | "clip embed" | "clip client CPU" |
    "clip page faults": [per search]}; without, {"upload N MB": [ms]}."""
    measured: dict[str, list[float]] = {}
    with VideoSearchClient(url, timeout_s=600, tune_allocator=tune) as client:
        if clip is None:
            for size in sizes:
                measured[f"upload {size:g} MB"] = refused_uploads(client, bytes(round(size * 1e6)), uploads)
            return measured
        data = clip.read_bytes()
        for key in ("clip round trip", "clip embed", "clip client CPU", "clip page faults"):
            measured[key] = []
        for index in range(WARM_UP + queries):
            began, cpu = time.perf_counter(), time.process_time()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            result = client.search(data, top_k=10, rerank=0.0)
            if index >= WARM_UP:
                measured["clip round trip"].append(1000 * (time.perf_counter() - began))
                measured["clip client CPU"].append(1000 * (time.process_time() - cpu))
                measured["clip page faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
                measured["clip embed"].append(result.timings_ms["embed"])
    return measured


def refused_uploads(client: VideoSearchClient, payload: bytes, uploads: int) -> list[float]:
    """ms of each of `uploads` searches by `payload` (after WARM_UP) that the search model refuses at once."""
    times = []
    for index in range(WARM_UP + uploads):
        began = time.perf_counter()
        try:
            client.search(payload, top_k=10, candidates=spec.MAX_CANDIDATES + 1)
        except InvalidVideo:
            pass
        else:
            raise AssertionError("candidates out of range were accepted")
        if index >= WARM_UP:
            times.append(1000 * (time.perf_counter() - began))
    return times


def measure_service(repository: Path, scratch: Path, server: str, clients: list[str], clip: Path,
                    args: argparse.Namespace) -> dict[tuple[str, str], dict[str, list[float]]]:
    """A fresh service under the `server` allocator setting, measured by fresh processes per client setting
    (one searching by the clip, then one uploading)."""
    results = {}
    with mock.patch.dict(ALLOCATOR_ENVIRONMENT, clear=server == GLIBC), \
            LocalService(repository, store=scratch / f"store-{server}.db", log_dir=scratch) as service:
        with VideoSearchClient(service.grpc_url, timeout_s=600) as client:
            client.index_many([(path.stem, path) for path in sorted(paths.shared_videos_dir().glob("*.mp4"))])
        for setting in clients:
            results[server, setting] = {}
            for work_clip in (clip, None):  # the clip's searches, then the uploads, each from a fresh process
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    results[server, setting] |= pool.submit(client_work, service.grpc_url, work_clip,
                                                            setting == KEPT, args.sizes, args.uploads,
                                                            args.queries).result()
            median = statistics.median(results[server, setting]["clip round trip"])
            print(f"  server {server}, client {setting}: clip round trip {median:.0f} ms", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository",
                        help="model repository (default: model_repository, exported from the bundled pack when "
                             "empty, as `dnsvr serve` does)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every setting (default 2)")
    parser.add_argument("--sizes", type=float, nargs="+", default=[1.0, 8.0, 23.5],
                        help="MB of the non-video uploads (default 1 8 23.5)")
    parser.add_argument("--uploads", type=int, default=10, help="timed uploads per size and setting (default 10)")
    parser.add_argument("--queries", type=int, default=8, help="timed clip searches per setting (default 8)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    args = parser.parse_args()
    if allocator.operator_settings():
        parser.error("unset MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ and glibc.malloc tunables first: "
                     "they would override both settings")

    measured: dict[tuple[str, str], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="dnsvr-upload-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        clip = scratch / "clip.mp4"
        clip.write_bytes(encode_clip(30, 30, 30))
        for round_index in tqdm(range(args.rounds), desc="rounds"):
            order = [KEPT, GLIBC] if round_index % 2 == 0 else [GLIBC, KEPT]  # of the servers and of the clients
            for server in order:
                print(f"round {round_index + 1}: server {server}", flush=True)
                for key, values in measure_service(args.repository, scratch, server, order, clip, args).items():
                    for name, series in values.items():
                        measured.setdefault(key, {}).setdefault(name, []).extend(series)
        clip_mb = clip.stat().st_size / 1e6

    write_report(args, measured, clip_mb)


def write_report(args: argparse.Namespace, measured: dict[tuple[str, str], dict[str, list[float]]],
                 clip_mb: float) -> None:
    names = list(next(iter(measured.values())))
    settings = [(KEPT, KEPT), (KEPT, GLIBC), (GLIBC, KEPT), (GLIBC, GLIBC)]
    lines = [
        "# Large uploads: glibc's allocator kept from handing big buffers back, client and server",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; `python benchmarks/upload_bench.py --rounds "
        f"{args.rounds} --uploads {args.uploads} --queries {args.queries}` ({time.strftime('%Y-%m-%d')}).  "
        "`kept`: MALLOC_MMAP_THRESHOLD_ = 32 MiB, MALLOC_TRIM_THRESHOLD_ = 128 MiB (server: "
        "ALLOCATOR_ENVIRONMENT, as `dnsvr serve` sets it; client: `tune_allocator=True`, the default); `glibc`: "
        "the allocator's defaults.  A fresh local service (Milvus Lite, the sample videos) per server setting and "
        "round, two fresh client processes per client setting (the clip's searches, then the uploads).  "
        "`upload N MB`: a search by N MB that the search model refuses before any work (`candidates` out of "
        f"range); `clip`: searches by a 30 s 1280x720 H.264 clip ({clip_mb:.1f} MB), top-10, no re-ranking.  "
        "Median (p95) over every round, ms (page faults: count).",
        "",
        "| measure | " + " | ".join(f"server {s}, client {c}" for s, c in settings) + " | all glibc / all kept |",
        "|---|" + "---:|" * (len(settings) + 1),
    ]
    for name in names:
        cells = [cell(measured[setting][name]) for setting in settings]
        kept = statistics.median(measured[KEPT, KEPT][name])
        ratio = f"{statistics.median(measured[GLIBC, GLIBC][name]) / kept:.2f}x" if kept else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
