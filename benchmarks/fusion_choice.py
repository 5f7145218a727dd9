"""Does the teacher's choice of a pack's default fusion pick what the benchmark would? Both, side by side.

    .venv/bin/python benchmarks/fusion_choice.py \
        --pack bundled=training/packs/bundled,WORK/corpus.h5,WORK/pairs_round0.json \
        --pack crops=PACK,WORK/corpus.h5,WORK/pairs_round0.json [--presets small medium heldout] \
        [--seeds 0] [--out benchmarks/results/fusion_choice.md]

For each pack (NAME=PACK_DIR,FEATURES,PAIRS: the corpus features and teacher pairs it was distilled on):
`dnsvr train fusion`'s measurement (`fusion_choice.measure_fusions`: nDCG@10 against the teacher on the pack's
own corpus; nothing written), then the near-duplicate benchmark's mAP of DnS with the pack's selector at the
same budgets under each fusion, per preset and benchmark seed (another seed: other videos, edits and queries),
with S^c alone and S^f_B re-ranking everything for scale, and which fusion the benchmark would have chosen (best
mean mAP over presets, seeds and budgets).  The benchmark's labels are never shown to the choice: it is the
check of the choice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from dnsvr.training.distill.fusion_choice import BUDGETS, choose_pack_fusion, pick_fusion
from dnsvr.training.evaluation.nd_benchmark import PRESETS
from dnsvr.training.evaluation.tradeoff import benchmark_with_features, fine_scorer, index_videos
from dnsvr.training.files import atomic_write_text
from dnsvr.training.ranking import FUSIONS
from fusion_policies import evaluate


def benchmark_maps(pack_dir: str, preset: str, seed: int, fusions: list[str]) -> dict[str, dict]:
    """{fusion: {budget: mAP}} of DnS with the pack's selector on one preset and seed, plus "S^c" and "S^f_B"
    ({"all": mAP}: alone, every candidate)."""
    pack, benchmark, features = benchmark_with_features(preset, seed, pack_dir, progress=False)
    fine, selector = fine_scorer(pack.load("fine")), pack.load("selector").eval()
    index = index_videos(features, pack.load("coarse"), selector, [fine], progress=False)
    maps: dict[str, dict] = {fusion: {budget: evaluate(benchmark, index, "dns", selector=selector, scorer=fine,
                                                       fraction=budget, fusion=fusion,
                                                       calibration=pack.calibration)[0]
                                      for budget in BUDGETS} for fusion in fusions}
    maps["S^c"] = {"all": evaluate(benchmark, index, "coarse")[0]}
    maps["S^f_B"] = {"all": evaluate(benchmark, index, "fine", scorer=fine)[0]}
    return maps


def pack_section(name: str, spec: str, presets: list[str], seeds: list[int]) -> tuple[list[str], bool]:
    """Markdown lines of one pack, and whether the teacher's choice is the benchmark's."""
    pack_dir, features, pairs = spec.split(",")
    choice = choose_pack_fusion(pack_dir, features, pairs, write=False, progress=False)
    fusions = [f for f in FUSIONS if f in choice.ndcg]
    runs = [(preset, seed) for preset in presets for seed in seeds]
    maps = {run: benchmark_maps(pack_dir, *run, fusions) for run in runs}
    means = {f: float(np.mean([maps[run][f][b] for run in runs for b in BUDGETS])) for f in fusions}
    benchmark_choice = pick_fusion(means)
    budgets = [f"{b:g}" for b in BUDGETS]
    named = [f"{p}" if len(seeds) == 1 else f"{p} seed {s}" for p, s in runs]
    lines = [f"## `{name}` ({pack_dir})", "",
             f"Chosen by the teacher: **{choice.fusion}**; by the benchmark (same rule, mean mAP): "
             f"**{benchmark_choice}**. Selector picks, median S^c rank on the corpus: "
             + ", ".join(f"{b}: {r:g}" for b, r in choice.picks_median_rank.items() if r is not None) + ".", "",
             "| fusion | " + " | ".join(f"teacher nDCG@10 at {b}" for b in budgets) + " | "
             + " | ".join(f"{n} mAP at {b}" for n in named for b in budgets) + " | benchmark mean |",
             "|---|" + "---:|" * (len(budgets) * (1 + len(runs)) + 1)]
    for fusion in fusions:
        cells = [f"{choice.ndcg[fusion][b]:.4f}" for b in budgets]
        cells += [f"{maps[run][fusion][b]:.4f}" for run in runs for b in BUDGETS]
        lines.append(f"| {fusion} | " + " | ".join(cells) + f" | {means[fusion]:.4f} |")
    for alone in ("S^c", "S^f_B"):
        cells = ["" for _ in budgets] + [f"{maps[run][alone]['all']:.4f}" for run in runs for _ in BUDGETS]
        mean = float(np.mean([maps[run][alone]["all"] for run in runs]))
        lines.append(f"| {alone} alone (every candidate) | " + " | ".join(cells) + f" | {mean:.4f} |")
    lines += ["", f"S^c alone / fine re-ranking all on the corpus (nDCG@10): {choice.coarse:.4f} / "
              f"{choice.fine_all:.4f}.", ""]
    print("\n".join(lines), flush=True)
    return lines, choice.fusion == benchmark_choice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", action="append", required=True, metavar="NAME=PACK_DIR,FEATURES,PAIRS",
                        help="a pack and the corpus features and teacher pairs it was distilled on (repeatable)")
    parser.add_argument("--presets", nargs="+", default=["small", "medium", "heldout"], choices=PRESETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="benchmark seeds (default: 0)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report as markdown here")
    args = parser.parse_args()
    lines = ["# The pack's default fusion: the teacher's choice against the benchmark's "
             "(`benchmarks/fusion_choice.py`)", "",
             f"Budgets {', '.join(f'{b:g}' for b in BUDGETS)}; presets {', '.join(args.presets)} (seeds "
             f"{', '.join(map(str, args.seeds))}). The "
             "choice reads only the pack's corpus and teacher pairs; the benchmark's mAP checks it.", ""]
    agreed = 0
    for item in args.pack:
        name, spec = item.split("=", 1)
        section, same = pack_section(name, spec, args.presets, args.seeds)
        lines += section
        agreed += same
    lines.append(f"The teacher's choice is the benchmark's for {agreed} of {len(args.pack)} packs.")
    print(lines[-1])
    if args.out:
        atomic_write_text(args.out, "\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
