"""A query by video file through the local Triton: decoding and the extractor one after the other vs side by side.

`dnsvr_embed` starts with `video_features`, which decodes the file on a thread of its own and sends the frames
already decoded to the extractor `chunk_frames` at a time, so that on 2 cores the decoder and the extractor each
keep one busy.  This starts the service once per setting, on copies of the same exported repository, in turn in
one run (`--rounds` times):

    sequential    chunk_frames 1200 (the maximum frames): one extractor request after the whole decode, what
                  the ensemble did when decoding and feature extraction were two steps (video_decode ->
                  frame_features); the frames no longer travel between two models
    side by side  chunk_frames as exported (`spec.DECODE_CHUNK_FRAMES`) or each of `--chunks`

Each is run under each `--omp-wait-policy`, the server's OMP_WAIT_POLICY: PASSIVE is what the local
launcher sets (`triton_server.THREAD_ENVIRONMENT`), `unset` leaves OpenMP's own default (its threads spin a
while after each parallel region: what ran before the launcher set it), ACTIVE spins without end; and with each
`--extractor-threads` (the extractor's ONNX Runtime intra-op threads, sleeping after each request; `N:spin`:
spinning, ONNX Runtime's default; not given: as exported, one spinning thread).  Each setting searches by a
synthetic 30 s 1280x720 30 fps H.264 clip (keyframe every second; `decode_bench.encode_clip`; x264 on slice
threads, several slices per picture, and again on frame threads, one slice per picture), plus the real
sample videos, on a store holding only the sample videos (the coarse search and re-ranking of a
big store are `serving_bench.py`'s).  Reported per setting: the search's `embed` stage (decode, extractor and the
video models, inside Triton) and the client's round trip, median (p95) ms.  Beside them, in this process, the
work itself: the clip's decode (`sampled_frames`, resizing included) and the extractor on its frames (ONNX
Runtime, one thread, as served), wall and CPU ms, in a fresh process under each wait policy; their CPU time
over the cores is the least `embed` can take here however the two are overlapped.

    python benchmarks/embed_bench.py                       # sequential vs the exported chunk
    python benchmarks/embed_bench.py --chunks 2 4 8 --queries 10
    python benchmarks/embed_bench.py --omp-wait-policy PASSIVE      # only what the launcher sets
    python benchmarks/embed_bench.py --omp-wait-policy PASSIVE --extractor-threads 1 2 2:spin --rounds 3
    python benchmarks/embed_bench.py --omp-wait-policy PASSIVE --baseline-repository OLD --rounds 2

`--keyframe-decoders 0 2`: the server's DNSVR_KEYFRAME_DECODERS, each a setting (0: FFmpeg's threads alone;
`keyframe_decoders_bench.py` measures the decode alone).  `--baseline-repository OLD`: a repository exported by
an earlier version (a `git worktree` of an older commit
and its `dnsvr export`), served in every setting beside the current export, to measure what a change to the
exported networks bought.

Writes benchmarks/results/embed.md (`--out`).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import numpy as np
from decode_bench import encode_clip
from dnsvr.client import VideoSearchClient, spec
from dnsvr.export.manifest import fine_kind, read_manifest, text_settings
from dnsvr.export.onnx_runner import OnnxRunner
from dnsvr.export.triton_config import CPU_LOCAL, ModelConfig, pipeline_config, write_config
from dnsvr.serving.local.service import LocalService
from dnsvr.serving.local.triton_server import THREAD_ENVIRONMENT
from dnsvr.training import paths
from dnsvr.training.data.video import sampled_frames
from google.protobuf import text_format

RESULTS = Path(__file__).resolve().parent / "results" / "embed.md"
SEQUENTIAL = 1200  # video_features' max_frames: one extractor request after the whole decode
WARM_UP = 2
UNSET = "unset"  # no OMP_WAIT_POLICY: OpenMP's default
CURRENT, BASELINE = "current", "baseline"  # which export a setting serves


def percentile(values: list[float], q: float) -> float:
    return float(sorted(values)[min(len(values) - 1, round(q * (len(values) - 1)))])


@dataclass(frozen=True)
class Setting:
    """One service configuration: the server's OMP_WAIT_POLICY, video_features' chunk_frames, the extractor's
    threads ("N" sleeping, "N:spin" spinning, "" as exported), the export served (CURRENT or BASELINE) and the
    server's DNSVR_KEYFRAME_DECODERS ("" unset)."""

    policy: str
    chunk: int
    threads: str
    export: str = CURRENT
    decoders: str = ""

    def label(self) -> str:
        return (f"{self.policy}-{self.chunk}-{self.threads or 'exported'}-{self.export}-{self.decoders or 'default'}"
                .replace(":", ""))


