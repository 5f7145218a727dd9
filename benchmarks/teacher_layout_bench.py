"""The Chamfer teacher over a richer region layout: the frame's regions plus those of zoomed-in crops.

Issue #15 asks for a teacher that holds up on hard copies, picture-in-picture (PiP) first: an inset of 0.2-0.65
of the frame's side shows the source at a smaller scale than any of the 9 regions of the full frame (3x3 iMAC
over EfficientNet-Lite0 stages 6 + 7) can match.  This measures the parameter-free Chamfer teacher with the
target side's regions taken at several scales: beside the full frame's 9 regions, the 9 regions of each crop of
a grid of crops of CROP of the side every STRIDE (`--crops CROP:STRIDE ...`), each resized to 224 x 224, so that
a crop around an inset sees the source near the scale the query was taken at.  The query side keeps the full
frame's 9 regions (a query is an original; Chamfer asks where each of its regions is found in the target).
Region Chamfer then takes, per query region, the best match over all the target's regions.

    .venv/bin/python benchmarks/teacher_layout_bench.py                      # held-out preset, crops 0.5 / 0.25
    .venv/bin/python benchmarks/teacher_layout_bench.py --crops 0.5:0.25 0.3:0.175   # two grids, and both
    .venv/bin/python benchmarks/teacher_layout_bench.py --turns              # and queries turned 0-3 quarter turns
    .venv/bin/python benchmarks/teacher_layout_bench.py --turns --blurs 1.5  # and turned + blurred queries

Layouts compared, side by side on the same benchmark and frames: `full` (9 regions, the bundled teacher's),
`full + crops` (9 + 9 per crop on the target side), each with `--turns` also scored by the query turned 0-3
quarter turns (its best orientation counting, as `ChamferTeacher` with `TeacherLayout(query_turns=True)`), and
each with `--blurs` also by the query offered blurred by each sigma too (on top of its turns with `--turns`; the
best counting, as `TeacherLayout(query_blurs=...)`).
Prints mAP overall, per difficulty and per edit, and ms per query; `--out FILE` writes the table.  Features of
the crops are cached beside the benchmark's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from dnsvr.training.data.crop_regions import FULL_FRAME_REGIONS, CropLayout, TeacherLayout, best_orientation_chamfer
from dnsvr.training.evaluation.nd_benchmark import PRESETS, default_cache_dir
from dnsvr.training.evaluation.tradeoff import (
    benchmark_crop_features,
    benchmark_with_features,
    difficulty_cells,
    difficulty_columns,
    finish_report,
)


def offered_queries(benchmark, extractor, full: dict[str, np.ndarray], layout: TeacherLayout) -> dict[str, np.ndarray]:
    """{query: `[O, T, 9, 512]`}: the query's regions as filmed, then of its frames turned by 1, 2 and 3 quarter
    turns and blurred by each sigma as `layout` offers them (its query side), so a copy filmed sideways or
    blurred finds its source."""
    return {query: layout.query_sides(torch.from_numpy(layout.regions(benchmark.frames(query), extractor,
                                                                      full[query]))).numpy()
            for query in benchmark.queries}


def similarities(benchmark, queries: dict[str, np.ndarray], targets: dict[str, np.ndarray]) -> tuple[dict, float]:
    """{query: {other video: Chamfer(query regions, target regions)}}, ms per query; a query of several
    orientations (`[O, T, 9, D]`) scores a target by its best (the teacher's rule, `best_orientation_chamfer`)."""
    result, began = {}, time.perf_counter()
    for query in benchmark.queries:
        q = torch.from_numpy(queries[query])
        sides = q if q.ndim == 4 else q[None]  # [O, T, 9, D]
        result[query] = {v: float(best_orientation_chamfer(sides, torch.from_numpy(targets[v])[None])[0])
                         for v in benchmark.videos if v != query}
    return result, 1000 * (time.perf_counter() - began) / len(benchmark.queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="heldout", choices=list(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crops", nargs="+", default=["0.5:0.25"], metavar="CROP:STRIDE",
                        help="crop grids, each CROP:STRIDE (fractions of the frame's side; default 0.5:0.25); "
                             "with several, each alone and all together are compared")
    parser.add_argument("--turns", action="store_true",
                        help="also score every layout with the query's frames turned by 0-3 quarter turns, each "
                             "target scored by the query's best orientation")
    parser.add_argument("--blurs", type=float, nargs="+", default=[], metavar="SIGMA",
                        help="also score every layout with the query offered blurred by each Gaussian SIGMA too "
                             "(pixels of a 224-pixel side), with its turns under --turns")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    pack, benchmark, full = benchmark_with_features(args.preset, args.seed)
    extractor = pack.load_extractor()
    grids = {}
    for text in args.crops:
        layout = CropLayout.parse(text)
        grids[f"{len(layout.boxes)} crops of {layout.crop:g}"] = benchmark_crop_features(
            benchmark, pack, layout, default_cache_dir())
    if len(grids) > 1:
        grids[" + ".join(grids)] = {v: np.concatenate([crops[v] for crops in grids.values()], axis=1) for v in full}
    layouts = {"full (9 regions)": full}
    for name, crops in grids.items():
        regions = FULL_FRAME_REGIONS + next(iter(crops.values())).shape[1]
        layouts[f"full + {name} ({regions} regions, target side)"] = {
            v: np.concatenate([full[v], crops[v]], axis=1) for v in full}
    header, separator = difficulty_columns()
    lines = [f"Benchmark: preset {args.preset}, seed {args.seed}, {len(benchmark.queries)} queries, "
             f"{len(benchmark.videos)} videos; Chamfer teacher over the pack's extractor ({pack.version}); query "
             "side: the full frame's 9 regions.", "",
             f"| target regions | {header} | ms / query |", f"|---|{separator}---|"]
    query_sides = {"": full}
    if args.turns:
        layout = TeacherLayout(query_turns=True)
        query_sides[", " + layout.describe().split(", ", 1)[1]] = offered_queries(benchmark, extractor, full, layout)
    if args.blurs:
        layout = TeacherLayout(query_turns=args.turns, query_blurs=tuple(args.blurs))
        query_sides[", " + layout.describe().split(", ", 1)[1]] = offered_queries(benchmark, extractor, full, layout)
    by_edit = {}
    for name, targets in layouts.items():
        for side, queries in query_sides.items():
            scores, ms = similarities(benchmark, queries, targets)
            by_edit[name + side] = benchmark.evaluate_edits(scores)
            lines.append(f"| {name}{side} | {difficulty_cells(benchmark.evaluate(scores))} | {ms:.0f} |")
            print(lines[-1], flush=True)
    finish_report(lines, by_edit, args.out)


if __name__ == "__main__":
    main()
