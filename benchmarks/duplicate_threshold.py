"""The default duplicate threshold of `index(on_duplicate=...)`: served scores of true copies vs other videos.

    .venv/bin/python benchmarks/duplicate_threshold.py [--preset small] [--seed 0] [--pack DIR] [--index-segments 0.25]
        [--write]

For every query of the near-duplicate benchmark (`dnsvr eval benchmark`'s, features cached the same way) and
every other video, the score the served search gives that pair with its default policy (S^c, the selector
sending 10 % of the candidates to S^f_B, merged by the pack's default fusion, `ModelPack.default_fusion`; the
small preset's 100 targets per query are the service's default K' = 100 coarse candidates; with the pack's crop
views, `ModelPack.index_views`, and frame windows, `ModelPack.index_segments` or `--index-segments`, as the
service indexes: S^c by a target's best view).  Prints the score
percentiles of true copies (by difficulty) and of the other videos, precision and recall of "score >= t" on a
0.01 grid, and the threshold with the best F1 (ties: the higher one), which `--write` records in the pack's
pack.json as "duplicate_threshold" (what a server built from that pack uses when a request names none;
`make pack` does so for the bundled pack's recipe).
"""

from __future__ import annotations

import argparse

import numpy as np
from dnsvr.training.data.segments import SegmentLayout
from dnsvr.training.evaluation.nd_benchmark import DIFFICULTIES, default_cache_dir
from dnsvr.training.evaluation.tradeoff import (
    benchmark_crop_features,
    benchmark_with_features,
    fine_scorer,
    index_videos,
    score_query,
)
from dnsvr.training.files import update_json_keys

SERVED_FRACTION = 0.1  # the service's default re-rank policy (RerankPolicy())
PERCENTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)
GRID = np.round(np.arange(0.80, 0.991, 0.01), 2)


def percentiles(values: np.ndarray) -> str:
    return " ".join(f"{v:.3f}" for v in np.percentile(values, PERCENTILES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "medium"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pack", default=None, help="model pack folder (default: the bundled pack)")
    parser.add_argument("--index-segments", default=None, metavar="L1,L2,...|none",
                        help="the frame windows indexed videos are also stored by, as `dnsvr export "
                             "--index-segments` (default: the pack's)")
    parser.add_argument("--write", action="store_true",
                        help="record the best threshold in the pack's pack.json as \"duplicate_threshold\"")
    args = parser.parse_args()

    pack, benchmark, features = benchmark_with_features(args.preset, args.seed, args.pack)
    selector, fine = pack.load("selector").eval(), fine_scorer(pack.load("fine"))
    grid = pack.index_views
    crops = None if grid is None else benchmark_crop_features(benchmark, pack, grid, default_cache_dir())
    windows = pack.index_segments if args.index_segments is None else (
        None if args.index_segments == "none" else SegmentLayout.parse(args.index_segments))
    index = index_videos(features, pack.load("coarse"), selector, [fine], crops=crops, segments=windows)
    if crops is not None:  # the service's S^f_B compares the full frame's codes
        index.fine_targets = None
    position = index.position()
    scores, labels = [], []  # served score; difficulty of a true copy, "" for another video
    for query in benchmark.queries:
        q = position[query]
        targets = np.array([i for i in range(len(index.ids)) if i != q])
        served, _ = score_query(index, q, targets, "dns", selector=selector, scorer=fine, fraction=SERVED_FRACTION,
                                fusion=pack.default_fusion, calibration=pack.calibration)
        difficulty = {video_id: level for level in DIFFICULTIES for video_id in benchmark.positives(query, level)}
        scores += [float(s) for s in served]
        labels += [difficulty.get(index.ids[t], "") for t in targets]
    scores, labels = np.array(scores), np.array(labels)
    copies = labels != ""
    print(f"preset {args.preset}, seed {args.seed}, pack {pack.version}: {len(scores)} pairs, "
          f"{len(benchmark.queries)} queries; served score (DnS, re-rank {SERVED_FRACTION}, fusion "
          f"{pack.default_fusion}; " + (f"crop views {grid.crop:g}:{grid.stride:g}" if grid else "full frames")
          + (f", frame windows {list(windows.lengths)})" if windows else ")"))
    print("percentiles " + " / ".join(str(p) for p in PERCENTILES))
    print(f"  true copies  ({int(copies.sum()):4d}) {percentiles(scores[copies])}")
    for level in DIFFICULTIES:
        if (labels == level).any():
            print(f"    {level:9s}  ({int((labels == level).sum()):4d}) {percentiles(scores[labels == level])}")
    print(f"  other videos ({int((~copies).sum()):4d}) {percentiles(scores[~copies])}")
    print("threshold  precision  recall  F1    false positives")
    best = (-1.0, 0.0)
    for threshold in GRID:
        flagged = scores >= threshold
        hits = int((flagged & copies).sum())
        precision = hits / max(int(flagged.sum()), 1)
        recall = hits / int(copies.sum())
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        print(f"  {threshold:.2f}     {precision:.3f}      {recall:.3f}   {f1:.3f} {int((flagged & ~copies).sum()):5d}")
        if f1 >= best[0]:
            best = (f1, float(threshold))
    print(f"best F1 {best[0]:.3f} at threshold {best[1]:.2f}")
    if args.write:
        update_json_keys(pack.root / "pack.json", {"duplicate_threshold": best[1]})
        print(f"{pack.root / 'pack.json'}: duplicate_threshold {best[1]:.2f}")


if __name__ == "__main__":
    main()
