"""Make the packs `view_students_bench.py` compares: students distilled on crop views, and without, each put in a
copy of the bundled pack (its other networks, selector, calibration and fusion unchanged).

    .venv/bin/dnsvr train corpus --out lc --sources 130 --copies 2 --frames 12 --max-real-frames 16 \
        --teacher-crops 0.5:0.25 --teacher-blurs 1.5                               # 403 videos, ~29 min
    .venv/bin/python benchmarks/view_students_train.py --corpus lc --out packs     # S^c views / plain, ~17 min
    .venv/bin/python benchmarks/view_students_train.py --corpus lc --out packs --fine-views-epochs 4   # + S^f_B
    .venv/bin/python benchmarks/view_students_bench.py --packs bundled=training/packs/bundled \
        views=packs/pack_views plain=packs/pack_plain --presets heldout --seeds 0 1 2 --segments 0.25

Issue #15 (stop 51, `benchmarks/results/view_students.md`).  The labelled corpus's pairs are scored by the Chamfer
teacher over its layout (the target's full frame and the grid's zoomed crops; the query's full frame and blurred
frames), then S^c is trained with the bundled pack's coarse settings on the targets' views (`TargetViews`: a pair
scores by its best view) and on full frames (`plain`); `--fine-views-epochs N` also trains S^f_B on views into a
copy of the views pack (`pack_views_bin`).  Each run resumes from what is in `--out`.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from dnsvr.training.data.crop_regions import CropLayout, TeacherLayout
from dnsvr.training.data.labelled_corpus import FEATURES_FILE, teacher_features_path
from dnsvr.training.distill.pack_builder import PackConfig
from dnsvr.training.distill.pairs import mine_pairs
from dnsvr.training.distill.teachers import ChamferTeacher
from dnsvr.training.distill.train import TargetViews, save_checkpoint, train_student
from dnsvr.training.networks.checkpoints import load_checkpoint
from dnsvr.training.packs.model_pack import ModelPack


def pack_with(base: Path, out: Path, replaced: dict[str, Path], float16: set[str]) -> None:
    """A copy of the pack `base` at `out` with the files named in `replaced` ({pack file name: checkpoint})."""
    shutil.copytree(base, out, dirs_exist_ok=True)
    for name, checkpoint in replaced.items():
        save_checkpoint(load_checkpoint(checkpoint), out / name, dtype=torch.float16 if name in float16 else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="`dnsvr train corpus` folder with its teacher file")
    parser.add_argument("--out", type=Path, required=True, help="work folder: pairs, runs and the packs")
    parser.add_argument("--grid", type=CropLayout.parse, default=CropLayout(), metavar="CROP:STRIDE",
                        help="the corpus's --teacher-crops grid, the views (default: 0.5:0.25)")
    parser.add_argument("--blurs", type=float, nargs="*", default=[1.5], help="its --teacher-blurs (default: 1.5)")
    parser.add_argument("--coarse-epochs", type=int, default=10, help="(default: 10, the pack's)")
    parser.add_argument("--fine-views-epochs", type=int, default=0, help="also S^f_B on views (default: 0, not)")
    args = parser.parse_args()
    layout = TeacherLayout((args.grid,), query_blurs=tuple(args.blurs))
    features = args.corpus / FEATURES_FILE
    teacher = teacher_features_path(features, layout)
    views = TargetViews(teacher, layout.target_regions)
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = args.out / "pairs.json"
    defaults = PackConfig()  # the pack's pair and student settings, so its pairs are `train pack`'s
    mine_pairs(features, pairs, ChamferTeacher(layout=layout), defaults.num_positives, defaults.num_negatives, 0,
               teacher_features_path=teacher, self_pairs=defaults.self_pairs)
    bundled = ModelPack.bundled()
    coarse = replace(defaults.coarse, epochs=args.coarse_epochs, seed=0)
    for name, target_views in (("views", views), ("plain", None)):
        result = train_student(features, pairs, args.out / name, coarse, target_views=target_views)
        pack_with(bundled.root, args.out / f"pack_{name}", {bundled.files["coarse"]: result.checkpoint},
                  {bundled.files["coarse"]})
    if args.fine_views_epochs:
        fine = replace(defaults.fine, kind="bin", epochs=args.fine_views_epochs, seed=0)
        result = train_student(features, pairs, args.out / "views_bin", fine, target_views=views)
        pack_with(args.out / "pack_views", args.out / "pack_views_bin", {bundled.files["fine"]: result.checkpoint},
                  set())


if __name__ == "__main__":
    main()
