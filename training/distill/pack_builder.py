"""`dnsvr train pack`: the whole DnS pipeline on the offline corpus, written as a model pack.

corpus features (`corpus`) -> teacher pairs (`pairs`, the Chamfer teacher over EfficientNet-Lite0 regions, with
`teacher_crops` over those of zoomed crops too, with `teacher_turns` its queries turned and with `teacher_blurs`
its queries blurred as well (`dnsvr.training.data.crop_regions.TeacherLayout`, a second features file in
`work_dir`, or for a given labelled corpus the one `dnsvr train corpus --teacher-crops ...` wrote beside its
features), or with `teacher_checkpoint` a ViSiL head trained on those regions by `dnsvr train teacher`) ->
ITQ -> S^f_B (and S^f_A) -> S^c (the kinds in `view_students` distilled on the targets' crop views from those
teacher features, a pair scoring by its best view as the served index scores it: `train.TargetViews`; with
`full_frame_fine_teacher` the fine students on full frames learn from the full-frame Chamfer teacher's pairs, the
regions they see, while S^c, calibration and the default fusion keep the layout teacher's; with
`fine_on_generated_corpus` too, those fine students, the calibration and the selector on the generated corpus
beside the given one) ->
[optional self-distillation rounds: the fine student re-scores the pairs and the students are trained again]
-> the fine-to-coarse score calibration (`dnsvr.training.distill.calibration`) ->
selector (on each corpus video's coarse top 10, labelled by the ranking changes the calibrated fine score makes)
-> `pack.json` + checkpoints in the official format (see `dnsvr.training.packs.model_pack`) -> the default
re-rank fusion, judged by the teacher on the corpus (`dnsvr.training.distill.fusion_choice`, pack.json
"fusion").  Intermediate files (features, ITQ, pairs, checkpoints) go to `work_dir`, so an interrupted run
resumes; use a fresh `work_dir` for another corpus.  `corpus_features` takes an existing features file as the
corpus instead (e.g. `dnsvr train corpus`'s training-split features, whose labels the distillation does not
read).
The defaults keep the pack small (about 12 MB): the coarse student has 16 NetVLAD clusters, 256 output
dims, a 512-wide feed-forward layer and is stored in float16.  The fine students train at lr 1e-3 (the
reference's 1e-4 is for 100k videos; on this 83-video corpus it left S^f_B at 0.56 mAP on our benchmark
after 8 epochs, 0.97 with these settings).  Measured on 2 CPU cores: corpus 5 min and ITQ 1 min (loaded
machine), pairs 2 s, three students 10.6 min, selector 1.3 min, default fusion 6-50 s.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from dnsvr.training.data.corpus import CorpusConfig, build_corpus_features, build_teacher_features
from dnsvr.training.data.crop_regions import CropLayout, TeacherLayout
from dnsvr.training.data.features_io import list_ids
from dnsvr.training.data.labelled_corpus import teacher_features_path
from dnsvr.training.data.segments import SegmentLayout
from dnsvr.training.distill.calibration import fit_calibration
from dnsvr.training.distill.fusion_choice import choose_pack_fusion
from dnsvr.training.distill.itq import load_itq, save_itq
from dnsvr.training.distill.pairs import mine_pairs
from dnsvr.training.distill.teachers import FineStudentTeacher, Teacher, load_teacher
from dnsvr.training.distill.train import (
    STUDENT_KINDS,
    SelectorConfig,
    StudentConfig,
    TargetViews,
    TrainingResult,
    itq_initialisation,
    save_checkpoint,
    train_selector,
    train_student,
)
from dnsvr.training.files import atomic_path, atomic_write_text, read_json_file
from dnsvr.training.networks.checkpoints import load_checkpoint
from dnsvr.training.packs.model_pack import ModelPack
from tqdm import tqdm


@dataclass
class PackConfig:
    """Everything `train_pack` does; stored in pack.json as `training`."""

    name: str = "bundled"
    seed: int = 0
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    corpus_features: str | None = None  # an existing features file as the corpus (e.g. `dnsvr train corpus`'s)
    teacher_checkpoint: str | None = None  # a trained ViSiL head over the corpus features; None: Chamfer
    teacher_crops: tuple[tuple[float, float], ...] = ()  # (crop, stride) grids the Chamfer teacher also sees
    teacher_turns: bool = False  # the Chamfer teacher's queries also turned by 1-3 quarter turns
    teacher_blurs: tuple[float, ...] = ()  # ... and blurred by these Gaussian sigmas (pixels at 224)
    index_views: tuple[float, float] | None = (0.5, 0.25)  # (crop, stride): the grid indexed videos are also stored by
    index_segments: tuple[float, ...] | None = None  # frame-window lengths indexed videos are also stored by
    num_positives: int = 8
    num_negatives: int = 16
    self_pairs: bool = True
    iterations: int = 0
    attention_student: bool = True
    fine: StudentConfig = field(default_factory=lambda: StudentConfig(
        kind="bin", epochs=20, batch_size=64, triplets_per_anchor=4, learning_rate=1e-3, itq_regions=30_000))
    coarse: StudentConfig = field(default_factory=lambda: StudentConfig(
        kind="cg", epochs=10, batch_size=32, triplets_per_anchor=2, learning_rate=1e-4,
        transformer_feedforward_dims=512, netvlad_clusters=16, netvlad_outdims=256))
    selector: SelectorConfig = field(default_factory=lambda: SelectorConfig(
        epochs=12, learning_rate=1e-3, pairs_per_class=256, pairs_from="retrieval", block=10, beyond=10))
    coarse_float16: bool = True
    view_students: tuple[str, ...] = ()  # the student kinds distilled on the targets' crop views ("bin", "att",
    # "cg"; the teacher's grid = index_views); the others on full frames
    full_frame_fine_teacher: bool = False  # the fine students on full frames learn from the full-frame Chamfer
    # teacher (the regions they see), the others from the teacher_layout one (round 0; later rounds: one teacher)
    fine_on_generated_corpus: bool = False  # with corpus_features and full_frame_fine_teacher: those fine students,
    # and the calibration and selector that arbitrate them, on the generated corpus `corpus` (built in work_dir)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.view_students) - set(STUDENT_KINDS))
        if unknown:
            raise ValueError(f"view students are student kinds {list(STUDENT_KINDS)}, got {unknown}")
        if self.view_students and (not self.index_views or self.teacher_crops != (tuple(self.index_views),)):
            raise ValueError("students trained on crop views compare a target's views as the served index stores "
                             "them: the teacher's one crop grid must be the pack's index views (e.g. "
                             "--teacher-crops 0.5:0.25 --index-views 0.5:0.25), got teacher crops "
                             f"{list(self.teacher_crops)} and index views {self.index_views}")
        if self.full_frame_fine_teacher and (self.teacher_layout is None or self.teacher_checkpoint):
            raise ValueError("a full-frame teacher for the fine students is an alternative to the Chamfer teacher's "
                             "crops, turns or blurs (--teacher-crops / --teacher-turns / --teacher-blurs), which "
                             "the other students then learn from; give those, without --teacher-checkpoint")
        if self.fine_on_generated_corpus and not (self.full_frame_fine_teacher and self.corpus_features
                                                  and self.iterations == 0 and "bin" not in self.view_students):
            raise ValueError("fine students on the generated corpus are the full-frame-taught ones beside a given "
                             "corpus: give --corpus-features and --full-frame-fine-teacher, S^f_B on full frames, "
                             "without --iterations")
        if self.full_frame_fine_teacher and set(self.fine_kinds) <= set(self.view_students):
            raise ValueError("a full-frame teacher for the fine students needs one fine student on full frames: "
                             f"the view students {list(self.view_students)} include every fine kind "
                             f"{list(self.fine_kinds)}")

    @property
    def fine_kinds(self) -> tuple[str, ...]:
        """The fine student kinds the pack trains: S^f_B, and S^f_A with `attention_student`."""
        return ("bin", "att") if self.attention_student else ("bin",)

    def full_frame_taught(self, kind: str) -> bool:
        """Whether the student `kind` learns from the full-frame Chamfer teacher (`full_frame_fine_teacher`)."""
        return self.full_frame_fine_teacher and kind in self.fine_kinds and kind not in self.view_students

    @property
    def teacher_layout(self) -> TeacherLayout | None:
        """The Chamfer teacher's region layout, None for the full frame's regions alone."""
        return TeacherLayout.of(tuple(CropLayout(crop, stride) for crop, stride in self.teacher_crops),
                                self.teacher_turns, self.teacher_blurs)

    def describe(self) -> dict[str, Any]:
        data = asdict(self)
        data["corpus"] = self.corpus.describe()
        return data


def _write_pack_file(source: Path, target: Path, float16: bool = False) -> None:
    if float16:
        save_checkpoint(load_checkpoint(source), target, dtype=torch.float16)
        return
    with atomic_path(target) as partial:
        shutil.copyfile(source, partial)


def _round_students(features: Path, pairs: Path, full_frame: tuple[Path, Path] | None, out: Path,
                    config: PackConfig, progress: bool, itq_projection: torch.Tensor,
                    target_views: TargetViews | None) -> dict[str, TrainingResult]:
    """Train the pack's students on `features` and `pairs`, those `config.full_frame_taught` on the full-frame
    teacher's (features, pairs) when given (into `out/full_frame_teacher`: their settings differ by teacher)
    -> {kind: result}."""
    results = {}
    for kind in (*config.fine_kinds, "cg"):
        taught_full_frame = full_frame is not None and config.full_frame_taught(kind)
        student = replace(config.coarse if kind == "cg" else config.fine, kind=kind, seed=config.seed)
        kind_features, kind_pairs = full_frame if taught_full_frame else (features, pairs)
        results[kind] = train_student(kind_features, kind_pairs,
                                      out / "full_frame_teacher" if taught_full_frame else out, student,
                                      progress=progress, itq_projection=itq_projection if kind == "bin" else None,
                                      target_views=target_views if kind in config.view_students else None)
    return results


def given_corpus(features: Path) -> dict[str, Any]:
    """pack.json's description of a features file given as the corpus: its path, video count and, beside a
    labelled corpus's features (`dnsvr train corpus`), that corpus's config and split (its labels unused)."""
    if not features.is_file():
        raise ValueError(f"corpus features {features} do not exist (make them with `dnsvr train corpus`)")
    description: dict[str, Any] = {"features": str(features), "videos": len(list_ids(features))}
    labels = features.with_name("labels.json")
    if labels.is_file():
        meta = read_json_file(labels, ValueError, "labels")
        description |= {"labelled_corpus": meta.get("config"), "split": meta.get("split")}
    return description


def train_pack(out_dir: str | Path, work_dir: str | Path, config: PackConfig | None = None,
               progress: bool = True) -> ModelPack:
    """Run the pipeline (see the module docstring) and write the pack into `out_dir` -> the loaded pack."""
    config = config or PackConfig()
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def timed(stage: str, started: float) -> None:
        timings[stage] = round(time.monotonic() - started, 1)
        if progress:
            tqdm.write(f"[train pack] {stage}: {timings[stage]:.1f} s")

    layout = config.teacher_layout
    if layout is not None and config.teacher_checkpoint:
        raise ValueError("teacher crops, turns and blurs are the Chamfer teacher's: not with --teacher-checkpoint")
    teacher_features = None
    if layout is not None and config.corpus_features:
        teacher_features = teacher_features_path(config.corpus_features, layout)
        if not teacher_features.is_file():
            raise ValueError(f"{teacher_features} does not exist: make the corpus with the same --teacher-* options "
                             "(`dnsvr train corpus --teacher-crops ...`), which writes it beside its features")
    started = time.monotonic()
    if config.corpus_features:
        features = Path(config.corpus_features)
        corpus = given_corpus(features)
        if teacher_features is not None:
            corpus["teacher_features"] = {"features": teacher_features.name, "layout": layout.record(),
                                          "regions_per_frame": layout.regions_per_frame}
    else:
        features = work_dir / "corpus.h5"
        corpus = build_corpus_features(replace(config.corpus, seed=config.seed), features, progress=progress)
    fine_features = features  # the corpus of the full-frame-taught fine students (ITQ from theirs)
    if config.fine_on_generated_corpus:
        fine_features = work_dir / "corpus.h5"
        corpus["fine_students"] = build_corpus_features(replace(config.corpus, seed=config.seed), fine_features,
                                                        progress=progress)
    timed("corpus features", started)

    started = time.monotonic()
    generated = "_generated" if config.fine_on_generated_corpus else ""  # names the files made from that corpus
    itq_file = work_dir / f"itq_efficientnet_lite0{generated}_seed{config.seed}.pth"
    if itq_file.is_file():
        itq_projection = load_itq(itq_file)
    else:
        itq_projection = itq_initialisation(fine_features, replace(config.fine, seed=config.seed), progress)
        save_itq(itq_file, itq_projection)
    timed("itq", started)

    if layout is not None and teacher_features is None:  # the generated corpus: its teacher features made here
        started = time.monotonic()
        teacher_features = teacher_features_path(features, layout)  # beside corpus.h5 in the work dir
        corpus["teacher_features"] = build_teacher_features(replace(config.corpus, seed=config.seed), layout,
                                                            features, teacher_features, progress=progress)
        timed("teacher features", started)

    target_views = TargetViews(teacher_features, layout.target_regions) if config.view_students else None
    teacher: Teacher = load_teacher("visil" if config.teacher_checkpoint else "chamfer", config.teacher_checkpoint,
                                    layout=layout)
    teachers, rounds = [teacher.name], []
    for round_number in range(config.iterations + 1):
        started = time.monotonic()
        pairs = work_dir / f"pairs_round{round_number}.json"
        mine_pairs(features, pairs, teacher, config.num_positives, config.num_negatives, config.seed,
                   teacher_features_path=teacher_features if round_number == 0 else None,
                   progress=progress, self_pairs=config.self_pairs)
        full_frame = None  # (features, pairs) of the full-frame-taught fine students
        if round_number == 0 and config.full_frame_fine_teacher:
            full_frame = (fine_features, work_dir / f"pairs_round0_full_frame{generated}.json")
            full_frame_teacher = load_teacher("chamfer")
            mine_pairs(*full_frame, full_frame_teacher, config.num_positives, config.num_negatives, config.seed,
                       progress=progress, self_pairs=config.self_pairs)
            teachers[0] = (f"{teacher.name}; fine students on full frames: {full_frame_teacher.name}"
                           + (" on the generated corpus" if config.fine_on_generated_corpus else ""))
        timed(f"round {round_number} pairs", started)
        started = time.monotonic()
        results = _round_students(features, pairs, full_frame, work_dir / f"round{round_number}", config,
                                  progress, itq_projection, target_views)
        timed(f"round {round_number} students", started)
        rounds.append({kind: {"first_epoch_loss": r.losses[0], "last_epoch_loss": r.losses[-1],
                              "epoch_losses": r.losses} for kind, r in results.items()})
        if round_number < config.iterations:
            teacher = FineStudentTeacher(results["att" if config.attention_student else "bin"].checkpoint)
            teachers.append(f"{teacher.network.get_network_name()} iter{round_number + 1}")

    # the calibration and the selector on the corpus and pairs of the fine student they arbitrate
    arbitrated = full_frame if config.fine_on_generated_corpus else (features, pairs)
    started = time.monotonic()
    calibration = fit_calibration(*arbitrated, load_checkpoint(results["bin"].checkpoint),
                                  load_checkpoint(results["cg"].checkpoint, kind="cg_student"), progress)
    timed("calibration", started)

    started = time.monotonic()
    selector = train_selector(*arbitrated, results["bin"].checkpoint, results["cg"].checkpoint,
                              results["bin"].checkpoint.parent,  # beside the fine student it arbitrates
                              replace(config.selector, seed=config.seed), progress=progress,
                              calibration=calibration)
    timed("selector", started)

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"fine": "dns_fg_bin_student.pth", "coarse": "dns_cg_student.pth",
             "selector": "dns_selector_cg-fg_bin.pth"}
    _write_pack_file(results["bin"].checkpoint, out_dir / files["fine"])
    _write_pack_file(results["cg"].checkpoint, out_dir / files["coarse"], float16=config.coarse_float16)
    _write_pack_file(selector.checkpoint, out_dir / files["selector"])
    if config.attention_student:
        files["fine_att"] = "dns_fg_att_student.pth"
        _write_pack_file(results["att"].checkpoint, out_dir / files["fine_att"])
    manifest = {
        "name": config.name,
        "extractor": "efficientnet_lite0",
        "taps": [6, 7],
        "fine": "bin",
        "teacher": " -> ".join(teachers),
        "files": files,
        "seed": config.seed,
        "corpus": corpus,
        "calibration": calibration.to_dict(),
        **({"index_views": CropLayout(*config.index_views).record()} if config.index_views else {}),
        **({"index_segments": SegmentLayout(config.index_segments).record()} if config.index_segments else {}),
        "training": {
            "config": config.describe(),
            "rounds": rounds,
            "selector": {"epoch_losses": selector.losses, **selector.extra},
            "seconds": timings,
            "torch": torch.__version__,
            "command": "dnsvr train pack",
        },
    }
    atomic_write_text(out_dir / "pack.json", json.dumps(manifest, indent=2) + "\n")

    started = time.monotonic()
    choice = choose_pack_fusion(out_dir, features, pairs, progress=progress)
    timed("default fusion", started)
    if progress:
        tqdm.write(choice.table())
    return ModelPack.from_dir(out_dir)
