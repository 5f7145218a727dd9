"""`dnsvr eval t2v` and `dnsvr eval t2v-export`: text-to-video retrieval accuracy from a score file.

* `t2v`: an official split (MSR-VTT 1k-A, MSVD, DiDeMo), a saved split, or our captioned benchmark, scored
  by a user's `.npz` file (similarities or embeddings; `dnsvr.training.evaluation.t2v_scores`) -> R@1/5/10,
  MdR, MnR in both directions (`dnsvr.training.evaluation.t2v_metrics`), printed as JSON.
* `t2v-export`: our captioned benchmark as mp4 files plus `split.json`, for models that run elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dnsvr.training.data.captioned_benchmark import PRESETS
from dnsvr.training.evaluation.t2v_metrics import TIES
from dnsvr.training.evaluation.t2v_protocols import DATASETS

T2V_DATASETS = (*DATASETS, "benchmark")

T2V_EPILOG = """\
datasets and what --annotations points at (the files CLIP4Clip's and TeachCLIP's loaders read):
  msrvtt     MSRVTT_JSFUSION_test.csv (key,vid_key,video_id,sentence; 1000 captions, one per video)
  msvd       the folder with test_list.txt and raw-captions.pkl (read by a restricted unpickler: builtin
             containers only) or raw-captions.json; every caption of every test video is a query
  didemo     test_data.json (moments: video, description); a video's descriptions are joined into one
             paragraph; --video-list test_list.txt restricts the videos
  split      a split JSON as `dnsvr eval t2v-export` writes it ({captions, caption_video, video_ids,
             video_group})
  benchmark  our captioned benchmark (no --annotations; --preset, --seed choose it)

--scores FILE.npz, written with numpy (text as numpy unicode arrays; pickled objects are refused):
  similarity [Nt, Nv] float                      rows = captions, columns = videos, higher = more similar
  or text [Nt, D] and video [Nv, D] float        scored by cosine (rows L2-normalised)
  optional captions [Nt] str, video_ids [Nv] str rows/columns matched by name (else: in the split's order)
e.g. np.savez("scores.npz", text=T, video=V, captions=np.array(caps), video_ids=np.array(ids))

metrics (CLIP4Clip's definitions): text->video rank = 1 + wrong videos scored above the best correct one;
R@K = % of captions with rank <= K; MdR = median rank, MnR = mean rank.  video->text ranks the captions
grouped by their video (a group scored by its best caption).  Ties: pessimistic (default; a constant scorer
gets the worst ranks) or optimistic (the reference's sort).

examples:
  dnsvr eval t2v --dataset msrvtt --annotations MSRVTT_JSFUSION_test.csv --scores msrvtt_scores.npz
  dnsvr eval t2v-export --out t2v_bench/            # videos/<id>.mp4 + split.json
  dnsvr eval t2v --dataset benchmark --scores bench_scores.npz --json metrics.json"""

EXPORT_EPILOG = """\
Writes OUT/videos/<subject>/<n>.mp4 (1 fps, 224x224, H.264) for every benchmark video and OUT/split.json
(captions, the video each was written for, every video id, the content group of each video: a caption is
correct for every video of its group).  Score the videos and captions with any model, save the scores as
described in `dnsvr eval t2v --help`, then:  dnsvr eval t2v --dataset split --annotations OUT/split.json ...
(`dnsvr features OUT/videos --id-from path` gives the same ids)."""


def _benchmark(args: argparse.Namespace):
    from dnsvr.training.data.captioned_benchmark import CaptionedConfig, captioned_benchmark

    return captioned_benchmark(CaptionedConfig.preset(args.preset, seed=args.seed, cache_dir=args.cache_dir))


def run_t2v(args: argparse.Namespace) -> int:
    from dnsvr.training.data.text_video_split import SplitError
    from dnsvr.training.evaluation.t2v_evaluate import evaluate_text_video
    from dnsvr.training.evaluation.t2v_metrics import MetricsError
    from dnsvr.training.evaluation.t2v_protocols import load_split
    from dnsvr.training.evaluation.t2v_scores import ScoreFile, ScoreFileError

    if (args.dataset == "benchmark") == (args.annotations is not None):
        print("error: --annotations is required for an official dataset or a split file, and not used with "
              "--dataset benchmark", file=sys.stderr)
        return 2
    for label, path in (("annotations", args.annotations), ("scores", args.scores), ("video list", args.video_list)):
        if path is not None and not path.exists():
            print(f"error: {label} path {path} does not exist", file=sys.stderr)
            return 2
    try:
        if args.dataset == "benchmark":
            split = _benchmark(args).split()
        else:
            split = load_split(args.dataset, args.annotations, args.video_list)
        scores = ScoreFile.load(args.scores)
        metrics = evaluate_text_video(scores.similarity_fn, split, ties=args.ties, video_to_text=not args.no_v2t)
    except (SplitError, ScoreFileError, MetricsError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    result = {"dataset": args.dataset, "scores": str(args.scores), **metrics}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def run_export(args: argparse.Namespace) -> int:
    try:
        benchmark = _benchmark(args)
        split_path = benchmark.export(args.out, crf=args.crf, progress=not args.quiet)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = benchmark.summary()
    print(f"wrote {summary['videos']} videos ({summary['distractor_videos']} distractors) and "
          f"{summary['captions']} captions: {split_path}")
    return 0


def _benchmark_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=tuple(PRESETS), default="standard",
                        help="benchmark size (default: standard)")
    parser.add_argument("--seed", type=int, default=0, help="benchmark seed (default: 0)")
    parser.add_argument("--cache-dir", type=Path,
                        help="rendered frames cache (default: $DNSVR_CACHE/t2v_benchmark)")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `t2v` and `t2v-export` to `dnsvr eval`'s sub-commands."""
    t2v = commands.add_parser(
        "t2v",
        help="text-to-video retrieval metrics of a score file on an official split or our benchmark",
        description="Rank every video for every caption of the split by the scores in --scores and print "
        "R@1/5/10, median and mean rank, text->video and video->text (JSON).",
        epilog=T2V_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t2v.add_argument("--dataset", choices=T2V_DATASETS, required=True, help="the split (see below)")
    t2v.add_argument("--annotations", type=Path, help="the split's annotation file or folder (see below)")
    t2v.add_argument("--video-list", type=Path, help="didemo: the video ids to keep (test_list.txt)")
    t2v.add_argument("--scores", type=Path, required=True, help="the .npz score file (see below)")
    t2v.add_argument("--ties", choices=TIES, default=TIES[0],
                     help="where a correct video tied with wrong ones ranks (default: pessimistic)")
    t2v.add_argument("--no-v2t", action="store_true", help="text->video only")
    t2v.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    _benchmark_options(t2v)
    t2v.set_defaults(handler=run_t2v)

    export = commands.add_parser(
        "t2v-export",
        help="write our captioned text-to-video benchmark as mp4 files + split.json",
        description="Render the captioned benchmark (cached) and write it where other code can score it.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--out", type=Path, required=True, help="output folder")
    export.add_argument("--crf", type=int, default=18, help="H.264 quality (default: 18)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    _benchmark_options(export)
    export.set_defaults(handler=run_export)
