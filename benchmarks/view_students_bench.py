"""Packs compared on the index a served pack builds (crop views), side by side: do students distilled on crop
views hold up better than students distilled on full frames?

    .venv/bin/python benchmarks/view_students_bench.py --packs bundled=training/packs/bundled \
        views=/tmp/packs/views --presets heldout small --seeds 0 1 2 \
        --out benchmarks/results/view_students.md

Issue #15.  The served index stores every video by its full frame and the zoomed crops of the pack's grid
(`index_views`, 0.5:0.25: 10 views), S^c scoring a target by its best view, S^f_B comparing the full frame or (an
export with `--view-codes`) the view S^c ranks best; a query keeps its full frame.  For each pack, preset and
benchmark seed, on the same benchmark videos and crop features (cached beside the benchmark's): S^c by its best
view (with and without the pack's segment views, `--segments`), S^f_B on every candidate (the full frame; the
best view), the S^c top 5 / 20 % re-ordered by S^f_B on the best view, and DnS at 5 / 10 % with the pack's
selector and default fusion (S^f_B on the best view).  mAP overall and on the hard copies, the mean over seeds;
no timing (the networks' cost does not change: the same architectures and sizes).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from dnsvr.training.data.segments import SegmentLayout
from dnsvr.training.evaluation.nd_benchmark import PRESETS, default_cache_dir
from dnsvr.training.evaluation.tradeoff import (
    benchmark_crop_features,
    benchmark_with_features,
    fine_scorer,
    index_videos,
)
from dnsvr.training.files import atomic_write_text
from dnsvr.training.packs.model_pack import ModelPack
from fusion_policies import evaluate

METHODS = (  # (label, index, score_query method, fraction, fusion: None = the method's own, "pack" = the pack's)
    ("S^c, best view", "views", "coarse", 0.0, None),
    ("S^c, best view or segment window", "views + segments", "coarse", 0.0, None),
    ("S^f_B, every candidate, full frame", "views", "fine", 0.0, None),
    ("S^f_B, every candidate, best view", "best view", "fine", 0.0, None),
    ("S^c top 5% re-ordered by S^f_B (best view)", "best view", "topk", 0.05, None),
    ("S^c top 20% re-ordered by S^f_B (best view)", "best view", "topk", 0.2, None),
    ("DnS 5% (best view)", "best view", "dns", 0.05, "pack"),
    ("DnS 10% (best view)", "best view", "dns", 0.1, "pack"),
)


def pack_results(pack_dir: str, preset: str, seed: int, segments: SegmentLayout | None
                 ) -> dict[str, tuple[float, float]]:
    """{method label: (mAP, hard mAP)} of one pack on one benchmark preset and seed."""
    pack, benchmark, features = benchmark_with_features(preset, seed, pack_dir, progress=False)
    if pack.index_views is None:
        raise SystemExit(f"{pack_dir}: the pack indexes no crop views (pack.json \"index_views\")")
    crops = benchmark_crop_features(benchmark, pack, pack.index_views, default_cache_dir(), progress=False)
    coarse, selector, fine = pack.load("coarse"), pack.load("selector").eval(), fine_scorer(pack.load("fine"))
    views = index_videos(features, coarse, selector, [fine], progress=False, crops=crops)
    indices = {"views": dataclasses.replace(views, fine_targets=None),
               "best view": dataclasses.replace(views, fine_view="best")}
    segments = segments or pack.index_segments
    if segments is not None:
        windows = index_videos(features, coarse, selector, [], progress=False, segments=segments).coarse_views
        indices["views + segments"] = dataclasses.replace(
            indices["views"], coarse_views=torch.cat([views.coarse_views, windows[:, 1:]], 1))
    results = {}
    for label, index_name, method, fraction, fusion in METHODS:
        if index_name not in indices:
            continue
        fusion = pack.default_fusion if fusion == "pack" else fusion
        results[label] = evaluate(benchmark, indices[index_name], method, selector=selector, scorer=fine,
                                  fraction=fraction, fusion=fusion, calibration=pack.calibration)
        print(f"{Path(pack_dir).name} {preset} {seed} {label}: {results[label][0]:.4f} / {results[label][1]:.4f}",
              flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packs", nargs="+", required=True, metavar="NAME=DIR",
                        help="the packs compared, each a column group (e.g. bundled=training/packs/bundled)")
    parser.add_argument("--presets", nargs="+", default=["heldout"], choices=list(PRESETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="benchmark seeds (default: 0)")
    parser.add_argument("--segments", type=SegmentLayout.parse, default=None, metavar="L1,L2,...",
                        help="segment-view window lengths (default: each pack's index_segments; none: no row)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    packs = dict(item.split("=", 1) for item in args.packs)
    runs = {(name, preset, seed): pack_results(directory, preset, seed, args.segments)
            for name, directory in packs.items() for preset in args.presets for seed in args.seeds}
    columns = [(name, preset) for preset in args.presets for name in packs]
    versions = {name: ModelPack.from_dir(directory).version for name, directory in packs.items()}
    lines = ["Packs on the served index (crop views; `benchmarks/view_students_bench.py`): "
             + ", ".join(f"{name} = `{directory}` ({versions[name]})" for name, directory in packs.items())
             + f"; benchmark seeds {' '.join(map(str, args.seeds))}. Cells: mAP / mAP on hard copies, the mean "
             "over seeds.", "",
             "| method | " + " | ".join(f"{preset}: {name}" for name, preset in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for label, *_ in METHODS:
        cells = []
        for name, preset in columns:
            values = [runs[name, preset, seed].get(label) for seed in args.seeds]
            if any(value is None for value in values):
                cells.append("")
                continue
            mean = np.mean(np.array(values), axis=0)
            cells.append(f"{mean[0]:.4f} / {mean[1]:.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
