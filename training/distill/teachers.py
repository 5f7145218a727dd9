"""Teachers: networks (or rules) that score video pairs for the students to learn from.

Every teacher turns one video's region features `[T, R, D]` float32 into a prepared tensor (`prepare`) and
scores a prepared query against prepared targets (`similarities`, -> `[K]` float32 in [-1, 1]).

* `ChamferTeacher` (offline, no weights): region Chamfer then frame Chamfer of the raw region features, the
  fine-grained similarity with no learned part (`dnsvr.training.networks.similarity.chamfer_similarity`).  Over
  EfficientNet-Lite0 features it is the teacher of the bundled pack, named `chamfer/efficientnet_lite0`.  With
  a teacher layout (`dnsvr.training.data.crop_regions.TeacherLayout`) it reads features of
  `[T, layout.regions_per_frame, D]` regions: the query offers its full frame's 9 (and, with query turns, the 9
  of its frames turned by 1-3 quarter turns, a target scoring by the best orientation), each target its full
  frame's and its zoomed crops' (picture-in-picture insets matched at scale).
* `ViSiLTeacher`: the paper's teacher, the ViSiL head of the official `visil.pth` over 3840-d ResNet50
  L3-iMAC regions PCA-whitened with the official file (`dnsvr features --extractor resnet50
  --resnet-weights resnet50.pth --pca pca_resnet50_vcdb_1M.pth --pca-dims 3840`); or a ViSiL head we trained
  on labelled near-duplicates over the bundled `[T, 9, 512]` EfficientNet-Lite0 regions (`dnsvr train
  teacher`, `dnsvr.training.distill.teacher_train`); the checkpoint's shapes tell the dims.
* `FineStudentTeacher`: a trained fine-grained student (S^f_A or S^f_B) as the next teacher, the paper's
  iterative self-distillation (iter1 -> iter2).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from dnsvr.training.data.crop_regions import TeacherLayout, best_orientation_chamfer
from dnsvr.training.distill.augment import pad_batch
from dnsvr.training.networks.similarity import chamfer_similarity
from torch import Tensor, nn

TEACHER_KINDS = ("chamfer", "visil", "student")


class Teacher:
    """Base: `prepare` one video, `similarities` of a query against targets, in chunks of `chunk_size`."""

    name = "teacher"
    chunk_size = 16

    def prepare(self, features: np.ndarray | Tensor) -> Tensor:
        """`[T, R, D]` -> prepared `[T, R, D']` (identity here)."""
        return torch.as_tensor(np.asarray(features), dtype=torch.float32)

    def _score(self, query: Tensor, targets: Tensor, target_mask: Tensor) -> Tensor:
        """Prepared query `[Tq, R, D]`, padded targets `[K, T, R, D]` + mask `[K, T]` -> `[K]`."""
        raise NotImplementedError

    @torch.inference_mode()
    def similarities(self, query: Tensor, targets: Sequence[Tensor]) -> np.ndarray:
        """Prepared query `[Tq, R, D]` vs prepared targets `[T_k, R, D]` -> `[K]` float32 in [-1, 1]."""
        scores = []
        for start in range(0, len(targets), self.chunk_size):
            batch, mask = pad_batch(targets[start : start + self.chunk_size])
            scores.append(self._score(query, batch, mask).reshape(-1))
        return torch.cat(scores).numpy().astype(np.float32) if scores else np.zeros(0, np.float32)


class ChamferTeacher(Teacher):
    """Region Chamfer then frame Chamfer of the (L2-normalised) region features; no weights.  With a `layout`,
    features hold `layout.regions_per_frame` regions per frame in its order: the query is compared by its full
    frame's 9 (at each of its orientations, the best counting), against the full frame's and the crops' regions
    of each target."""

    def __init__(self, extractor: str = "efficientnet_lite0", layout: TeacherLayout | None = None):
        self.layout = layout
        self.name = f"chamfer/{extractor}" + (f" ({layout.describe()})" if layout else "")

    def prepare(self, features: np.ndarray | Tensor) -> Tensor:
        """`[T, R, D]` -> the same, checked against the layout's region count."""
        prepared = super().prepare(features)
        if self.layout is not None and prepared.shape[1] != self.layout.regions_per_frame:
            raise ValueError(f"the {self.name} teacher reads {self.layout.regions_per_frame} regions per "
                             f"frame, got features {tuple(prepared.shape)} (make them with `dnsvr train "
                             "pack --teacher-crops/--teacher-turns/--teacher-blurs`)")
        return prepared

    def _score(self, query: Tensor, targets: Tensor, target_mask: Tensor) -> Tensor:
        if self.layout is None:
            return chamfer_similarity(query, targets, target_mask=target_mask)
        return best_orientation_chamfer(self.layout.query_sides(query), self.layout.target_side(targets),
                                        target_mask)


class NetworkTeacher(Teacher):
    """A network with `index_video` and `calculate_video_similarity(q, t, q_mask, t_mask)` as teacher."""

    def __init__(self, network: nn.Module, name: str):
        self.network = network.eval()
        self.name = name

    @torch.inference_mode()
    def prepare(self, features: np.ndarray | Tensor) -> Tensor:
        """`[T, R, D]` -> the network's indexed features `[T, R, D']` (attention-weighted, or ±1 codes)."""
        return self.network.index_video(super().prepare(features))

    def _score(self, query: Tensor, targets: Tensor, target_mask: Tensor) -> Tensor:
        return self.network.calculate_video_similarity(query, targets, None, target_mask)


class ViSiLTeacher(NetworkTeacher):
    """A ViSiL head checkpoint as teacher: the official `visil.pth` (`visil_symmetric.pth` with symmetric=True)
    or one from `dnsvr train teacher`."""

    def __init__(self, checkpoint: str | Path, symmetric: bool = False):
        from dnsvr.training.networks.checkpoints import load_checkpoint

        head = load_checkpoint(checkpoint, kind="teacher", symmetric=symmetric)
        super().__init__(head, "visil" + ("_symmetric" if symmetric else "") + f" ({Path(checkpoint).name})")


class FineStudentTeacher(NetworkTeacher):
    """A fine-grained student checkpoint (S^f_A or S^f_B) as teacher: iterative self-distillation."""

    def __init__(self, checkpoint: str | Path):
        from dnsvr.training.networks.checkpoints import load_checkpoint

        student = load_checkpoint(checkpoint)
        if not hasattr(student, "fg_type"):
            raise ValueError(f"{checkpoint}: a teacher checkpoint must be a fine-grained student")
        super().__init__(student, f"{student.get_network_name()} ({Path(checkpoint).name})")


def load_teacher(kind: str, checkpoint: str | Path | None = None, extractor: str = "efficientnet_lite0",
                 symmetric: bool = False, layout: TeacherLayout | None = None) -> Teacher:
    """kind `chamfer` (no checkpoint; `layout`: its features' crops and turns, if any), `visil` (checkpoint =
    visil.pth or a head from `dnsvr train teacher`) or `student` (a fine student's checkpoint) -> the teacher."""
    if layout is not None and kind != "chamfer":
        raise ValueError(f"a teacher layout is for the chamfer teacher, not {kind!r}")
    if kind == "chamfer":
        return ChamferTeacher(extractor, layout)
    if kind not in TEACHER_KINDS:
        raise ValueError(f"teacher must be one of {', '.join(TEACHER_KINDS)}, got {kind!r}")
    if checkpoint is None:
        raise ValueError(f"the {kind} teacher needs a checkpoint file")
    return ViSiLTeacher(checkpoint, symmetric) if kind == "visil" else FineStudentTeacher(checkpoint)
