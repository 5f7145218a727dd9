"""Our near-duplicate benchmark: build time (cold and warm cache), frame rendering time, and baseline scores.

    .venv/bin/python benchmarks/nd_benchmark_build.py [--size small] [--seed 0] [--cache-dir DIR]

Builds the benchmark twice (the first time decoding the real clips into an empty cache unless --cache-dir
names a warm one), renders every video's frames, then scores three similarity functions to show the
scale of the metrics: random scores, and a thumbnail Chamfer baseline (each frame a zero-mean 16x16 grey
thumbnail; video similarity = mean over query frames of the best cosine over target frames).  Hard copies
should score clearly below easy ones under the baseline, and random far below both.  Then the baseline's
mAP per edit (`Benchmark.evaluate_edits`): which edits a thumbnail comparison already sees through.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dnsvr.training.evaluation.nd_benchmark import DIFFICULTIES, PRESETS, BenchmarkConfig, build_benchmark


def thumbnails(frames: np.ndarray) -> np.ndarray:
    """uint8 `[T, H, W, 3]` -> float32 `[T, 256]` unit vectors of zero-mean 16x16 grey thumbnails."""
    grey = torch.from_numpy(frames).float().mean(-1, keepdim=True).permute(0, 3, 1, 2)
    small = F.adaptive_avg_pool2d(grey, 16).flatten(1)
    small = small - small.mean(1, keepdim=True)
    return F.normalize(small, dim=1).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="small", choices=PRESETS, help="preset")
    parser.add_argument("--seed", type=int, default=0, help="benchmark seed")
    parser.add_argument("--cache-dir", type=Path, help="decoded-clip cache (default: a fresh temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache_dir or Path(scratch)
        config = BenchmarkConfig.preset(args.size, seed=args.seed, cache_dir=cache)
        start = time.perf_counter()
        bench = build_benchmark(config)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        bench = build_benchmark(config, progress=False)
        warm = time.perf_counter() - start

    start = time.perf_counter()
    frames = dict(bench.iter_frames())
    render = time.perf_counter() - start
    total_frames = sum(len(f) for f in frames.values())
    megabytes = sum(f.nbytes for f in frames.values()) / 2**20
    print(
        f"size={args.size} seed={args.seed}: {len(bench.videos)} videos, {len(bench.queries)} queries, "
        f"{total_frames} frames ({megabytes:.0f} MiB as uint8)"
    )
    print(f"build: {cold:.2f} s first, {warm:.2f} s with a warm cache; rendering all frames: {render:.2f} s")

    rng = np.random.default_rng(0)
    random = {q: {t: float(rng.random()) for t in bench.videos if t != q} for q in bench.queries}
    vectors = {v: thumbnails(f) for v, f in frames.items()}
    chamfer = {
        q: {t: float((vectors[q] @ vectors[t].T).max(1).mean()) for t in bench.videos if t != q}
        for q in bench.queries
    }
    for name, sims in (("random", random), ("thumbnail chamfer", chamfer)):
        metrics = bench.evaluate(sims)
        print(f"\n{name}:")
        for level in ("overall", *DIFFICULTIES):
            if level in metrics:
                m = metrics[level]
                print(
                    f"  {level:8s} mAP {m['mAP']:.3f}  R@1 {m['recall@1']:.3f}  R@5 {m['recall@5']:.3f}  "
                    f"R@10 {m['recall@10']:.3f}  ({metrics['counts'][level]} positives)"
                )
    print("\nthumbnail chamfer, mAP per edit:")
    for edit, m in bench.evaluate_edits(chamfer).items():
        print(f"  {edit:18s} mAP {m['mAP']:.3f}  ({m['positives']} positives, {m['queries']} queries)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
