"""Why the selector does not pay off on our benchmark: the students' score scales and what the selector favours.

    .venv/bin/python benchmarks/score_scales.py [--preset small] [--seed 0] [--pack DIR]

For every query/target pair of the benchmark (features cached like `dnsvr eval benchmark`): S^c's score,
S^f_B's and the teacher's mapped s/2+0.5, and the selector's probability.  Prints the quartiles of each
score over true copies and over the other videos (DnS compares a re-ranked pair's fine score with the other
pairs' coarse scores, so the scales must agree), and the selector's mean probability by S^c band with its
Spearman correlation to S^c (where the selector sends pairs to the fine student), and S^f_B's score of each
video with itself (the top of its scale; the teacher's is 1).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from dnsvr.training.evaluation.tradeoff import (
    ChamferScorer,
    benchmark_with_features,
    fine_scorer,
    index_videos,
    score_query,
)

BANDS = ((0.0, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01))


def ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "medium"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pack", default=None, help="model pack folder (default: the bundled pack)")
    args = parser.parse_args()

    pack, benchmark, features = benchmark_with_features(args.preset, args.seed, args.pack)
    selector, fine, teacher = pack.load("selector").eval(), fine_scorer(pack.load("fine")), ChamferScorer()
    index = index_videos(features, pack.load("coarse"), selector, [fine, teacher])
    position = index.position()
    rows = []  # (is a copy, S^c, S^f_B unit, teacher unit, selector probability)
    for query in benchmark.queries:
        q = position[query]
        targets = np.array([i for i in range(len(index.ids)) if i != q])
        coarse, _ = score_query(index, q, targets, "coarse")
        fine_scores, _ = score_query(index, q, targets, "fine", scorer=fine)
        teacher_scores, _ = score_query(index, q, targets, "fine", scorer=teacher)
        with torch.inference_mode():
            inputs = torch.stack([index.selector[q].expand(len(targets)), index.selector[targets],
                                  torch.from_numpy(coarse)], dim=1)
            probabilities = selector(inputs)[:, 0].numpy()
        copies = benchmark.positives(query)
        for k, t in enumerate(targets):
            rows.append((index.ids[t] in copies, coarse[k], fine_scores[k] / 2 + 0.5, teacher_scores[k] / 2 + 0.5,
                         probabilities[k]))
    table = np.array(rows, dtype=np.float64)
    print(f"preset {args.preset}, seed {args.seed}, pack {pack.version}: {len(table)} pairs")
    for label, mask in (("true copies", table[:, 0] == 1), ("other videos", table[:, 0] == 0)):
        print(f"{label} ({int(mask.sum())}): quartiles 25/50/75 %")
        for column, name in ((1, "S^c"), (2, "S^f_B s/2+0.5"), (3, "teacher s/2+0.5")):
            quartiles = np.percentile(table[mask, column], [25, 50, 75])
            print(f"  {name:16s} " + " / ".join(f"{v:.3f}" for v in quartiles))
    print("selector probability by S^c band:")
    for low, high in BANDS:
        band = (table[:, 1] >= low) & (table[:, 1] < high)
        if band.any():
            mean = table[band, 4].mean()
            print(f"  S^c in [{low:.1f}, {min(high, 1.0):.1f}): {int(band.sum()):5d} pairs, mean {mean:.3f}")
    spearman = np.corrcoef(ranks(table[:, 4]), ranks(table[:, 1]))[0, 1]
    print(f"Spearman(selector, S^c) = {spearman:.3f}")
    stored = index.fine[fine.name]
    itself = [float(fine.score(stored[i], [stored[i]])[0]) / 2 + 0.5 for i in range(len(index.ids))]
    print(f"S^f_B s/2+0.5 of a video with itself: mean {np.mean(itself):.3f}, min {np.min(itself):.3f}")


if __name__ == "__main__":
    main()
