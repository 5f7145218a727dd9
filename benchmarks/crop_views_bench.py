"""Students that see crops at indexing: which part of the index needs crop views, and how many views pay.

    .venv/bin/python benchmarks/crop_views_bench.py                             # held out + small, seed 0
    .venv/bin/python benchmarks/crop_views_bench.py --presets heldout --seeds 0 1 2 \
        --out benchmarks/results/crop_views.md

Issue #15: the students are distilled from a teacher that sees zoomed crops, but they index a video by its full
frame's 9 regions only, so a picture-in-picture, cropped or bordered copy shows them its source at a scale they
never compare.  Crop views give them that scale at indexing time, with the pack's networks unchanged: every video
is also indexed, as a target, by the zoomed crops of a grid (`--grid CROP:STRIDE`, default 0.5:0.25: 9 crops of
half the side every quarter, each resized to the frame's size; `CropLayout`).  S^c then holds one vector per view
(the full frame's, then each crop's) and scores a target by its best view; S^f_B holds the codes of every view's
regions and scores by region Chamfer over all of them.  A query keeps its full frame.

For each preset and benchmark seed, side by side on the same features and networks (the pack's; no timing: mAP
only, `dnsvr eval benchmark --index-crops` times them): the index without views, with views for S^c only, for
S^f_B only, for both, and for S^c with S^f_B comparing only the one view S^c ranks best for the query
(`VideoIndex.fine_view` "best": the fine student's cost of a full frame); each by S^c alone, S^f_B on every
candidate, the S^c top 5/10/20 % re-ordered by S^f_B (cascade) and DnS at 5/10 % with the pack's default fusion.
Then S^c alone with subsets of the grid's views (the centre crop only; the four corners; corners and centre), what
fewer views cost in mAP.  With `--segments L1,L2,...` (default: the pack's `index_segments`, else 0.25) the indices
with views for S^c are measured again with segment views too (`SegmentLayout`: the S^c vectors of windows of
those fractions of each video's frames, after the crops'), and S^c with the full frame and the windows alone.
Crop features are cached beside the benchmark's (`benchmark_crop_features`); a held-out seed's take ~25 min on 2
busy cores (7 min idle).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
import torch
from dnsvr.training.data.crop_regions import CropLayout, crop_views
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

METHODS = (  # (label, score_query method, fraction, fusion: None = the method's own, "pack" = the pack's default)
    ("S^c", "coarse", 0.0, None),
    ("S^f_B, every candidate", "fine", 0.0, None),
    ("S^c top 5% re-ordered by S^f_B", "topk", 0.05, None),
    ("S^c top 10% re-ordered by S^f_B", "topk", 0.1, None),
    ("S^c top 20% re-ordered by S^f_B", "topk", 0.2, None),
    ("DnS 5%", "dns", 0.05, "pack"),
    ("DnS 10%", "dns", 0.1, "pack"),
)


def view_subsets(layout: CropLayout) -> dict[str, list[int]]:
    """{name: the view columns kept (0: the full frame; 1 + i: crop i of `layout.boxes`)} for S^c with fewer views:
    the crop nearest the frame's centre, the four corner crops, both, and every crop."""
    centres = np.array([(top + layout.crop / 2, left + layout.crop / 2) for top, left in layout.boxes])
    centre = int(np.argmin(np.abs(centres - 0.5).sum(axis=1)))
    extremes = [(min, min), (min, max), (max, min), (max, max)]
    tops, lefts = [top for top, _ in layout.boxes], [left for _, left in layout.boxes]
    corners = [layout.boxes.index((pick_top(tops), pick_left(lefts))) for pick_top, pick_left in extremes]
    return {"full frame + centre crop": [0, 1 + centre],
            "full frame + 4 corner crops": [0, *(1 + c for c in corners)],
            "full frame + 4 corners + centre": [0, *sorted(1 + c for c in {*corners, centre})],
            "full frame + every crop": list(range(1 + len(layout.boxes)))}


def preset_results(preset: str, seed: int, layout: CropLayout, pack_dir: str | None,
                   segments: SegmentLayout | None = None) -> dict[tuple[str, str, int], tuple[float, float]]:
    """{(index, method, views): (mAP, hard mAP)} of one benchmark preset and seed; `views`: vectors per video for
    S^c, views whose regions S^f_B compares for the fine rows."""
    pack, benchmark, features = benchmark_with_features(preset, seed, pack_dir, progress=False)
    crops = benchmark_crop_features(benchmark, pack, layout, default_cache_dir())
    coarse, selector, fine = pack.load("coarse"), pack.load("selector").eval(), fine_scorer(pack.load("fine"))
    both = index_videos(features, coarse, selector, [fine], progress=False, crops=crops)
    indices = {"no views": dataclasses.replace(both, coarse_views=None, fine_targets=None),
               "views for S^c": dataclasses.replace(both, fine_targets=None),
               "views for S^f_B": dataclasses.replace(both, coarse_views=None),
               "views for both": both,
               "views for S^c, S^f_B on the best one": dataclasses.replace(both, fine_view="best")}
    if segments is not None:
        windows = index_videos(features, coarse, selector, [], progress=False, segments=segments).coarse_views
        with_windows = dataclasses.replace(both, coarse_views=torch.cat([both.coarse_views, windows[:, 1:]], 1))
        indices |= {"views for S^c + segment views": dataclasses.replace(with_windows, fine_targets=None),
                    "views for both + segment views": with_windows,
                    "full frame + segment views for S^c": dataclasses.replace(with_windows, coarse_views=windows,
                                                                              fine_targets=None)}
    results = {}

    def measure(index_name: str, label: str, index, method: str, fraction: float, fusion: str | None) -> None:
        fusion = pack.default_fusion if fusion == "pack" else fusion
        fine_views = 1 + len(layout.boxes) if index.fine_targets is not None and index.fine_view == "all" else 1
        key = (index_name, f"{label}{f' ({fusion})' if fusion else ''}", fine_views if method == "fine"
               else index.views)
        results[key] = evaluate(benchmark, index, method, selector=selector, scorer=fine, fraction=fraction,
                                fusion=fusion, calibration=pack.calibration)
        print(f"{preset} {seed} {key}: {results[key][0]:.4f} / {results[key][1]:.4f}", flush=True)

    for index_name, index in indices.items():
        for label, method, fraction, fusion in METHODS:
            measure(index_name, label, index, method, fraction, fusion)
    for name, columns in view_subsets(layout).items():
        subset = dataclasses.replace(both, coarse_views=both.coarse_views[:, columns], fine_targets=None)
        measure(name, "S^c", subset, "coarse", 0.0, None)
    return results


