"""`dnsvr eval`: retrieval accuracy of a model pack.

* `dnsvr eval official`: an official protocol (FIVR-5K/200K, CC_WEB_VIDEO, SVD, EVVE) on official features
  and annotation files: every query against the protocol's database with S^c, the fine student, or DnS.
* `dnsvr eval benchmark`: the DnS trade-off (teacher, students, DnS at re-rank fractions) on our seeded
  near-duplicate benchmark -> `tradeoff.md` and `tradeoff.png` (see `dnsvr.training.evaluation.tradeoff`).
* `dnsvr eval t2v`, `dnsvr eval t2v-export`: text-to-video retrieval metrics of a score file on an official
  split or our captioned benchmark (see `dnsvr.training.cli.evaluate_t2v`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dnsvr.training.cli import evaluate_t2v

DATASETS = ("fivr-5k", "fivr-200k", "cc_web_video", "svd", "evve")

OFFICIAL_EPILOG = """\
annotation files (those of the reference implementation):
  fivr-5k, fivr-200k  fivr.pickle
  cc_web_video        cc_web_video.pickle
  evve                evve.pickle
  svd                 test_groundtruth (plain text); add --svd-unlabeled unlabeled-data.txt for the
                      paper's setting with the unlabeled distractors

--features is an HDF5 file with one [T, 9, 512] dataset per video (the official DnS feature files, or
`dnsvr features` output). Videos of the protocol missing from it are reported and left out.

models:
  coarse  S^c cosine similarity for every pair
  fine    the pack's fine student for every pair (slow on large datasets)
  dns     S^c for every pair, the selector's top --rerank fraction re-scored by the fine student

example:
  dnsvr eval official --dataset fivr-5k --annotations fivr.pickle --features fivr_5k.h5 \\
      --pack packs/official --model dns --rerank 0.05"""

BENCHMARK_EPILOG = """\
Builds the seeded near-duplicate benchmark, extracts its features with the pack's extractor (cached),
and measures mAP, time per query and storage per video for the teacher, S^f_A, S^f_B, S^c and DnS at
re-rank fractions 0 ... 1 (plus an oracle selector). Writes OUT/tradeoff.md, OUT/tradeoff_edits.md (mAP per
edit: picture-in-picture, rotations, partial copies, ...) and, when matplotlib is installed
(pip install 'dnsvr[plot]'), OUT/tradeoff.png.

Presets: tiny, small, medium (every photograph and real clip, the classic edits); train and heldout (only
that split's sources, dnsvr.training.data.sources, with the hardened edits: picture-in-picture at three
inset sizes, rotations, partial copies). heldout is made from sources no training corpus uses: report it
apart from train.

example:
  dnsvr eval benchmark --preset small --out docs/
  dnsvr eval benchmark --preset heldout --out heldout/"""


def load_protocol(dataset: str, annotations: Path, svd_unlabeled: Path | None = None):
    """Dataset name + annotation file -> the protocol object of `dnsvr.training.evaluation.protocols`."""
    from dnsvr.training.evaluation.protocols import EVVE, FIVR, SVD, CCWebVideo

    if dataset.startswith("fivr-"):
        return FIVR.from_pickle(annotations, version=dataset.split("-")[1])
    if dataset == "cc_web_video":
        return CCWebVideo.from_pickle(annotations)
    if dataset == "evve":
        return EVVE.from_pickle(annotations)
    if dataset == "svd":
        return SVD.from_files(annotations, svd_unlabeled)
    raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")


def official_similarities(
    protocol, features_path: Path, pack, model: str, rerank: float, progress: bool = True
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Index the protocol's videos found in `features_path`, score every query against the database.

    -> ({query: {target: score}}, ids of protocol videos missing from the features file).
    """
    import numpy as np
    from dnsvr.training.data.features_io import iter_features, list_ids
    from dnsvr.training.evaluation.tradeoff import fine_scorer, index_videos, score_query
    from tqdm import tqdm

    available = set(list_ids(features_path))
    wanted = set(protocol.queries) | set(protocol.database)
    missing = sorted(wanted - available)
    present = sorted(wanted & available)
    if not any(q in available for q in protocol.queries):
        raise ValueError(
            f"{features_path}: none of the {len(protocol.queries)} protocol queries has features"
        )
    scorer = fine_scorer(pack.load("fine")) if model != "coarse" else None
    selector = pack.load("selector")
    index = index_videos(
        iter_features(features_path, present),
        pack.load("coarse"),
        selector,
        [scorer] if scorer else [],
        progress=progress,
        total=len(present),
    )
    position = index.position()
    database = np.array(sorted(position[v] for v in protocol.database if v in position))
    similarities = {}
    for query in tqdm(
        [q for q in protocol.queries if q in position],
        desc=f"scoring ({model})",
        unit="query",
        disable=not progress,
    ):
        scores, _ = score_query(index, position[query], database, model, selector, scorer, rerank)
        similarities[query] = {index.ids[t]: float(s) for t, s in zip(database, scores, strict=True)}
    return similarities, missing