def variant(repository: Path, setting: Setting, target: Path) -> Path:
    """A copy of `repository` whose video_features sends `setting.chunk` decoded frames per extractor request and
    whose extractor runs on `setting.threads`."""
    shutil.copytree(repository, target, symlinks=True)
    manifest = read_manifest(repository)
    text = text_settings(manifest)
    config = pipeline_config("video_features", fine_kind(manifest), text)
    config.parameters["chunk_frames"].string_value = str(setting.chunk)
    write_config(config, target / "video_features" / "config.pbtxt")
    if setting.threads:
        path = target / spec.extractor(text["kind"] if text else None).name / "configs" / f"{CPU_LOCAL}.pbtxt"
        config = text_format.Parse(path.read_text(), ModelConfig())
        threads, _, spin = setting.threads.partition(":")
        config.parameters["intra_op_threads"].string_value = threads
        config.parameters["allow_spinning"].string_value = "1" if spin else "0"
        write_config(config, path)
    return target


@contextlib.contextmanager
def wait_policy(policy: str) -> Iterator[None]:
    """OMP_WAIT_POLICY=`policy` ("unset": none) for the processes started inside: this process's environment and
    the local Triton launcher's THREAD_ENVIRONMENT."""
    with mock.patch.dict(os.environ), mock.patch.dict(THREAD_ENVIRONMENT):
        for variables in (os.environ, THREAD_ENVIRONMENT):
            variables.pop("OMP_WAIT_POLICY", None)
            if policy != UNSET:
                variables["OMP_WAIT_POLICY"] = policy
        yield


def work_under(policy: str, repository: Path, clip: Path, repeats: int) -> dict[str, tuple[float, float]]:
    """`work` in a fresh process whose OpenMP runtime starts under `wait_policy(policy)`."""
    with wait_policy(policy), ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(work, repository, clip, repeats).result()


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


