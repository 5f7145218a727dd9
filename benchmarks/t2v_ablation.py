"""The text-to-video ablation: what each distillation signal adds to the student, on our captioned benchmark.

Each row of ROWS names a training callable of `dnsvr.training.distill.train_t2v` (looked up by name; a row
whose callable is absent is skipped with a message) and its keyword options.  The rows are cumulative, as in
the papers' ablations:

    student, ground truth only           (CLIP4Clip-style symmetric cross-entropy)
    + TeachCLIP coarse                   (Pearson distillation of the teachers' text x video matrices)
    + TeachCLIP fine (AFA)               (frame-text relevance into the attentional frame aggregation)
    + TeachText multi-teacher            (SmoothL1 to the teachers' mean matrix)
    + CMGSD adaptive margin              (the margin from within-modality distances)
    CMGSD fixed margin                   (the same with the fixed margin alpha, for comparison)
    teacher: concept, teacher: lexical   (the teachers themselves)

Contract of a training callable: `fn(seed=..., **options) -> model` where `model` is a
`dnsvr.training.evaluation.t2v_evaluate.TextVideoIndex`: `index_video(frames uint8 [T, 224, 224, 3])` -> the
array stored per video, `score(captions, stored)` -> float `[Nt, Nv]`.  Each model is measured by
`evaluate_index`: R@1/5/10, MdR, MnR (text -> video, pessimistic ties), video -> text R@1, the median time of one
text query against every stored video (indexing excluded) and the bytes stored per video.

A first row, chance (uniformly random scores, seed 0), shows what any model must beat.
`--similarity NAME=FILE.npz` adds a row from precomputed scores (`t2v_scores` format, rows/columns by name or in
the benchmark's split order; `dnsvr eval t2v-export` writes the videos and the split): its time per query is the
scoring from the file (embeddings: one cosine row; a bare matrix: a lookup) and its bytes per video the stored
embedding's (none for a bare matrix).

    python benchmarks/t2v_ablation.py                                   # every row whose trainer exists
    python benchmarks/t2v_ablation.py --similarity "CLIP ViT-B/32 (zero-shot)=clip_scores.npz" --rows none

Writes docs/t2v_ablation.md and, when matplotlib is installed, docs/t2v_ablation.png.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from dnsvr.training.data.captioned_benchmark import CAPTIONS_FILE, PRESETS, CaptionedConfig, captioned_benchmark
from dnsvr.training.data.text_video_split import TextVideoSplit
from dnsvr.training.evaluation.t2v_evaluate import TIMED_QUERIES, evaluate_index, evaluate_text_video
from dnsvr.training.evaluation.t2v_scores import ScoreFile
from dnsvr.training.files import atomic_path, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
TRAINER_MODULE = "dnsvr.training.distill.train_t2v"
STUDENT = "train_student"
BUNDLED_WIDTH = {"dim": 128}  # the bundled pack's student (training/packs/bundled/pack.json, text_training)
NO_DISTILLATION = {**BUNDLED_WIDTH, "teachclip_coarse": False, "teachclip_fine": False, "teachtext": False,
                   "margin": "none"}
COARSE = {**NO_DISTILLATION, "teachclip_coarse": True}
FINE = {**COARSE, "teachclip_fine": True}
TEACHTEXT = {**FINE, "teachtext": True}


@dataclass(frozen=True)
class AblationRow:
    """One configuration: its table name, the training callable's name in TRAINER_MODULE, its options."""

    name: str
    trainer: str
    options: dict[str, Any] = field(default_factory=dict)


ROWS = (
    AblationRow("student: ground truth only", STUDENT, NO_DISTILLATION),
    AblationRow("+ TeachCLIP coarse", STUDENT, COARSE),
    AblationRow("+ TeachCLIP fine (AFA)", STUDENT, FINE),
    AblationRow("+ TeachText multi-teacher", STUDENT, TEACHTEXT),
    AblationRow("+ CMGSD adaptive margin", STUDENT, {**TEACHTEXT, "margin": "adaptive"}),
    AblationRow("CMGSD fixed margin", STUDENT, {**TEACHTEXT, "margin": "fixed"}),
    AblationRow("teacher: concept", "concept_teacher"),
    AblationRow("teacher: lexical", "lexical_teacher"),
)


@dataclass
class Result:
    """A measured row (metrics None when skipped, with the reason)."""

    name: str
    metrics: dict[str, Any] | None = None
    ms_per_query: float | None = None
    bytes_per_video: float | None = None
    skipped: str | None = None


def find_trainer(name: str):
    """The callable `name` of TRAINER_MODULE -> (callable, None), or (None, why it is absent)."""
    trainer = getattr(importlib.import_module(TRAINER_MODULE), name, None)
    if not callable(trainer):
        return None, f"{TRAINER_MODULE} has no callable {name!r}"
    return trainer, None


def run_row(row: AblationRow, split: TextVideoSplit, frames_of, seed: int) -> Result:
    trainer, why = find_trainer(row.trainer)
    if trainer is None:
        return Result(row.name, skipped=why)
    model = trainer(seed=seed, **row.options)
    metrics = evaluate_index(model, split, frames_of)
    return Result(row.name, metrics, 1000 * metrics["seconds_per_query"], metrics["bytes_per_video"])


def run_similarity(name: str, path: Path, split: TextVideoSplit) -> Result:
    scores = ScoreFile.load(path)
    metrics = evaluate_text_video(scores.similarity_fn, split)
    timings = []
    for caption in split.captions[:TIMED_QUERIES]:
        start = time.perf_counter()
        scores.similarity_fn([caption], split.video_ids)
        timings.append(time.perf_counter() - start)
    return Result(name, metrics, 1000 * float(np.median(timings)), scores.bytes_per_video)


