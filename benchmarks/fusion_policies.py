"""Which re-rank picks and fusions pay: mAP of DnS at small re-rank budgets, side by side in one run.

    .venv/bin/python benchmarks/fusion_policies.py [--presets small medium] [--pack DIR]
        [--selector NAME=CHECKPOINT ...] [--out benchmarks/results/fusion_policies.md]

On the near-duplicate benchmark (`dnsvr eval benchmark`'s presets, features cached the same way), for every
query against every other video: S^c alone, S^f_B alone, and at each budget of `FRACTIONS` the picks of each
selector (the pack's own, plus any `--selector NAME=CHECKPOINT`, e.g. one trained with `dnsvr train selector
--pairs-from retrieval`) and of the S^c top-k (no selector), each merged by every fusion of `ranking.FUSIONS`
('calibrated' with the pack's calibration, so only for packs that have one).  mAP overall and on the hard
copies; no timing (`dnsvr eval benchmark` times the methods).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from dnsvr.training.evaluation.nd_benchmark import PRESETS
from dnsvr.training.evaluation.tradeoff import benchmark_with_features, fine_scorer, index_videos, score_query
from dnsvr.training.files import atomic_write_text
from dnsvr.training.networks.checkpoints import load_checkpoint
from dnsvr.training.ranking import usable_fusions

FRACTIONS = (0.02, 0.05, 0.1, 0.2)


def evaluate(benchmark, index, method: str, **kwargs) -> tuple[float, float]:
    """(mAP overall, mAP on hard copies) of `score_query(method, **kwargs)` over every benchmark query."""
    position = index.position()
    similarities = {}
    for query in benchmark.queries:
        q = position[query]
        targets = np.array([i for i in range(len(index.ids)) if i != q])
        scores, _ = score_query(index, q, targets, method, **kwargs)
        similarities[query] = {index.ids[t]: float(s) for t, s in zip(targets, scores, strict=True)}
    result = benchmark.evaluate(similarities)
    return result["overall"]["mAP"], result.get("hard", {}).get("mAP", float("nan"))


def preset_rows(preset: str, pack_dir: str | None, selectors: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """Markdown rows (method, budget, mAP, hard mAP) of one benchmark preset."""
    pack, benchmark, features = benchmark_with_features(preset, 0, pack_dir, progress=False)
    fine = fine_scorer(pack.load("fine"))
    networks = {"pack selector": pack.load("selector").eval()}
    networks |= {name: load_checkpoint(path, kind="selector").eval() for name, path in selectors.items()}
    calibration = pack.calibration
    fusions = usable_fusions(calibration)
    rows = []

    coarse = pack.load("coarse")
    indices = {name: index_videos(features, coarse, network, [fine], progress=False)
               for name, network in networks.items()}  # each selector's per-video scalars

    def add(label: str, budget: str, index, method: str, **kwargs) -> None:
        overall, hard = evaluate(benchmark, index, method, **kwargs)
        rows.append((label, budget, f"{overall:.4f}", f"{hard:.4f}"))
        print(f"{preset:7s} {label:42s} {budget:>5s}  mAP {overall:.4f}  hard {hard:.4f}", flush=True)

    index = indices["pack selector"]
    add("S^c", "—", index, "coarse")
    add("S^f_B", "all", index, "fine", scorer=fine)
    for fraction in FRACTIONS:
        for fusion in fusions:
            add(f"S^c top-k, {fusion}", f"{fraction:g}", index, "topk", scorer=fine, fraction=fraction,
                fusion=fusion, calibration=calibration)
        for name, network in networks.items():
            for fusion in fusions:
                add(f"{name}, {fusion}", f"{fraction:g}", indices[name], "dns", selector=network, scorer=fine,
                    fraction=fraction, fusion=fusion, calibration=calibration)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "medium"], choices=PRESETS)
    parser.add_argument("--pack", default=None, help="model pack folder (default: the bundled pack)")
    parser.add_argument("--selector", action="append", default=[], metavar="NAME=CHECKPOINT",
                        help="another selector checkpoint to compare (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as markdown here")
    args = parser.parse_args()
    selectors = dict(item.split("=", 1) for item in args.selector)
    lines = ["# Re-rank picks and fusions (`benchmarks/fusion_policies.py`)", "",
             f"Pack: {args.pack or 'bundled'}; extra selectors: {selectors or 'none'}. mAP over every query "
             "against every other video of the preset (seed 0).", ""]
    for preset in args.presets:
        lines += [f"## Preset `{preset}`", "", "| picks, fusion | re-rank fraction | mAP | mAP (hard) |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {' | '.join(row)} |" for row in preset_rows(preset, args.pack, selectors)]
        lines.append("")
    if args.out:
        atomic_write_text(args.out, "\n".join(lines))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
