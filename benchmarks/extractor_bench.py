"""The served frame extractor on CPU: EfficientNet-Lite0's SAME padding as the graph's own vs as traced before.

    .venv/bin/python benchmarks/extractor_bench.py [--rounds 5] [--frames 4 1] [--out benchmarks/results/extractor.md]

Exports the bundled pack's served extractor (`feature_extractor_pooled`, real weights) three ways in one run and
times each in one-thread ONNX Runtime, as the `cpu_local` extractor runs, on the same random uint8 frames:

    before     what `dnsvr export` wrote until stop 39: every SAME-padded conv (the stem and the 16 depthwise
               ones) an explicit Pad whose sizes are computed in the graph from the input's shape
    pads kept  the pads fixed at the 224x224 input, the stride-1 ones the convolutions' own, the 5 asymmetric
               stride-2 ones still Pad nodes (`export_onnx(..., fold_pads=False)`)
    folded     what `dnsvr export` writes now: every pad the convolution's own (`dnsvr.export.onnx_folding`)

ONNX Runtime runs Convs in its blocked NCHWc layout and leaves it around every Pad (ReorderOutput, Pad,
ReorderInput), hence the difference.  Each round times every variant in turn (`--frames` per request, the
median over the requests of a round reported per frame; medians and spread over rounds).  Also: node counts,
and the max abs difference of each variant's outputs from the eager network's (features, pooled).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn.functional as F
from dnsvr.client import spec
from dnsvr.export.graphs import build_graph
from dnsvr.export.onnx_export import export_onnx
from dnsvr.export.onnx_runner import OnnxRunner
from dnsvr.export.weights import resolve_weights
from dnsvr.training.networks.efficientnet import SamePadConv2d
from torch import Tensor
from tqdm import tqdm

RESULTS = Path(__file__).resolve().parent / "results" / "extractor.md"
REQUESTS = 8  # timed requests per variant and round, after one untimed


def traced_before(self: SamePadConv2d, x: Tensor) -> Tensor:
    """SamePadConv2d.forward until stop 39: an explicit pad for every conv, its sizes read from x's shape."""
    top, bottom = self.same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
    left, right = self.same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
    return F.conv2d(F.pad(x, [left, right, top, bottom]), self.weight, self.bias, self.stride, 0, self.dilation,
                    self.groups)


@contextlib.contextmanager
def padding(variant: str) -> Iterator[None]:
    """SamePadConv2d as `variant` traces it."""
    if variant != "before":
        yield
        return
    with mock.patch.object(SamePadConv2d, "forward", traced_before):
        yield


def export(network: torch.nn.Module, variant: str, folder: Path) -> Path:
    name = spec.FEATURE_EXTRACTOR_POOLED.name
    with padding(variant):
        return export_onnx(build_graph(name, network), spec.NETWORKS[name], folder / f"{variant}.onnx",
                           fold_pads=variant == "folded")


def per_frame_ms(runner: OnnxRunner, frames: np.ndarray) -> float:
    runner.run({"frames": frames})
    times = []
    for _ in range(REQUESTS):
        began = time.perf_counter()
        runner.run({"frames": frames})
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times) / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each timing every variant in turn")
    parser.add_argument("--frames", type=int, nargs="+", default=[spec.DECODE_CHUNK_FRAMES, 1],
                        help=f"frames per request (default: the served chunk, {spec.DECODE_CHUNK_FRAMES}, and 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    network = resolve_weights(["bundled"]).networks[spec.FEATURE_EXTRACTOR_POOLED.name].eval()
    variants = ["before", "pads kept", "folded"]
    shape = (max(args.frames), spec.FRAME_SIZE, spec.FRAME_SIZE, 3)
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    with torch.no_grad():
        expected = [output.numpy() for output in build_graph(spec.FEATURE_EXTRACTOR_POOLED.name, network)(
            torch.from_numpy(frames))]
    with tempfile.TemporaryDirectory(prefix="extractor-bench-") as folder:
        paths = {variant: export(network, variant, Path(folder)) for variant in variants}
        nodes = {variant: Counter(node.op_type for node in onnx.load(path).graph.node)
                 for variant, path in paths.items()}
        runners = {variant: OnnxRunner(path, intra_op_threads=1) for variant, path in paths.items()}
        errors = {variant: [float(np.abs(got - want).max()) for got, want in
                            zip(runner.run({"frames": frames}).values(), expected, strict=True)]
                  for variant, runner in runners.items()}
        measured: dict[tuple[str, int], list[float]] = {}
        for _ in tqdm(range(args.rounds), desc="rounds"):
            for count in args.frames:
                for variant in variants:
                    measured.setdefault((variant, count), []).append(per_frame_ms(runners[variant], frames[:count]))
    write_report(args, variants, nodes, errors, measured)


def write_report(args: argparse.Namespace, variants: list[str], nodes: dict[str, Counter],
                 errors: dict[str, list[float]], measured: dict[tuple[str, int], list[float]]) -> None:
    command = f"python benchmarks/extractor_bench.py --rounds {args.rounds} --frames {' '.join(map(str, args.frames))}"
    lines = ["# The served frame extractor on CPU: SAME padding as the convolutions' own vs as traced before", "",
             f"Machine: {platform.machine()}; `{command}`; ONNX Runtime {onnxruntime.__version__}, one intra-op "
             "thread (the `cpu_local` extractor's).  ms per frame: the median of a round's requests over its "
             f"frames; median (min-max) over {args.rounds} rounds, the variants timed in turn each round.", "",
             "| variant | nodes | Pad | Shape | "
             + " | ".join(f"ms/frame, {count} per request" for count in args.frames)
             + " | " + " | ".join(f"vs before, {count}" for count in args.frames) + " | max abs error vs eager "
             "(features, pooled) |",
             "|---|---:|---:|---:|" + "---:|" * (2 * len(args.frames)) + "---|"]
    for variant in variants:
        cells = [f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
                 for values in (measured[(variant, count)] for count in args.frames)]
        speed = {count: statistics.median(measured[("before", count)]) / statistics.median(measured[(variant, count)])
                 for count in args.frames}
        ratios = [f"{speed[count]:.2f}x" for count in args.frames]
        lines.append(f"| {variant} | {sum(nodes[variant].values())} | {nodes[variant]['Pad']} | "
                     f"{nodes[variant]['Shape']} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " | "
                     + ", ".join(f"{error:.1e}" for error in errors[variant]) + " |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
