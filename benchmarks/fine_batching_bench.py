"""Would batching fine similarity across concurrent searches pay?  n requests of K pairs vs one call of n*K.

Triton's dynamic batcher could hand `dnsvr_search`'s concurrent fine_similarity_bin requests (one query, K
candidates each) to the model together, to run as one batch.  On the CPU path (`dnsvr.export.hamming`: the
Hamming kernel, then comparator.onnx) this measures, side by side in one run, with the kernel's and the
comparator's threads as `cpu_local` sets them (2), T = 60 frames everywhere:

    separate   n calls of K pairs, one after the other (what the model does today, request by request)
    together   one call of n*K pairs (the best a cross-request batch could do: no padding, one query)

for each stage (frame-to-frame Hamming similarities, comparator) and K in --candidates.

    python benchmarks/fine_batching_bench.py                  # n = 2 and 8 requests, K = 5 and 50

Writes benchmarks/results/fine_batching.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dnsvr.client import spec
from dnsvr.export.graphs import ComparatorGraph
from dnsvr.export.hamming import KERNEL, HammingFineSimilarity
from dnsvr.export.onnx_export import example_feeds, export_onnx
from dnsvr.training import load_checkpoint, paths

RESULTS = Path(__file__).resolve().parent / "results" / "fine_batching.md"
FRAMES = 60


def median_ms(call: Callable[[], object], runs: int) -> float:
    call()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, nargs="+", default=[2, 8], help="concurrent requests n")
    parser.add_argument("--candidates", type=int, nargs="+", default=[5, 50], help="pairs per request K")
    parser.add_argument("--threads", type=int, default=2, help="kernel and comparator threads (cpu_local: 2)")
    parser.add_argument("--runs", type=int, default=10, help="timed rounds (median reported)")
    args = parser.parse_args()
    student = load_checkpoint(paths.shared_dir() / "golden" / "fg_bin_student.pth")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        comparator = export_onnx(ComparatorGraph(student), spec.FINE_COMPARATOR, Path(tmp) / "comparator.onnx")
        kernel = HammingFineSimilarity(comparator, threads=args.threads, intra_op_threads=args.threads)
        for k in args.candidates:
            for n in args.requests:
                one = kernel.validate(example_feeds(spec.FINE_SIMILARITY_BIN, [FRAMES] * k, FRAMES, FRAMES, FRAMES))
                all_ = kernel.validate(example_feeds(spec.FINE_SIMILARITY_BIN, [FRAMES] * (n * k), FRAMES, FRAMES,
                                                     FRAMES))
                f2f_one, f2f_all = kernel.frame_similarities(one), kernel.frame_similarities(all_)
                row = {"n": n, "k": k}
                row["f2f separate"] = median_ms(lambda o=one, n=n: [kernel.frame_similarities(o) for _ in range(n)],
                                                args.runs)
                row["f2f together"] = median_ms(lambda a=all_: kernel.frame_similarities(a), args.runs)
                row["cmp separate"] = median_ms(lambda o=one, f=f2f_one, n=n: [kernel.compare(f, o) for _ in range(n)],
                                                args.runs)
                row["cmp together"] = median_ms(lambda a=all_, f=f2f_all: kernel.compare(f, a), args.runs)
                rows.append(row)
                print(row)
        kernel.close()
    lines = [f"# Fine similarity across requests: n requests of K pairs vs one call of n*K (T = {FRAMES})", "",
             f"Machine: {platform.machine()}, 2 cores shared with other jobs; kernel {KERNEL}, {args.threads} threads "
             f"for the kernel and the comparator; median of {args.runs}.  `python benchmarks/fine_batching_bench.py`.",
             "", "| n requests | K pairs each | Hamming f2f: separate ms | together ms | comparator: separate ms | "
             "together ms | total: together / separate |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        separate = row["f2f separate"] + row["cmp separate"]
        together = row["f2f together"] + row["cmp together"]
        lines.append(f"| {row['n']} | {row['k']} | {row['f2f separate']:.1f} | {row['f2f together']:.1f} | "
                     f"{row['cmp separate']:.1f} | {row['cmp together']:.1f} | {together / separate:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
