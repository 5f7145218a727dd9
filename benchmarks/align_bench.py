"""Copy localisation (`training/localisation.py`, `align`) as it is vs as it was at a git revision, side by side.

Both versions of the module are loaded in this process and run in turn on the same 60 x 60 frame-to-frame maps
(unrelated frames around 0.15, under the 0.7 threshold; copied frames at 0.9-0.95): an unrelated pair, a
full-length copy (the diagonal), a 20-frame partial copy.  Reported: the median ms per call over `--rounds`
rounds of `--repeats` calls, the ratio, and whether both found the same segments.

    python benchmarks/align_bench.py --baseline 51c7d7f [--rounds 7]

Writes benchmarks/results/align.md (`--out`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
from revision_ab_bench import ROOT, at_revision

SOURCE = "training/localisation.py"
RESULTS = Path(__file__).resolve().parent / "results" / "align.md"


def loaded(source: bytes, folder: Path, name: str) -> ModuleType:
    """The module of Python text `source`, loaded as `name`."""
    path = folder / f"{name}.py"
    path.write_bytes(source)
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path))
    sys.modules[name] = module  # its dataclasses look their module up
    module.__spec__.loader.exec_module(module)
    return module


def maps() -> dict[str, np.ndarray]:
    """The three pairs' maps, float32 [60, 60]."""
    rng = np.random.default_rng(0)
    unrelated = rng.uniform(-0.1, 0.4, (60, 60)).astype(np.float32)
    full = unrelated.copy()
    np.fill_diagonal(full, 0.95)
    partial = unrelated.copy()
    partial[np.arange(10, 30), np.arange(30, 50)] = 0.9
    return {"unrelated pair": unrelated, "full-length copy": full, "20-frame partial copy": partial}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the git revision whose training/localisation.py is the "
                        "baseline")
    parser.add_argument("--rounds", type=int, default=7, help="rounds, each timing both (default 7)")
    parser.add_argument("--repeats", type=int, default=20, help="calls per round, side and map (default 20)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report file (default: {RESULTS})")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="align-bench-") as folder:
        versions = {"current": loaded((ROOT / SOURCE).read_bytes(), Path(folder), "localisation_current"),
                    "baseline": loaded(at_revision(args.baseline, SOURCE), Path(folder), "localisation_baseline")}
        times: dict[tuple[str, str], list[float]] = {}
        found: dict[tuple[str, str], list] = {}
        for round_ in range(args.rounds):
            for pair, f2f in maps().items():
                for name in (list(versions) if round_ % 2 == 0 else list(versions)[::-1]):
                    began = time.perf_counter()
                    for _ in range(args.repeats):
                        segments = versions[name].align(f2f, 1.0, 1.0)
                    times.setdefault((pair, name), []).append(1000 * (time.perf_counter() - began) / args.repeats)
                    found[pair, name] = [tuple(vars(segment).values()) for segment in segments]
    write_report(args, times, all(found[pair, "current"] == found[pair, "baseline"] for pair in maps()))


def write_report(args: argparse.Namespace, times: dict[tuple[str, str], list[float]], same: bool) -> None:
    lines = ["# Copy localisation (`align`): current vs baseline source, side by side", "",
             f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores.  `python benchmarks/align_bench.py "
             f"--baseline {args.baseline} --rounds {args.rounds} --repeats {args.repeats}`: one 60 x 60 map per "
             "call.  Median ms per call over the rounds.", "",
             f"| pair | current | baseline ({args.baseline}) | baseline / current |", "|---|---:|---:|---:|"]
    for pair in maps():
        current, baseline = (statistics.median(times[pair, name]) for name in ("current", "baseline"))
        lines.append(f"| {pair} | {current:.3f} | {baseline:.3f} | {baseline / current:.1f}x |")
    lines += ["", f"Same segments from both: {'yes' if same else 'NO'}."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
