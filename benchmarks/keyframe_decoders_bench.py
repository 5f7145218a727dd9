"""Decoding a query clip at 1 fps on FFmpeg's threads alone vs with keyframes decoded ahead on decoders of their own.

At 1 fps with a keyframe every second, `sampled_frames` decodes each sampled picture as its keyframe alone.
FFmpeg's slice threads split a picture only when it has several slices, and wait for each other on every
picture; `dnsvr.training.data.keyframe_decoders` decodes the coming keyframes at once on decoders of their own
(`DNSVR_KEYFRAME_DECODERS`, default 2; 0: none).  This encodes a 30 s 1280x720 30 fps H.264 clip with a
keyframe every second twice, x264 on slice threads (several slices per picture; PyAV's default, the clip of
`embed_bench.py`) and on frame threads (one slice per picture; FFmpeg's default, what most files hold), and
decodes each with `sampled_frames` (RGB, resize and crop included) under every `--decoders` setting, in turn
each round:

    alone      nothing else runs
    extractor  beside a process running the served extractor (one ONNX Runtime thread, 4 frames per request)
               without pause, as `video_features` runs it while it decodes

Reported: wall and CPU ms of the decode (median over rounds), and that every setting gives the same frames.
The script runs itself again under the served thread environment (`triton_server.THREAD_ENVIRONMENT`:
OMP_WAIT_POLICY=PASSIVE, so PyTorch's resize threads sleep as in the server).

    python benchmarks/keyframe_decoders_bench.py [--rounds 5] [--decoders 0 2]

Writes benchmarks/results/keyframe_decoders.md (`--out`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
from decode_bench import encode_clip
from dnsvr.client import spec
from dnsvr.serving.local.triton_server import THREAD_ENVIRONMENT
from dnsvr.training import paths
from dnsvr.training.data.video import sampled_frames
from tqdm import tqdm

RESULTS = Path(__file__).resolve().parent / "results" / "keyframe_decoders.md"


def busy_extractor(model: str, stop: multiprocessing.synchronize.Event, ready: multiprocessing.synchronize.Event
                   ) -> None:
    """Run the extractor on 4 frames at a time, on one thread, until `stop`."""
    from dnsvr.export.onnx_runner import OnnxRunner

    runner = OnnxRunner(model, intra_op_threads=1, allow_spinning=False)
    frames = np.zeros((spec.DECODE_CHUNK_FRAMES, spec.FRAME_SIZE, spec.FRAME_SIZE, 3), np.uint8)
    runner.run({"frames": frames})
    ready.set()
    while not stop.is_set():
        runner.run({"frames": frames})


def decode(data: bytes, decoders: str) -> tuple[float, float, np.ndarray]:
    """(wall ms, CPU ms, frames) of one `sampled_frames` decode under DNSVR_KEYFRAME_DECODERS=`decoders`."""
    with mock.patch.dict(os.environ, {paths.KEYFRAME_DECODERS: decoders}):
        wall, cpu = time.perf_counter(), time.process_time()
        frames = np.stack([frame for frame, _ in sampled_frames(data, spec.DECODE_FPS, crop=spec.FRAME_SIZE)])
        return 1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu), frames


def export_extractor(folder: Path) -> Path:
    from dnsvr.export.graphs import build_graph
    from dnsvr.export.onnx_export import export_onnx
    from dnsvr.export.weights import resolve_weights

    name = spec.FEATURE_EXTRACTOR_POOLED.name
    network = resolve_weights(["bundled"]).networks[name]
    return export_onnx(build_graph(name, network), spec.NETWORKS[name], folder / "extractor.onnx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="decodes per clip, condition and setting (default 5)")
    parser.add_argument("--decoders", nargs="+", default=["0", "2"],
                        help="DNSVR_KEYFRAME_DECODERS settings compared (default 0 2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    args = parser.parse_args()
    if os.environ.get("OMP_WAIT_POLICY") != THREAD_ENVIRONMENT["OMP_WAIT_POLICY"]:  # read once, at OpenMP's start
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **THREAD_ENVIRONMENT})
    clips = {"slices": encode_clip(30, 30, 30), "one slice": encode_clip(30, 30, 30, slices=False)}
    results: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    same = True
    with tempfile.TemporaryDirectory(prefix="keyframe-bench-") as folder:
        model = export_extractor(Path(folder))
        context = multiprocessing.get_context("spawn")
        for condition in ("alone", "extractor"):
            stop, ready = context.Event(), context.Event()
            worker = None
            if condition == "extractor":
                worker = context.Process(target=busy_extractor, args=(str(model), stop, ready), daemon=True)
                worker.start()
                ready.wait(120)
            try:
                for name, data in clips.items():
                    reference = None
                    for _ in tqdm(range(args.rounds), desc=f"{name}, {condition}", leave=False):
                        for decoders in args.decoders:
                            wall, cpu, frames = decode(data, decoders)
                            results.setdefault((name, condition, decoders), []).append((wall, cpu))
                            reference = frames if reference is None else reference
                            same = same and np.array_equal(frames, reference)
            finally:
                stop.set()
                if worker is not None:
                    worker.join(30)
    write_report(args, clips, results, same)


def write_report(args: argparse.Namespace, clips: dict[str, bytes], results: dict, same: bool) -> None:
    lines = ["# Decoding a query clip at 1 fps: FFmpeg's threads alone vs keyframes decoded ahead", "",
             f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores; `python benchmarks/"
             f"keyframe_decoders_bench.py --rounds {args.rounds} --decoders {' '.join(args.decoders)}`.  30 s "
             "1280x720 30 fps H.264 clips, a keyframe every second, decoded by `sampled_frames` at 1 fps (30 "
             "frames; RGB, resize and crop included).  Keyframe decoders: DNSVR_KEYFRAME_DECODERS (0: FFmpeg's "
             "slice threads alone, as before).  `extractor`: beside a process running the served extractor "
             "without pause.  Median ms over the rounds, the settings in turn each round.", "",
             "| clip | beside | keyframe decoders | wall ms | CPU ms | wall vs 0 |", "|---|---|---:|---:|---:|---:|"]
    for (name, condition, decoders), values in results.items():
        wall = statistics.median(wall for wall, _ in values)
        cpu = statistics.median(cpu for _, cpu in values)
        base = results.get((name, condition, "0"))
        ratio = f"{statistics.median(w for w, _ in base) / wall:.2f}x" if base else "—"
        label = f"{name} ({len(clips[name]) / 1e6:.1f} MB)"
        lines.append(f"| {label} | {condition} | {decoders} | {wall:.0f} | {cpu:.0f} | {ratio} |")
    lines += ["", f"Every setting gave the same frames: {'yes' if same else 'NO'}."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
