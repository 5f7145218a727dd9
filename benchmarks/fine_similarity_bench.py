"""S^f_B fine similarity on the CPU: the float ±1 graph vs the Hamming kernel + comparator graph, side by side.

    .venv/bin/python benchmarks/fine_similarity_bench.py [--runs 20] [--threads 1 2]
        [--baseline-onnx F.onnx --baseline-label main@c314e88]

One query of T = 60 frames against K = 50 candidates of T = 60 frames (`--frames`, `--candidates`), the
packed codes of `example_feeds` (weights: the golden S^f_B checkpoint; the timings do not depend on them).
For each thread count: the float graph `model.onnx` (ONNX Runtime, that many intra-op threads) and the CPU
path of `dnsvr.export.hamming` (a pool of that many threads for the kernel and the comparator's runs, one ONNX
Runtime thread each, as served), `--runs` rounds after a warm-up round, each round running every column once;
median and fastest run per column (the machine is shared: the fastest run is the closest to an idle one); the
new path split into its stages (Hamming + region Chamfer -> f2f, with each Hamming kernel this machine runs,
then comparator.onnx), and the two stages one after the other on the whole batch (the served path until stop
46, which runs each comparator run's Hamming sums and comparator on one thread: `HammingFineSimilarity.score`).
Beside comparator.onnx, the masked comparator it replaced (stop 45): the float graph's learned part on the
padded f2f and masks in one batch, on that many intra-op threads.  `--baseline-onnx` adds a float graph
exported elsewhere (e.g. from the main branch) to time beside them.  `--idle-ms 30` sleeps before every
call, as a served search's fine call finds the cores idle (Linux may then wake the pool's threads on one
core).  The max abs differences are those of the scores on this input (new vs float graph, new vs the eager
student).  Writes benchmarks/results/fine_similarity.md and, unless `--no-docs`, the table into
docs/export.md (between its `fine-similarity` markers).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from dnsvr.client import spec
from dnsvr.export.graphs import GRAPH_CLASSES, ComparatorGraph, MaskedComparator
from dnsvr.export.hamming import KERNEL, KERNELS, HammingFineSimilarity, frame_similarities
from dnsvr.export.onnx_export import example_feeds, export_onnx
from dnsvr.export.onnx_runner import OnnxRunner
from dnsvr.export.parity import reference_output
from dnsvr.training import load_checkpoint, paths

ROOT = Path(__file__).resolve().parents[1]
TARGET_MS = 40.0  # issue 12: 50 pairs at T = 60
MASKED_COMPARATOR = spec.ModelSpec(  # the CPU path's comparator until stop 45: padded f2f and masks
    "fine_comparator_masked",
    inputs=(spec.TensorSpec("f2f", "float32", (-1, -1, -1)), spec.TensorSpec("query_mask", "bool", (-1,)),
            spec.TensorSpec("candidate_mask", "bool", (-1, -1))),
    outputs=(spec.TensorSpec("similarity", "float32", (-1,)),),
    description="f2f [K, Tq, Tt] of the real frames, 0 elsewhere, and the masks -> scores [K]",
)
DOCS_START, DOCS_END = "<!-- fine-similarity:start -->", "<!-- fine-similarity:end -->"


def timed(call: Callable[[], object], idle_ms: float) -> float:
    """ms of one `call`, after `idle_ms` of sleep (0: none)."""
    if idle_ms:
        time.sleep(idle_ms / 1000)
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def measure(graph: OnnxRunner, baseline: OnnxRunner | None, kernel: HammingFineSimilarity, masked: OnnxRunner,
            feeds: dict[str, np.ndarray], runs: int, idle_ms: float) -> dict[str, tuple[float, float]]:
    """(median, min) ms per column over `runs` rounds after a warm-up round; each round runs every column
    once (each call after `idle_ms` of sleep), so a change of the machine's load hits all columns alike."""
    checked = kernel.validate(feeds)
    f2f = kernel.frame_similarities(checked)
    arrays = [checked[name] for name in spec.FINE_SIMILARITY_BIN.input_names]
    masked_feeds = {"f2f": f2f, "query_mask": checked["query_mask"], "candidate_mask": checked["candidate_mask"]}
    calls = {"graph": lambda: graph.run(feeds), "comparator": lambda: kernel.compare(f2f, checked),
             "masked": lambda: masked.run(masked_feeds), "new": lambda: kernel.run(feeds),
             "two stages": lambda: kernel.compare(kernel.frame_similarities(checked), checked)}
    for name in KERNELS:
        calls[f"f2f {name}"] = lambda name=name: frame_similarities(*arrays, kernel.pool, name)
    if baseline is not None:
        calls["baseline"] = lambda: baseline.run(feeds)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(runs + 1):
        for name, call in calls.items():
            elapsed = timed(call, idle_ms)
            if round_:
                times[name].append(elapsed)
    return {name: (statistics.median(values), min(values)) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="timed rounds per thread count (median reported)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to measure")
    parser.add_argument("--frames", type=int, default=60, help="frames of the query and of every candidate")
    parser.add_argument("--candidates", type=int, default=50, help="K, candidates scored in one call")
    parser.add_argument("--baseline-onnx", type=Path, help="another float fine_similarity_bin graph to time")
    parser.add_argument("--baseline-label", default="baseline", help="its column's name (e.g. main@abc1234)")
    parser.add_argument("--idle-ms", type=float, default=0.0, help="sleep before every timed call, as a served "
                        "search's fine call comes after idle cores (default 0: back to back)")
    parser.add_argument("--no-docs", action="store_true", help="write --out only, not docs/export.md's table")
    parser.add_argument("--golden", type=Path, default=paths.shared_dir() / "golden")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fine_similarity.md")
    args = parser.parse_args()
    student = load_checkpoint(args.golden / "fg_bin_student.pth")
    frames, k = args.frames, args.candidates
    feeds = example_feeds(spec.FINE_SIMILARITY_BIN, [frames] * k, frames, frames, frames)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = export_onnx(GRAPH_CLASSES[spec.FINE_SIMILARITY_BIN.name](student), spec.FINE_SIMILARITY_BIN,
                            Path(tmp) / "model.onnx")
        comparator = export_onnx(ComparatorGraph(student), spec.FINE_COMPARATOR, Path(tmp) / "comparator.onnx")
        masked_path = export_onnx(MaskedComparator(student), MASKED_COMPARATOR, Path(tmp) / "masked.onnx",
                                  example=example_feeds(spec.FINE_SIMILARITY_BIN, [7, 5], 9, 5, 9) | {
                                      "f2f": np.zeros((2, 9, 9), np.float32)})
        for threads in args.threads:
            # no spinning anywhere: an idle session's spinning threads would slow the next column down
            graph = OnnxRunner(model, intra_op_threads=threads, allow_spinning=False)
            baseline = (OnnxRunner(args.baseline_onnx, intra_op_threads=threads, allow_spinning=False)
                        if args.baseline_onnx else None)
            kernel = HammingFineSimilarity(comparator, threads=threads)
            masked = OnnxRunner(masked_path, intra_op_threads=threads, allow_spinning=False)
            new = kernel.run(feeds)["similarity"]
            vs_graph = float(np.abs(new - graph.run(feeds)["similarity"]).max())
            eager = reference_output(spec.FINE_SIMILARITY_BIN.name, student, feeds)["similarity"]
            vs_student = float(np.abs(new - eager).max())
            rows.append((threads, measure(graph, baseline, kernel, masked, feeds, args.runs, args.idle_ms), vs_graph,
                         vs_student))
            kernel.close()
    columns = ["baseline"] if args.baseline_onnx else []
    columns += ["graph", *(f"f2f {name}" for name in KERNELS), "masked", "comparator", "two stages", "new"]
    titles = {"baseline": f"float graph, {args.baseline_label}", "graph": "float graph",
              "masked": "masked comparator (before stop 45)", "comparator": "new: comparator (runs of one length)",
              "two stages": f"new: the two stages one after the other ({KERNEL}, before stop 46)",
              "new": f"new: total, one pass ({KERNEL})"}
    titles.update({f"f2f {name}": f"new: Hamming + Chamfer ({name})" for name in KERNELS})
    lines = [
        f"# Fine similarity S^f_B on CPU: float graph vs Hamming kernel + comparator ({args.runs} rounds)",
        "",
        f"One query of T = {frames} frames against K = {k} candidates of T = {frames} frames.  Machine: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end (shared with other jobs: upper bounds); onnxruntime "
        f"{onnxruntime.__version__}, faiss {__import__('faiss').__version__}, torch {torch.__version__}.  "
        f"Target: {TARGET_MS:g} ms for the {k} pairs.  "
        + (f"Every call after {args.idle_ms:g} ms of sleep.  " if args.idle_ms else "Calls back to back.  ")
        + "Milliseconds, median (fastest run in brackets: the closest to an idle machine).",
        "",
        "| threads | " + " | ".join(titles[c] for c in columns) + f" | speed-up vs {titles[columns[0]]} "
        "| max abs diff vs float graph | vs eager student |",
        "|---|" + "---|" * (len(columns) + 3),
    ]
    for threads, ms, vs_graph, vs_student in rows:
        cells = " | ".join(f"{ms[c][0]:.1f} ({ms[c][1]:.1f})" for c in columns)
        lines.append(f"| {threads} | {cells} | {ms[columns[0]][0] / ms['new'][0]:.1f}x | {vs_graph:.1e} | "
                     f"{vs_student:.1e} |")
    best = min(ms["new"][0] for _, ms, _, _ in rows)
    verdict = "met" if best <= TARGET_MS else f"not met (+{best - TARGET_MS:.1f} ms, {best / TARGET_MS:.2f}x)"
    lines += ["", f"Best median of the new path: {best:.1f} ms; target {TARGET_MS:g} ms: {verdict}."]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if not args.no_docs:
        doc = ROOT / "docs" / "export.md"
        head, rest = doc.read_text().split(DOCS_START, 1)
        table = "\n".join(lines[2:])
        doc.write_text(f"{head}{DOCS_START}\n{table}\n{DOCS_END}{rest.split(DOCS_END, 1)[1]}")
    print(text)


if __name__ == "__main__":
    main()
