"""The offline text-video student's whole training, from nothing but the installed packages: the one sequence
`dnsvr train t2v` and the ablation entry points (`train_t2v.train_student`, ...) run.

  1. frame features of the training videos, cached in `work_dir/frames.h5` (`data.t2v_corpus`, resumable);
  2. captions: a file of yours, or generated from each video's top classes (`t2v_captions`), saved to
     `work_dir/captions.json`;
  3. teachers: the offline ones by kind (concept, lexical; sharing one EfficientNet-Lite0 classifier) and any
     precomputed `.npz` files;
  4. `train_t2v.train_t2v`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dnsvr.training.data.t2v_corpus import T2VCorpusConfig, build_frame_features, read_frame_features
from dnsvr.training.distill.t2v_captions import Caption, generate_captions, load_captions, save_captions
from dnsvr.training.distill.t2v_teachers import ClassProbabilities, PrecomputedTeacher, T2VTeacher, create_teacher
from dnsvr.training.distill.train_t2v import T2VTrainConfig, T2VTrainResult, train_t2v

OFFLINE_TEACHERS = ("concept", "lexical")


@dataclass
class TrainingData:
    """What training reads: `{video id: features [T, 1280]}`, captions, the corpus description, the classifier."""

    features: dict[str, np.ndarray]
    captions: list[Caption]
    corpus: dict[str, Any]
    probabilities: ClassProbabilities


def prepare_training_data(corpus: T2VCorpusConfig, work_dir: str | Path, max_frames: int,
                          captions_path: str | Path | None = None, captions_per_video: int = 2, seed: int = 0,
                          progress: bool = True) -> TrainingData:
    """Steps 1-2 of the module docstring."""
    work_dir = Path(work_dir)
    corpus_info = build_frame_features(corpus, work_dir / "frames.h5", progress=progress)
    features = read_frame_features(work_dir / "frames.h5", max_frames, corpus_info.pop("ids"))
    probabilities = ClassProbabilities()
    if captions_path is not None:
        captions = load_captions(captions_path)
    else:
        from dnsvr.training.data.imagenet_classes import imagenet_class_names

        frame_probabilities = {v: probabilities(torch.from_numpy(f)) for v, f in features.items()}
        captions = generate_captions(frame_probabilities, imagenet_class_names(), captions_per_video, seed=seed)
    save_captions(work_dir / "captions.json", captions)
    return TrainingData(features, captions, corpus_info, probabilities)


def check_teacher_kinds(kinds: Sequence[str]) -> None:
    """ValueError unless every kind is one of `OFFLINE_TEACHERS`."""
    bad = [k for k in kinds if k not in OFFLINE_TEACHERS]
    if bad:
        raise ValueError(f"offline teachers are {', '.join(OFFLINE_TEACHERS)} (others: precomputed files), got {bad}")


def make_teachers(kinds: Sequence[str], probabilities: ClassProbabilities,
                  teacher_files: Sequence[str | Path] = ()) -> list[T2VTeacher]:
    """The offline teachers by kind (`OFFLINE_TEACHERS`) and the precomputed ones."""
    check_teacher_kinds(kinds)
    return [create_teacher(k, probabilities=probabilities) for k in kinds] + [PrecomputedTeacher(f)
                                                                           for f in teacher_files]


def train_on_corpus(corpus: T2VCorpusConfig, work_dir: str | Path, config: T2VTrainConfig,
                    teachers: Sequence[str] = OFFLINE_TEACHERS, teacher_files: Sequence[str | Path] = (),
                    captions_path: str | Path | None = None, captions_per_video: int = 2,
                    progress: bool = True) -> tuple[T2VTrainResult, TrainingData]:
    """The whole sequence (module docstring) -> the training result and the data it used."""
    check_teacher_kinds(teachers)
    data = prepare_training_data(corpus, work_dir, config.max_frames, captions_path, captions_per_video,
                                 config.seed, progress)
    result = train_t2v(data.features, data.captions, make_teachers(teachers, data.probabilities, teacher_files),
                       config, progress=progress)
    return result, data