def run_chance(split: TextVideoSplit, seed: int = 0) -> Result:
    """The reference row: uniformly random scores (what any model must beat)."""
    rng = np.random.default_rng(seed)
    return Result("chance (random scores)", evaluate_text_video(lambda c, v: rng.random((len(c), len(v))), split))


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def write_table(results: Sequence[Result], context: dict[str, Any], path: Path) -> Path:
    """The markdown report: benchmark, the table, skipped rows."""
    lines = [
        "# Text-to-video ablation on our captioned benchmark",
        "",
        f"Benchmark: preset `{context['preset']}`, seed {context['seed']}: {context['videos']} videos "
        f"({context['distractor_videos']} distractors without captions), {context['captions']} captions of "
        f"{context['subjects']} subjects (`training/data/captioned_benchmark.json`).  Text -> video R@K (%), "
        "median and mean rank (ties pessimistic), video -> text R@1; time per query = the median wall time of one "
        "caption scored against every stored video (indexing excluded); bytes per video = what the index stores.",
        f"Measured {context['date']} on {context['machine']}.  `benchmarks/t2v_ablation.py` writes this file.",
        "",
        "| configuration | R@1 | R@5 | R@10 | MdR | MnR | v2t R@1 | ms / query | bytes / video |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        if result.metrics is None:
            continue
        t2v, v2t = result.metrics["t2v"], result.metrics.get("v2t", {})
        lines.append(
            f"| {result.name} | {t2v['R@1']:.1f} | {t2v['R@5']:.1f} | {t2v['R@10']:.1f} | {t2v['MdR']:g} | "
            f"{t2v['MnR']:.1f} | {_number(v2t.get('R@1'), 1)} | {_number(result.ms_per_query, 3)} | "
            f"{_number(result.bytes_per_video, 0)} |"
        )
    skipped = [r for r in results if r.skipped]
    if skipped:
        lines += ["", "Not measured in this run:", ""]
        lines += [f"- {r.name}: {r.skipped}" for r in skipped]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def write_plot(results: Sequence[Result], path: Path) -> Path:
    """Grouped bars of R@1/5/10 per measured row -> PNG (ImportError with a hint without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("the ablation plot needs matplotlib: pip install 'dnsvr[plot]'") from error
    measured = [r for r in results if r.metrics is not None]
    positions = np.arange(len(measured))
    figure, axis = plt.subplots(figsize=(max(6.0, 1.3 * len(measured) + 2), 4.5))
    for offset, k in zip((-0.27, 0.0, 0.27), (1, 5, 10), strict=True):
        axis.bar(positions + offset, [r.metrics["t2v"][f"R@{k}"] for r in measured], width=0.26, label=f"R@{k}")
    axis.set_xticks(positions, [r.name for r in measured], rotation=20, ha="right", fontsize=8)
    axis.set_ylabel("text -> video recall (%)")
    axis.set_ylim(0, 100)
    axis.legend(fontsize=8)
    axis.grid(True, axis="y", alpha=0.3)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as partial:
        figure.savefig(partial, dpi=120)
    plt.close(figure)
    return path


def parse_similarity(text: str) -> tuple[str, Path]:
    name, sep, file = text.rpartition("=")
    if not sep or not name or not file:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npz, got {text!r}")
    return name, Path(file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=tuple(PRESETS), default="standard", help="benchmark size")
    parser.add_argument("--seed", type=int, default=0, help="benchmark seed (default: 0)")
    parser.add_argument("--train-seed", type=int, default=0, help="seed passed to every training callable")
    parser.add_argument("--caption-file", type=Path, default=CAPTIONS_FILE, help="benchmark caption file")
    parser.add_argument("--cache-dir", type=Path, help="rendered frames (default: $DNSVR_CACHE/t2v_benchmark)")
    parser.add_argument("--rows", nargs="*", help="only these ROWS names ('none': no training row)")
    parser.add_argument("--similarity", type=parse_similarity, action="append", default=[], metavar="NAME=FILE.npz",
                        help="add a row from a precomputed score file (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder of t2v_ablation.md/.png")
    args = parser.parse_args(argv)

    config = CaptionedConfig.preset(args.preset, seed=args.seed, cache_dir=args.cache_dir)
    benchmark = captioned_benchmark(config, args.caption_file)
    split = benchmark.split()
    chosen = [r for r in ROWS if args.rows is None or r.name in args.rows]
    unknown = sorted(set(args.rows or ()) - {r.name for r in ROWS} - {"none"})
    if unknown:
        print(f"error: unknown rows {unknown}; choose from {[r.name for r in ROWS]}", file=sys.stderr)
        return 2
    results = [run_chance(split)]
    for row in chosen:
        result = run_row(row, split, benchmark.frames, args.train_seed)
        print(f"{row.name}: {'skipped, ' + result.skipped if result.skipped else 'measured'}")
        results.append(result)
    for name, path in args.similarity:
        results.append(run_similarity(name, path, split))
        print(f"{name}: measured from {path}")
    machine = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores"
    context = {**benchmark.summary(), "preset": args.preset, "seed": args.seed, "date": time.strftime("%Y-%m-%d"),
               "machine": machine}
    table = write_table(results, context, args.out / "t2v_ablation.md")
    print(table.read_text())
    try:
        print(f"wrote {write_plot(results, args.out / 't2v_ablation.png')}")
    except ImportError as error:
        print(f"note: no plot written ({error})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