def run_official(args: argparse.Namespace) -> int:
    from dnsvr.training.packs.model_pack import ModelPack, ModelPackError

    if not 0.0 <= args.rerank <= 1.0:
        print(f"error: --rerank must be in [0, 1], got {args.rerank}", file=sys.stderr)
        return 2
    for label, path in (
        ("annotations", args.annotations),
        ("features", args.features),
        ("svd unlabeled list", args.svd_unlabeled),
    ):
        if path is not None and not path.is_file():
            print(f"error: {label} file {path} does not exist", file=sys.stderr)
            return 2
    try:
        pack = ModelPack.from_dir(args.pack) if args.pack else ModelPack.bundled()
        protocol = load_protocol(args.dataset, args.annotations, args.svd_unlabeled)
        similarities, missing = official_similarities(
            protocol, args.features, pack, args.model, args.rerank, progress=not args.quiet
        )
        indexed = (set(protocol.database) | set(protocol.queries)) - set(missing)
        metrics = protocol.evaluate(similarities, all_db=indexed)
    except (ModelPackError, ValueError, KeyError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    metrics = {
        "dataset": args.dataset,
        "model": args.model,
        "pack": pack.version,
        **({"rerank": args.rerank} if args.model == "dns" else {}),
        "videos_missing": len(missing),
        **metrics,
    }
    if missing:
        print(
            f"warning: {len(missing)} protocol videos have no features, e.g. {missing[:3]}", file=sys.stderr
        )
    print(json.dumps(metrics, indent=2, sort_keys=False))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    from dnsvr.training.data.crop_regions import CropLayout
    from dnsvr.training.evaluation.tradeoff import run_tradeoff, write_edit_table, write_plot, write_table
    from dnsvr.training.packs.model_pack import ModelPackError

    try:
        rows, context = run_tradeoff(
            args.preset, args.seed, args.pack, args.cache_dir, progress=not args.quiet,
            index_crops=[CropLayout.parse(text) for text in args.index_crops],
        )
    except (ModelPackError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    table = write_table(rows, context, args.out / "tradeoff.md")
    print(table.read_text())
    print(f"wrote {table} and {write_edit_table(context, args.out / 'tradeoff_edits.md')}")
    try:
        print(f"wrote {write_plot(rows, args.out / 'tradeoff.png')}")
    except ImportError as error:
        print(f"note: no plot written ({error})", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "eval",
        help="measure retrieval accuracy: official protocols, the DnS trade-off, text-to-video retrieval",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = evaluate.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    evaluate.set_defaults(handler=lambda args: (evaluate.print_help(), 2)[1])

    official = commands.add_parser(
        "official",
        help="an official protocol on official feature and annotation files",
        description="Score every query of an official dataset against its database and print the "
        "protocol's metrics (JSON).",
        epilog=OFFICIAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    official.add_argument("--dataset", choices=DATASETS, required=True, help="the protocol")
    official.add_argument("--annotations", type=Path, required=True, help="annotation file (see below)")
    official.add_argument("--features", type=Path, required=True, help="HDF5 features of queries + database")
    official.add_argument("--svd-unlabeled", type=Path, help="svd: list of unlabeled distractor ids")
    official.add_argument("--pack", type=Path, help="model pack directory (default: the bundled pack)")
    official.add_argument(
        "--model",
        choices=("coarse", "fine", "dns"),
        default="dns",
        help="which similarity ranks the database (default: dns)",
    )
    official.add_argument(
        "--rerank",
        type=float,
        default=0.05,
        help="dns: fraction of each query's database re-scored by the fine student (default: 0.05)",
    )
    official.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    official.add_argument("--quiet", action="store_true", help="no progress bars")
    official.set_defaults(handler=run_official)

    benchmark = commands.add_parser(
        "benchmark",
        help="the DnS trade-off on our near-duplicate benchmark -> tradeoff.md/.png",
        description="Measure mAP, time per query and storage of teacher, students and DnS.",
        epilog=BENCHMARK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    benchmark.add_argument(
        "--preset",
        choices=("tiny", "small", "medium", "train", "heldout"),  # nd_benchmark.PRESETS (not imported: slow)
        default="small",
        help="benchmark preset (default: small)",
    )
    benchmark.add_argument("--seed", type=int, default=0, help="benchmark seed (default: 0)")
    benchmark.add_argument("--pack", type=Path, help="model pack directory (default: the bundled pack)")
    benchmark.add_argument("--out", type=Path, default=Path("docs"), help="output folder (default: docs/)")
    benchmark.add_argument(
        "--cache-dir", type=Path, help="decoded clips and features cache (default: $DNSVR_CACHE/nd_benchmark)"
    )
    benchmark.add_argument(
        "--index-crops", nargs="+", default=[], metavar="CROP:STRIDE",
        help="also index every video as a target by zoomed crops of these grids (fractions of the side, e.g. "
        "0.5:0.25: 9 crops of half the side every quarter): S^c scores a target by its best view, the fine "
        "students by region Chamfer over every view's regions (crop features cached beside the benchmark's)",
    )
    benchmark.add_argument("--quiet", action="store_true", help="no progress bars")
    benchmark.set_defaults(handler=run_benchmark)

    evaluate_t2v.register(commands)