def measure(repository: Path, scratch: Path, queries: dict[str, Path], repeats: int, setting: Setting
            ) -> dict[str, dict]:
    """Start the service on `repository` under `wait_policy(setting.policy)` (and `setting.decoders`) and search
    each query file `repeats` times after WARM_UP -> {query: {"embed": [ms], "round_trip": [ms]}}."""
    measured: dict[str, dict] = {}
    env = {paths.KEYFRAME_DECODERS: setting.decoders} if setting.decoders else {}
    with wait_policy(setting.policy), \
            LocalService(repository, store=scratch / "store", log_dir=scratch, env=env) as service, \
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
    parser.add_argument("--omp-wait-policy", nargs="+", default=["PASSIVE", UNSET],
                        choices=["PASSIVE", UNSET, "ACTIVE"],
                        help=f"the server's OpenMP wait policies to run each setting under (default PASSIVE {UNSET})")
    parser.add_argument("--extractor-threads", nargs="+", default=[], type=extractor_threads, metavar="N[:spin]",
                        help="the extractor's intra-op threads to run each setting with, sleeping after each request "
                             "(N:spin: spinning); default: as exported")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    parser.add_argument("--keyframe-decoders", nargs="+", default=[""], metavar="N",
                        help="the server's DNSVR_KEYFRAME_DECODERS settings (default: unset, the code's default)")
    parser.add_argument("--baseline-repository", type=Path,
                        help="a repository exported by an earlier version, served beside the current one in every "
                             "setting (see above)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="times every setting is measured, in turn (each on a fresh service; default 1)")
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
        one_slice = scratch / "clip-one-slice.mp4"
        one_slice.write_bytes(encode_clip(args.seconds, 30, 30, slices=False))
        queries[f"the same, one slice per picture ({one_slice.stat().st_size / 1e6:.1f} MB)"] = one_slice
        for path in sorted(paths.shared_videos_dir().glob("*.mp4"))[:2]:
            queries[f"{path.name} ({path.stat().st_size / 1e6:.1f} MB)"] = path
        costs = {policy: work_under(policy, repository, clip, args.queries) for policy in args.omp_wait_policy}
        print(f"work: {costs}", flush=True)
        exports = {CURRENT: repository} | ({BASELINE: args.baseline_repository} if args.baseline_repository else {})
        settings = [Setting(policy, chunk, threads, export, decoders) for chunk in [SEQUENTIAL, *args.chunks]
                    for threads in args.extractor_threads or [""] for policy in args.omp_wait_policy
                    for export in exports for decoders in args.keyframe_decoders]
        served = {setting: variant(exports[setting.export], setting, scratch / f"repository-{setting.label()}")
                  for setting in settings}  # one copy a setting, served again each round
        results: dict[Setting, dict[str, dict[str, list[float]]]] = {}
        for round_ in range(args.rounds):
            for setting in settings:
                print(f"round {round_ + 1}: {setting}", flush=True)
                measured = measure(served[setting], scratch / f"run-{setting.label()}-{round_}", queries,
                                   args.queries, setting)
                for name, times in measured.items():
                    for key, values in times.items():
                        results.setdefault(setting, {}).setdefault(name, {}).setdefault(key, []).extend(values)
    write_report(results, queries, costs, args)


def extractor_threads(text: str) -> str:
    """--extractor-threads N or N:spin (N >= 1)."""
    threads, _, spin = text.partition(":")
    if not threads.isdigit() or int(threads) < 1 or spin not in ("", "spin"):
        raise argparse.ArgumentTypeError(f"expected N or N:spin, got {text!r}")
    return text


def write_report(results: dict[Setting, dict[str, dict[str, list[float]]]], queries: dict[str, Path],
                 costs: dict[str, dict[str, tuple[float, float]]], args: argparse.Namespace) -> None:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} ({percentile(values, 0.95):.0f})"

    def ratio(setting: Setting, name: str, **baseline: object) -> str:
        """The round trip of `setting` with `baseline` replaced, over its own ("—" when not measured)."""
        other = replace(setting, **baseline)
        if other not in results:
            return "—"
        value = statistics.median(results[other][name]["round_trip"])
        return f"{value / statistics.median(results[setting][name]['round_trip']):.2f}x"

    cores = len(os.sched_getaffinity(0))
    command = (f"python benchmarks/embed_bench.py --chunks {' '.join(map(str, args.chunks))} "
               f"--queries {args.queries} --omp-wait-policy {' '.join(args.omp_wait_policy)}"
               + (f" --extractor-threads {' '.join(args.extractor_threads)}" if args.extractor_threads else "")
               + (f" --keyframe-decoders {' '.join(args.keyframe_decoders)}" if any(args.keyframe_decoders) else "")
               + (" --baseline-repository OLD" if args.baseline_repository else "") + f" --rounds {args.rounds}")
    lines = ["# Query by video file: decoding and the extractor one after the other vs side by side", "",
             f"Machine: {platform.machine()}, {cores} cores; `{command}` ({args.queries} searches per file, setting "
             f"and round after {WARM_UP} untimed, the settings in turn each round, top-10, no re-ranking, a store "
             "of the sample videos).  `embed`: the search's embed stage inside Triton (decode, extractor, video "
             "models); round trip: the client's, the file's upload included.  OpenMP wait: the server's "
             "OMP_WAIT_POLICY (PASSIVE: what the local launcher sets; unset: OpenMP's default, before).  Extractor "
             "threads: its ONNX Runtime intra-op threads (sleeping after each request unless `:spin`; `exported`: "
             "as `dnsvr export` configures it).  Export: the repository served (`current`: this version's; `baseline`: "
             "`--baseline-repository`'s).  Keyframe decoders: the server's DNSVR_KEYFRAME_DECODERS (`default`: unset, "
             "2).  Ratios: the round trip with one setting changed to the named one, "
             "over this row's.  Median (p95) ms.", "",
             "| query | OpenMP wait | chunk_frames | extractor threads | export | keyframe decoders | embed ms | "
             f"round trip ms | vs sequential | vs {UNSET} | vs 1 thread | vs {BASELINE} | vs 0 decoders |",
             "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in queries:
        for setting in results:
            label = f"{setting.chunk} (sequential)" if setting.chunk == SEQUENTIAL else str(setting.chunk)
            lines.append(f"| {name} | {setting.policy} | {label} | {setting.threads or 'exported'} | "
                         f"{setting.export} | {setting.decoders or 'default'} | "
                         f"{cell(results[setting][name]['embed'])} | {cell(results[setting][name]['round_trip'])} | "
                         f"{ratio(setting, name, chunk=SEQUENTIAL)} | {ratio(setting, name, policy=UNSET)} | "
                         f"{ratio(setting, name, threads='1')} | {ratio(setting, name, export=BASELINE)} | "
                         f"{ratio(setting, name, decoders='0')} |")
    lines += ["", f"The work of the {args.seconds} s clip, in a fresh process under each wait policy (median ms):", "",
              "| OpenMP wait | work | wall ms | CPU ms |", "|---|---|---:|---:|",
              *[f"| {policy} | {name} | {wall:.0f} | {cpu:.0f} |"
                for policy, work_ms in costs.items() for name, (wall, cpu) in work_ms.items()], ""]
    for policy, work_ms in costs.items():
        lines.append(f"Their CPU time over {cores} cores under {policy}: "
                     f"{sum(cpu for _, cpu in work_ms.values()) / cores:.0f} ms, the least the clip's `embed` can take "
                     "on this machine however decoding and the extractor overlap (the extractor here on one thread).")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
