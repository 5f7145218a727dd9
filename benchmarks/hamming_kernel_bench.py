"""The AVX-512 Hamming kernel of S^f_B (`export/_hamming.c`) as it is vs as it was at a git revision, side by side.

Both sources are compiled here the same way (`cc -O3 -shared -fPIC`, this Python's headers), loaded in this
process under names of their own, and timed in turn on the same codes: `dnsvr.export.hamming.frame_hamming`
(lanes layout, tiles, the kernel) of one query of T = 60 frames against K = 50 candidates of T = 60 frames (9
regions x 512 bits, random codes), on one thread and on a pool of 2, `--rounds` rounds of `--repeats` calls
each.  Reported: the median ms per call, the ratio, and whether both give the same integers.

    python benchmarks/hamming_kernel_bench.py --baseline 51c7d7f [--rounds 7] [--candidates 50]

Needs a C compiler and a CPU with AVX-512 VPOPCNTDQ.  Writes benchmarks/results/hamming_kernel.md (`--out`).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import platform
import statistics
import subprocess
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
from dnsvr.client import spec
from dnsvr.export import hamming
from revision_ab_bench import ROOT, at_revision
from tqdm import tqdm

SOURCE = "export/_hamming.c"
RESULTS = Path(__file__).resolve().parent / "results" / "hamming_kernel.md"


def compiled(source: bytes, folder: Path, label: str) -> ModuleType:
    """The extension built from `source` (C text) into `folder`, loaded as module `label`._hamming."""
    (folder / label).mkdir()
    c_file, library = folder / label / "_hamming.c", folder / label / "_hamming.so"
    c_file.write_bytes(source)
    subprocess.run([os.environ.get("CC", "cc"), "-O3", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
                    str(c_file), "-o", str(library)], check=True)
    loader = importlib.machinery.ExtensionFileLoader(f"{label}._hamming", str(library))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the git revision whose export/_hamming.c is the baseline")
    parser.add_argument("--rounds", type=int, default=7, help="rounds, each timing both (default 7)")
    parser.add_argument("--repeats", type=int, default=10, help="calls per round and side (default 10)")
    parser.add_argument("--candidates", type=int, default=50, help="K (default 50)")
    parser.add_argument("--frames", type=int, default=60, help="T of the query and of every candidate (default 60)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    query = rng.integers(0, 256, (args.frames, spec.REGIONS, spec.CODE_BYTES), dtype=np.uint8)
    frames = rng.integers(0, 256, (args.candidates * args.frames, spec.REGIONS, spec.CODE_BYTES), dtype=np.uint8)
    times: dict[tuple[int, str], list[float]] = {}
    outputs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="hamming-kernel-") as folder:
        kernels = {"current": compiled((ROOT / SOURCE).read_bytes(), Path(folder), "current"),
                   "baseline": compiled(at_revision(args.baseline, SOURCE), Path(folder), "baseline")}
        if not all(kernel.available() for kernel in kernels.values()):
            raise SystemExit("this CPU has no AVX-512 VPOPCNTDQ: nothing to compare")
        built = hamming._hamming
        try:
            with ThreadPoolExecutor(2) as pool:
                for round_ in tqdm(range(args.rounds), desc="rounds"):
                    for threads in (1, 2):
                        for name in (list(kernels) if round_ % 2 == 0 else list(kernels)[::-1]):
                            hamming._hamming = kernels[name]
                            began = time.perf_counter()
                            for _ in range(args.repeats):
                                outputs[name] = hamming.frame_hamming(query, frames, pool if threads > 1 else None,
                                                                      kernel="avx512")
                            times.setdefault((threads, name), []).append(
                                1000 * (time.perf_counter() - began) / args.repeats)
        finally:
            hamming._hamming = built
    write_report(args, times, np.array_equal(outputs["current"], outputs["baseline"]))


def write_report(args: argparse.Namespace, times: dict[tuple[int, str], list[float]], same: bool) -> None:
    lines = ["# The AVX-512 Hamming kernel of S^f_B: current vs baseline source, side by side", "",
             f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores.  `python benchmarks/"
             f"hamming_kernel_bench.py --baseline {args.baseline} --rounds {args.rounds} --repeats {args.repeats} "
             f"--candidates {args.candidates} --frames {args.frames}`: `frame_hamming` of one query of T = "
             f"{args.frames} frames against K = {args.candidates} candidates of T = {args.frames} frames (9 regions "
             "x 512 bits, random codes), both sources compiled with `cc -O3`.  Median ms per call over the rounds.",
             "", f"| threads | current | baseline ({args.baseline}) | baseline / current |", "|---:|---:|---:|---:|"]
    for threads in (1, 2):
        current, baseline = (statistics.median(times[threads, name]) for name in ("current", "baseline"))
        lines.append(f"| {threads} | {current:.2f} | {baseline:.2f} | {baseline / current:.2f}x |")
    lines += ["", f"Same integers from both: {'yes' if same else 'NO'}."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