@torch.inference_mode()
def indexing_ms(preset: str, seed: int, layout: CropLayout, pack_dir: str | None, videos: int = 4,
                repeats: int = 3) -> tuple[float, float]:
    """Indexing time per frame (ms; extractor + S^c + S^f_B codes, fastest of `repeats`) of a few benchmark videos,
    full frame only vs with crop views, measured alternately in one run -> (plain, with views)."""
    pack, benchmark, _ = benchmark_with_features(preset, seed, pack_dir, progress=False)
    extractor, coarse, fine = pack.load_extractor(), pack.load("coarse"), pack.load("fine")
    clips = [frames for _, frames in itertools.islice(benchmark.iter_frames(progress=False), videos)]
    frames = sum(len(clip) for clip in clips)

    def plain(clip: np.ndarray) -> None:
        regions = extractor(torch.from_numpy(clip))  # [T, 9, D]
        coarse.index_video(regions), fine.index_video(regions)

    def with_views(clip: np.ndarray) -> None:
        full = extractor(torch.from_numpy(clip)).numpy()  # [T, 9, D]
        regions = np.concatenate([full, layout.crop_regions(clip, extractor)], axis=1)  # [T, 9 * V, D]
        coarse.index_video(torch.from_numpy(crop_views(regions))), fine.index_video(torch.from_numpy(regions))

    best = {plain: float("inf"), with_views: float("inf")}
    for _ in range(repeats):
        for index in best:
            began = time.perf_counter()
            for clip in clips:
                index(clip)
            best[index] = min(best[index], time.perf_counter() - began)
    return 1000 * best[plain] / frames, 1000 * best[with_views] / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["heldout", "small"], choices=list(PRESETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="benchmark seeds (default: 0)")
    parser.add_argument("--grid", default="0.5:0.25", metavar="CROP:STRIDE",
                        help="the crop grid of the views (default: 0.5:0.25, 9 crops of half the side)")
    parser.add_argument("--pack", default=None, help="model pack directory (default: the bundled pack)")
    parser.add_argument("--segments", type=SegmentLayout.parse, default=None, metavar="L1,L2,...",
                        help="frame-window lengths of segment views (default: the pack's index_segments, else 0.25)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    layout = CropLayout.parse(args.grid)
    pack = ModelPack.from_dir(args.pack) if args.pack else ModelPack.bundled()
    segments = args.segments or pack.index_segments or SegmentLayout((0.25,))
    runs = {(preset, seed): preset_results(preset, seed, layout, args.pack, segments)
            for preset in args.presets for seed in args.seeds}
    lines = [f"Crop views of grid {args.grid} ({len(layout.boxes)} crops; `benchmarks/crop_views_bench.py`), pack "
             f"{args.pack or 'bundled'}, segment views of window lengths {list(segments.lengths)} ({segments.count} "
             f"windows), benchmark seeds {' '.join(map(str, args.seeds))}. `views`: vectors per "
             "video for S^c, views whose regions S^f_B compares for its rows. Cells: mAP / mAP on hard copies, "
             "the mean over seeds.", "",
             "| index | method | views | " + " | ".join(args.presets) + " |",
             "|---|---|---:|" + "---|" * len(args.presets)]
    for key in next(iter(runs.values())):
        cells = []
        for preset in args.presets:
            values = np.array([runs[preset, seed][key] for seed in args.seeds])  # [seeds, 2]
            cells.append(f"{values[:, 0].mean():.4f} / {values[:, 1].mean():.4f}")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    plain_ms, views_ms = indexing_ms(args.presets[0], args.seeds[0], layout, args.pack)
    lines += ["", f"Indexing time per frame ({args.presets[0]} seed {args.seeds[0]}, 4 videos, extractor + S^c + S^f_B "
              f"codes, {torch.get_num_threads()} torch threads, fastest of 3, alternated in one run): full frame "
              f"{plain_ms:.1f} ms, with crop views {views_ms:.1f} ms ({views_ms / plain_ms:.1f}x)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
