"""A query by video file through the local Triton: decoding and the extractor one after the other vs side by side.

`dnsvr_embed` starts with `video_features`, which decodes the file on a thread of its own and sends the frames
already decoded to the extractor `chunk_frames` at a time, so that on 2 cores the decoder and the extractor each
keep one busy.  This starts the service twice on the same exported repository, side by side in one run:

    sequential    chunk_frames 1200 (the maximum frames): one extractor request after the whole decode, what
                  the ensemble did when decoding and feature extraction were two steps (video_decode ->
                  frame_features); the frames no longer travel between two models
    side by side  chunk_frames as exported (`spec.DECODE_CHUNK_FRAMES`) or each of `--chunks`

and searches by a synthetic 30 s 1280x720 30 fps H.264 clip (keyframe every second; `decode_bench.encode_clip`),
plus the real sample videos, on a store holding only the sample videos (the coarse search and re-ranking of a
big store are `serving_bench.py`'s).  Reported per setting: the search's `embed` stage (decode, extractor and the
video models, inside Triton) and the client's round trip, median (p95) ms.  Beside them, in this process, the
work itself: the clip's decode (`sampled_frames`, resizing included) and the extractor on its frames (ONNX
Runtime, one thread, as served), wall and CPU ms; their CPU time over the cores is the least `embed` can take
here however the two are overlapped.

    python benchmarks/embed_bench.py                       # sequential vs the exported chunk
    python benchmarks/embed_bench.py --chunks 2 4 8 --queries 10

Writes benchmarks/results/embed.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from decode_bench import encode_clip
from dnsvr.client import VideoSearchClient, spec
from dnsvr.export.manifest import fine_kind, read_manifest, text_settings
from dnsvr.export.onnx_runner import OnnxRunner
from dnsvr.export.triton_config import pipeline_config, write_config
from dnsvr.serving.local.service import LocalService
from dnsvr.training import paths
from dnsvr.training.data.video import sampled_frames

RESULTS = Path(__file__).resolve().parent / "results" / "embed.md"
SEQUENTIAL = 1200  # video_features' max_frames: one extractor request after the whole decode
WARM_UP = 2


def percentile(values: list[float], q: float) -> float:
    return float(sorted(values)[min(len(values) - 1, round(q * (len(values) - 1)))])


def with_chunk(repository: Path, chunk: int, target: Path) -> Path:
    """A copy of `repository` whose video_features sends `chunk` decoded frames per extractor request."""
    shutil.copytree(repository, target, symlinks=True)
    manifest = read_manifest(repository)
    config = pipeline_config("video_features", fine_kind(manifest), text_settings(manifest))
    config.parameters["chunk_frames"].string_value = str(chunk)
    write_config(config, target / "video_features" / "config.pbtxt")
    return target


def work(repository: Path, clip: Path, repeats: int) -> dict[str, tuple[float, float]]:
    """{"decode" | "extractor": (wall ms, CPU ms)}, medians: the clip decoded to model frames, and the served
    extractor network on those frames in one-thread ONNX Runtime."""
    def timed(call) -> tuple[float, float]:
        walls, cpus = [], []
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            walls.append(1000 * (time.perf_counter() - wall))
            cpus.append(1000 * (time.process_time() - cpu))
        return statistics.median(walls), statistics.median(cpus)

    data = clip.read_bytes()
    frames = np.stack([frame for frame, _ in sampled_frames(data, spec.DECODE_FPS, crop=spec.FRAME_SIZE)])
    text = text_settings(read_manifest(repository))
    extractor = spec.extractor(text["kind"] if text else None)
    runner = OnnxRunner(repository / extractor.name / "1" / "model.onnx", intra_op_threads=1)
    runner.run({"frames": frames[:spec.DECODE_CHUNK_FRAMES]})
    return {"decode": timed(lambda: list(sampled_frames(data, spec.DECODE_FPS, crop=spec.FRAME_SIZE))),
            "extractor": timed(lambda: [runner.run({"frames": frames[start:start + spec.DECODE_CHUNK_FRAMES]})
                                        for start in range(0, len(frames), spec.DECODE_CHUNK_FRAMES)])}


def measure(repository: Path, scratch: Path, queries: dict[str, Path], repeats: int) -> dict[str, dict]:
    """Start the service on `repository` and search each query file `repeats` times after WARM_UP
    -> {query: {"embed": [ms], "round_trip": [ms]}}."""
    measured: dict[str, dict] = {}
    with LocalService(repository, store=scratch / "store", log_dir=scratch) as service, \
            VideoSearchClient(service.grpc_url, timeout_s=600) as client:
        client.index_many([(path.stem, path) for path in sorted(paths.shared_videos_dir().glob("*.mp4"))])
        for name, path in queries.items():
            data = path.read_bytes()
            times: dict[str, list[float]] = {"embed": [], "round_trip": []}
            for index in range(WARM_UP + repeats):
                began = time.perf_counter()
                result = client.search(data, top_k=10, rerank=0.0)
                round_trip = 1000 * (time.perf_counter() - began)
                if index >= WARM_UP:
                    times["embed"].append(result.timings_ms["embed"])
                    times["round_trip"].append(round_trip)
            measured[name] = times
            print(f"  {name}: embed {statistics.median(times['embed']):.0f} ms, "
                  f"round trip {statistics.median(times['round_trip']):.0f} ms", flush=True)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="exported model repository (default: export the bundled "
                        "pack into a temporary folder)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[spec.DECODE_CHUNK_FRAMES],
                        help=f"chunk_frames settings measured beside the sequential {SEQUENTIAL} "
                             f"(default {spec.DECODE_CHUNK_FRAMES})")
    parser.add_argument("--queries", type=int, default=8, help="timed searches per query file and setting")
    parser.add_argument("--seconds", type=int, default=30, help="length of the synthetic clip (default 30)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as folder:
        scratch = Path(folder)
        repository = args.repository
        if repository is None:
            from dnsvr.export.repository import build_repository
            from dnsvr.export.weights import resolve_weights
            print("exporting the bundled pack ...", flush=True)
            repository = scratch / "repository"
            build_repository(resolve_weights(["bundled"]), repository)
        clip = scratch / "clip.mp4"
        clip.write_bytes(encode_clip(args.seconds, 30, 30))
        queries = {f"{args.seconds} s 720p clip ({clip.stat().st_size / 1e6:.1f} MB)": clip}
        for path in sorted(paths.shared_videos_dir().glob("*.mp4"))[:2]:
            queries[f"{path.name} ({path.stat().st_size / 1e6:.1f} MB)"] = path
        costs = work(repository, clip, args.queries)
        print(f"work: {costs}", flush=True)
        results: dict[int, dict] = {}
        for chunk in [SEQUENTIAL, *args.chunks]:
            print(f"chunk_frames {chunk}:", flush=True)
            variant = with_chunk(repository, chunk, scratch / f"repository-{chunk}")
            results[chunk] = measure(variant, scratch / f"run-{chunk}", queries, args.queries)
    write_report(results, queries, costs, args)


def write_report(results: dict[int, dict], queries: dict[str, Path], costs: dict[str, tuple[float, float]],
                 args: argparse.Namespace) -> None:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} ({percentile(values, 0.95):.0f})"

    lines = ["# Query by video file: decoding and the extractor one after the other vs side by side", "",
             f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores; "
             f"`python benchmarks/embed_bench.py{' --chunks ' + ' '.join(map(str, args.chunks))}` "
             f"({args.queries} searches per file and setting after {WARM_UP} untimed, top-10, no re-ranking, a store "
             "of the sample videos).  `embed`: the search's embed stage inside Triton (decode, extractor, video "
             "models); round trip: the client's, the file's upload included.  Median (p95) ms.", "",
             "| query | chunk_frames | embed ms | round trip ms | round trip vs sequential |",
             "|---|---|---:|---:|---:|"]
    for name in queries:
        base = statistics.median(results[SEQUENTIAL][name]["round_trip"])
        for chunk, measured in results.items():
            label = f"{chunk} (sequential)" if chunk == SEQUENTIAL else str(chunk)
            ratio = base / statistics.median(measured[name]["round_trip"])
            lines.append(f"| {name} | {label} | {cell(measured[name]['embed'])} | "
                         f"{cell(measured[name]['round_trip'])} | {ratio:.2f}x |")
    cores = len(os.sched_getaffinity(0))
    lines += ["", f"The work of the {args.seconds} s clip, in this process (median ms):", "",
              "| work | wall ms | CPU ms |", "|---|---:|---:|",
              *[f"| {name} | {wall:.0f} | {cpu:.0f} |" for name, (wall, cpu) in costs.items()],
              "", f"Their CPU time over {cores} cores: {sum(cpu for _, cpu in costs.values()) / cores:.0f} ms, the "
              "least the clip's `embed` can take on this machine however decoding and the extractor overlap."]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
