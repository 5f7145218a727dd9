"""Which re-rank fusion a pack that indexes by crop views should serve: the served index (S^c by a target's best
view, S^f_B on the full frame's codes) by every policy and fusion, per preset, mean over benchmark seeds.

    .venv/bin/python benchmarks/view_fusions.py --out benchmarks/results/view_fusions.md

With crop views (`index_views` in pack.json; `dnsvr_index` stores them, `VideoStore.search_coarse` ranks by the
best view) the coarse scores are maxima over 10 vectors a video, a higher scale than the full-frame scores the
pack's calibration was fitted on and the paper's mix assumes.  This measures, on the same index and networks,
S^c alone, S^f_B on every candidate, DnS (the selector's picks) and the top-k cascade at 5/10/20 % with each
fusion (`ranking.FUSIONS`).  mAP only (`crop_views_bench.py` has the timing); crop features come from the
benchmark's cache (`benchmark_crop_features`), so a run over cached seeds takes about a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from dnsvr.training.data.crop_regions import CropLayout
from dnsvr.training.evaluation.nd_benchmark import PRESETS, default_cache_dir
from dnsvr.training.evaluation.tradeoff import (
    benchmark_crop_features,
    benchmark_with_features,
    fine_scorer,
    index_videos,
)
from dnsvr.training.files import atomic_write_text
from dnsvr.training.ranking import FUSIONS
from fusion_policies import evaluate

BUDGETS = (0.05, 0.1, 0.2)


def policies() -> list[tuple[str, str, float, str | None]]:
    """(label, score_query method, fraction, fusion) of every row."""
    rows = [("S^c, best view", "coarse", 0.0, None), ("S^f_B, every candidate", "fine", 0.0, None)]
    for method, name in (("dns", "DnS"), ("topk", "S^c top-k re-ordered")):
        rows += [(f"{name} {budget:.0%}, {fusion}", method, budget, fusion)
                 for budget in BUDGETS for fusion in FUSIONS]
    return rows


def measure(preset: str, seed: int, layout: CropLayout, pack_dir: str | None) -> dict[str, float]:
    """{row label: mAP} of one preset and seed, the served index: S^c crop views, S^f_B full frames."""
    pack, benchmark, features = benchmark_with_features(preset, seed, pack_dir, progress=False)
    crops = benchmark_crop_features(benchmark, pack, layout, default_cache_dir())
    coarse, selector, fine = pack.load("coarse"), pack.load("selector").eval(), fine_scorer(pack.load("fine"))
    index = dataclasses.replace(index_videos(features, coarse, selector, [fine], progress=False, crops=crops),
                                fine_targets=None)
    results = {}
    for label, method, fraction, fusion in policies():
        results[label] = evaluate(benchmark, index, method, selector=selector, scorer=fine, fraction=fraction,
                                  fusion=fusion, calibration=pack.calibration)[0]
        print(f"{preset} {seed} {label}: {results[label]:.4f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["heldout", "small"], choices=list(PRESETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="benchmark seeds (default: 0 1 2)")
    parser.add_argument("--grid", default="0.5:0.25", metavar="CROP:STRIDE", help="crop grid (default: 0.5:0.25)")
    parser.add_argument("--pack", default=None, help="model pack directory (default: the bundled pack)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    layout = CropLayout.parse(args.grid)
    runs = {(preset, seed): measure(preset, seed, layout, args.pack) for preset in args.presets for seed in args.seeds}
    lines = [f"The served index of a pack with crop views (grid {args.grid}: S^c by a target's best view, S^f_B on "
             f"the full frame's codes; `benchmarks/view_fusions.py`), pack {args.pack or 'bundled'}, mAP, the mean "
             f"over benchmark seeds {' '.join(map(str, args.seeds))}.", "",
             "| policy | " + " | ".join(args.presets) + " |", "|---|" + "---:|" * len(args.presets)]
    for label, *_ in policies():
        means = [np.mean([runs[preset, seed][label] for seed in args.seeds]) for preset in args.presets]
        lines.append(f"| {label} | " + " | ".join(f"{value:.4f}" for value in means) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        atomic_write_text(args.out, table)


if __name__ == "__main__":
    main()
