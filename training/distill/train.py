"""Training loops of DnS: fine students (S^f_A, S^f_B) and the coarse student S^c distilled from teacher
similarities, then the selector.

Students (`train_student`): each epoch draws, per anchor of the pairs file, `triplets_per_anchor`
(anchor, positive, negative) triplets from its pools; positives and negatives get the reference's temporal
augmentations (`dnsvr.training.distill.augment`).  The loss is L1 between the student's and the teacher's
similarities (the coarse student's targets mapped to [0, 1]), plus for the fine students 1e-3 x the
regulariser on the comparator output leaving [-1, 1].  Adam, lr 1e-4 (fine) / 1e-5 (coarse) by default.
S^f_B's W starts from ITQ on the corpus regions (or a given `{'proj': W}` file).

Students on crop views (`target_views`, issue 15): a served index stores each target by its full frame and the
zoomed crops of a grid (`dnsvr.training.data.crop_regions.CropLayout`), S^c scoring it by its best view, while a
query keeps its full frame.  Trained that way, each triplet's anchor keeps its full frame's 9 regions and its
positive and negative offer every view (read from the corpus's teacher features, `TargetViews`: the full frame's
9 regions then each crop's, the layout's target side); the student's similarity of a pair is its best view's
(S^c: the largest cosine over the views; S^f: the largest fine similarity), distilled to the teacher's similarity
of the same pair, which the crop teacher also takes over the target's crops.  Without it (the paper's), every
side is the full frame.

Selector (`train_selector`), on one of two pair sets (`SelectorConfig.pairs_from`):
* "pairs" (the paper's): every scored pair of the pairs file, labelled 1 when the fine student's similarity
  (mapped s / 2 + 0.5) and the coarse student's differ by more than `threshold` (or by more than the quantile
  that labels `positive_fraction` of the pairs 1, for teachers whose similarity range is not the paper's);
* "retrieval": what a search shows the selector, each corpus video's coarse top `block` other videos
  (`retrieval_pairs`), labelled 1 when re-scoring the pair alone by the fine student (put on the coarse scale
  by the pack's calibration, else s / 2 + 0.5) would move it past another video of its block
  (`ranking.positions_moved`): a label tied to a ranking change rather than to a score gap; with `beyond`,
  also candidates drawn from beyond the block, labelled 1 where the fine score would bring them into it (a
  search scores every candidate: a selector shown only top blocks extrapolates to the far ones).
Each epoch samples the same number of pairs from both classes; BCE.

Files: the network in the official format `{'model': state_dict}` (`dns_<kind>_student.pth`,
`dns_selector_cg-<fine>.pth`) and, next to it, `<name>.train-state.pth` with the optimizer state, epochs
done and the loss history, so `resume=True` continues an interrupted run.  Both are rewritten atomically
after every epoch.  Seeds: epoch e of a run with seed s seeds Python `random`, numpy and torch from (s, e),
so a resumed run makes the same draws as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dnsvr.client.spec import FINE_KINDS
from dnsvr.training.data.crop_regions import FULL_FRAME_REGIONS
from dnsvr.training.data.features_io import iter_features, list_ids, read_features
from dnsvr.training.distill.augment import pad_batch, temporal_augment
from dnsvr.training.distill.losses import (
    coarse_targets,
    distillation_loss,
    selector_labels,
    selector_loss,
    similarity_regularization,
    total_student_loss,
)
from dnsvr.training.distill.pairs import PairSet
from dnsvr.training.files import atomic_path
from dnsvr.training.networks.similarity import canonical_frames, frame_chamfer
from dnsvr.training.networks.students import CoarseGrainedStudent, FineGrainedStudent
from dnsvr.training.ranking import (
    ScoreCalibration,
    disagreement,
    fine_to_unit,
    positions_moved,
    ranking_order,
    selector_rows,
)
from torch import Tensor, nn
from tqdm import tqdm

STUDENT_KINDS = (*FINE_KINDS, "cg")  # the fine students by their one name (bin, att), and the coarse one
CHECKPOINT_NAMES = {**{k: f"dns_{f.official}_student.pth" for k, f in FINE_KINDS.items()}, "cg": "dns_cg_student.pth"}


@dataclass
class StudentConfig:
    """Hyper-parameters of one student run (reference defaults where the reference has one)."""

    kind: str = "bin"
    epochs: int = 30
    batch_size: int = 64  # pairs per step: batch_size // 2 triplets, as the reference's batch_sz
    learning_rate: float | None = None  # None: 1e-4 for fine students, 1e-5 for the coarse one
    weight_decay: float = 0.0
    regularization: float = 1e-3
    augmentation: bool = True
    triplets_per_anchor: int = 1
    max_frames: int = 300
    seed: int = 0
    dims: int = 512
    itq_file: str | None = None  # bin: W from this {'proj': W} file instead of ITQ on the corpus
    itq_regions: int = 100_000
    itq_iterations: int = 50
    transformer_heads: int = 8
    transformer_feedforward_dims: int = 2048
    transformer_layers: int = 1
    netvlad_clusters: int = 64
    netvlad_outdims: int = 1024

    def __post_init__(self) -> None:
        if self.kind not in STUDENT_KINDS:
            raise ValueError(f"student kind must be one of {', '.join(STUDENT_KINDS)}, got {self.kind!r}")
        if self.epochs < 1 or self.batch_size < 2 or self.triplets_per_anchor < 1 or self.max_frames < 1:
            raise ValueError("epochs, triplets_per_anchor and max_frames must be >= 1, batch_size >= 2")

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-5 if self.kind == "cg" else 1e-4


@dataclass
class SelectorConfig:
    """Hyper-parameters of the selector run (reference defaults)."""

    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    threshold: float = 0.2
    positive_fraction: float | None = None  # set: the threshold labels this fraction of the pairs 1
    pairs_per_class: int = 5000
    hidden_size: int = 100
    num_layers: int = 1
    max_frames: int = 300
    validation_fraction: float = 0.1
    seed: int = 0
    pairs_from: str = "pairs"  # "pairs" (the pairs file, disagreement labels) or "retrieval" (coarse top blocks)
    block: int = 10  # "retrieval": the coarse neighbours of each corpus video the selector learns on
    beyond: int = 0  # "retrieval": candidates from beyond each block it also learns on (`retrieval_pairs`)


@dataclass(frozen=True)
class TargetViews:
    """Where the students' targets offer their crop views: `path`, a features file of `[T, R', D]` per video whose
    first `regions` regions a frame are the target side of a teacher layout (the full frame's 9, then each crop's
    9: `TeacherLayout.target_regions`, `regions // 9` views)."""

    path: Path
    regions: int

    def __post_init__(self) -> None:
        if self.regions < 2 * FULL_FRAME_REGIONS or self.regions % FULL_FRAME_REGIONS:
            raise ValueError(f"target views need the full frame's {FULL_FRAME_REGIONS} regions and some crop's, a "
                             f"multiple of {FULL_FRAME_REGIONS}; got {self.regions} regions a frame")

    @property
    def views(self) -> int:
        return self.regions // FULL_FRAME_REGIONS


@dataclass
class TrainingResult:
    """checkpoint: the network file; losses: mean loss of every epoch so far; extra: per-run numbers."""

    checkpoint: Path
    losses: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int, epoch: int = 0) -> np.random.Generator:
    """Seed Python `random`, numpy's global state and torch from (seed, epoch) -> a numpy Generator."""
    sequence = np.random.SeedSequence([seed, epoch])
    state = int(sequence.generate_state(1)[0])
    random.seed(state)
    np.random.seed(state)
    torch.manual_seed(state)
    return np.random.default_rng(sequence)


def save_checkpoint(model: nn.Module, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write `{'model': state_dict}` atomically; `dtype` (e.g. float16) stores floating tensors smaller."""
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    with atomic_path(path) as partial:
        torch.save({"model": state}, partial)
    return Path(path)


def state_path(checkpoint: Path) -> Path:
    """`<name>.train-state.pth` next to the checkpoint `<name>.pth`."""
    return checkpoint.with_name(checkpoint.name.removesuffix(".pth") + ".train-state.pth")


def save_train_state(path: Path, optimizer: torch.optim.Optimizer, epochs: int, losses: list[float],
                     config: dict[str, Any]) -> None:
    """Write the optimizer state, epochs done, loss history and settings atomically (see `resume_training`)."""
    with atomic_path(path) as partial:
        torch.save({"optimizer": optimizer.state_dict(), "epochs_done": epochs,
                    "losses": torch.tensor(losses, dtype=torch.float64), "config": json.dumps(config)}, partial)


def resume_training(checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    config: dict[str, Any]) -> tuple[int, list[float]]:
    """Load model + optimizer of an earlier run with the same settings -> (epochs done, losses)."""
    state_file = state_path(checkpoint)
    if not (checkpoint.is_file() and state_file.is_file()):
        return 0, []
    state = torch.load(state_file, map_location="cpu", weights_only=True)
    stored = json.loads(state["config"])
    mismatched = sorted(k for k in config if k != "epochs" and stored.get(k) != config[k])
    if mismatched:
        raise ValueError(f"{state_file}: an earlier run with other settings ({', '.join(mismatched)}); "
                         "use another output folder or start afresh (resume=False, --no-resume)")
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epochs_done"]), [float(x) for x in state["losses"]]


def itq_initialisation(features_path: str | Path, config: StudentConfig, progress: bool = True) -> Tensor:
    """W `[D, D]` for S^f_B: from `config.itq_file`, else ITQ on up to `itq_regions` corpus regions."""
    from dnsvr.training.data.features_io import iter_features
    from dnsvr.training.distill.itq import itq, load_itq, sample_regions

    if config.itq_file:
        projection = load_itq(config.itq_file)
        if projection.shape[0] != config.dims:
            raise ValueError(f"{config.itq_file}: W is {tuple(projection.shape)}, "
                             f"the features are {config.dims}-d")
        return projection
    rng = np.random.default_rng(config.seed)
    videos = (video for _, video in iter_features(features_path))
    regions = sample_regions(videos, config.itq_regions, rng)
    projection = itq(regions, iterations=config.itq_iterations, seed=config.seed, progress=progress)
    return torch.from_numpy(projection)


def build_student(config: StudentConfig, itq_projection: Tensor | None = None) -> nn.Module:
    """A fresh student network of `config.kind` (bin's W set to `itq_projection` when given)."""
    if config.kind == "cg":
        return CoarseGrainedStudent(
            config.dims, transformer_heads=config.transformer_heads,
            transformer_feedforward_dims=config.transformer_feedforward_dims,
            transformer_layers=config.transformer_layers, netvlad_clusters=config.netvlad_clusters,
            netvlad_outdims=config.netvlad_outdims)
    student = FineGrainedStudent(config.dims, attention=config.kind == "att",
                                 binarization=config.kind == "bin")
    if itq_projection is not None and config.kind == "bin":
        student.binarization.W = nn.Parameter(itq_projection.detach().clone().float())
    return student


def paired_fine_similarity(student: FineGrainedStudent, query: Tensor, target: Tensor, query_mask: Tensor,
                           target_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Row b of the query batch against row b of the target batch (training's pairing, not all pairs).

    Indexed query `[B, Tq, R, D]`, target `[B, Tt, R, D]`, masks `[B, Tq]`, `[B, Tt]` -> (similarities `[B]`,
    the similarity regulariser of the comparator outputs, a scalar).  Equal to the diagonal of
    `student.calculate_video_similarity`.
    """
    query, query_mask = canonical_frames(query, query_mask)
    target, target_mask = canonical_frames(target, target_mask)
    scale = float(target.shape[-1]) if student.fg_type == "bin" else 1.0
    f2f = torch.einsum("bird,bjsd->bijrs", query, target).amax(dim=-1).mean(dim=-1) / scale
    f2f_mask = query_mask[:, :, None] & target_mask[:, None, :]
    out, out_mask = student.visil_head(f2f.masked_fill(~f2f_mask, 0.0), f2f_mask)
    regularization = similarity_regularization(out, out_mask)
    scores = frame_chamfer(student.htanh(out), out_mask.any(dim=2), out_mask.any(dim=1))
    return scores, regularization


def student_step_loss(student: nn.Module, batch: Tensor, mask: Tensor, teacher: Tensor,
                      regularization_weight: float) -> tuple[Tensor, Tensor]:
    """Loss of one batch of triplets: videos `[3B, T, R, D]` (anchors, positives, negatives), mask `[3B, T]`,
    teacher similarities `[B, 2]` (positive, negative) -> (total loss, distillation loss)."""
    indexed = student.index_video(batch, mask)
    anchors, positives, negatives = indexed.chunk(3)
    anchor_mask, positive_mask, negative_mask = mask.chunk(3)
    if isinstance(student, CoarseGrainedStudent):
        student_sims = torch.stack([(anchors * positives).sum(-1), (anchors * negatives).sum(-1)], dim=1)
        distillation = distillation_loss(student_sims.reshape(-1), coarse_targets(teacher).reshape(-1))
        return distillation, distillation
    pos, reg_pos = paired_fine_similarity(student, anchors, positives, anchor_mask, positive_mask)
    neg, reg_neg = paired_fine_similarity(student, anchors, negatives, anchor_mask, negative_mask)
    distillation = distillation_loss(torch.stack([pos, neg], dim=1).reshape(-1), teacher.reshape(-1))
    return total_student_loss(distillation, reg_pos + reg_neg, regularization_weight), distillation


def view_step_loss(student: nn.Module, anchors: Tensor, anchor_mask: Tensor, targets: Tensor, target_mask: Tensor,
                   teacher: Tensor, regularization_weight: float) -> tuple[Tensor, Tensor]:
    """Loss of one batch of triplets whose positives and negatives offer crop views (module docstring): anchors
    `[B, T, 9, D]` + mask `[B, T]`, targets `[2B, T', 9 * V, D]` (positives then negatives, each frame's views one
    after another, the full frame first) + mask `[2B, T']`, teacher similarities `[B, 2]` -> (total loss,
    distillation loss); a pair's student similarity is its best view's."""
    pairs, frames, regions, dims = targets.shape
    views = regions // FULL_FRAME_REGIONS
    per_view = targets.reshape(pairs, frames, views, FULL_FRAME_REGIONS, dims).transpose(1, 2)  # [2B, V, T', 9, D]
    per_view = per_view.reshape(pairs * views, frames, FULL_FRAME_REGIONS, dims)  # [2B * V, T', 9, D]
    view_mask = target_mask.repeat_interleave(views, dim=0)  # [2B * V, T']
    if isinstance(student, CoarseGrainedStudent):
        query = student.index_video(anchors, anchor_mask)  # [B, E]
        indexed = student.index_video(per_view, view_mask).reshape(pairs, views, -1)  # [2B, V, E]
        cosines = torch.einsum("be,bve->bv", query.repeat(2, 1), indexed)  # [2B, V]
        best = cosines.amax(dim=1).reshape(2, -1).T  # [B, 2] (positive, negative)
        distillation = distillation_loss(best.reshape(-1), coarse_targets(teacher).reshape(-1))
        return distillation, distillation
    query = student.index_video(anchors, anchor_mask).repeat(2, 1, 1, 1)  # [2B, T, 9, D']
    query_mask = anchor_mask.repeat(2, 1)  # [2B, T]
    scores, regularization = paired_fine_similarity(
        student, query.repeat_interleave(views, dim=0), student.index_video(per_view, view_mask),
        query_mask.repeat_interleave(views, dim=0), view_mask)  # [2B * V]
    best = scores.reshape(pairs, views).amax(dim=1).reshape(2, -1).T  # [B, 2] (positive, negative)
    distillation = distillation_loss(best.reshape(-1), teacher.reshape(-1))
    return total_student_loss(distillation, regularization, regularization_weight), distillation


def _triplet_clips(features_path: Path, triplets: list[tuple[str, str, str, float, float]], config: StudentConfig,
                   rng: np.random.Generator, target_views: TargetViews | None = None) -> list[np.ndarray]:
    """Anchors, then positives, then negatives as `[T, R, D]` arrays (positives and negatives augmented; with
    `target_views` read from its file with every view, R = its regions)."""
    ids = [t[0] for t in triplets] + [t[1] for t in triplets] + [t[2] for t in triplets]
    anchors = read_features(features_path, list(dict.fromkeys(ids[:len(triplets)] if target_views else ids)))
    targets = anchors
    if target_views is not None:  # a video may be one triplet's anchor and another's target: two dicts
        targets = read_features(target_views.path, list(dict.fromkeys(ids[len(triplets):])))
        for video_id, video in targets.items():
            if video.shape[1] < target_views.regions:
                raise ValueError(f"{target_views.path}: {video_id} has {video.shape[1]} regions a frame, fewer than "
                                 f"the {target_views.regions} of {target_views.views} views")
            targets[video_id] = video[:, :target_views.regions]
    clips = []
    for position, video_id in enumerate(ids):
        if position < len(triplets):
            clips.append(anchors[video_id][: config.max_frames])
            continue
        video = targets[video_id]
        if config.augmentation:
            video = temporal_augment(video, rng, config.max_frames)
        clips.append(video[: config.max_frames])
    return clips


def _teacher_batch(triplets: list[tuple[str, str, str, float, float]]) -> Tensor:
    """Teacher similarities `[B, 2]` (positive, negative) of the triplets."""
    return torch.tensor([[t[3], t[4]] for t in triplets], dtype=torch.float32)


def _step_loss(student: nn.Module, features_path: Path, triplets: list[tuple[str, str, str, float, float]],
               config: StudentConfig, rng: np.random.Generator,
               target_views: TargetViews | None) -> tuple[Tensor, Tensor]:
    """Load one batch of triplets and return its (total loss, distillation loss)."""
    clips = _triplet_clips(features_path, triplets, config, rng, target_views)
    teacher = _teacher_batch(triplets)
    if target_views is None:
        batch, mask = pad_batch(clips)
        return student_step_loss(student, batch, mask, teacher, config.regularization)
    anchors, anchor_mask = pad_batch(clips[:len(triplets)])
    targets, target_mask = pad_batch(clips[len(triplets):])
    return view_step_loss(student, anchors, anchor_mask, targets, target_mask, teacher, config.regularization)


def train_student(features_path: str | Path, pairs: PairSet | str | Path, out_dir: str | Path,
                  config: StudentConfig, resume: bool = True, progress: bool = True,
                  itq_projection: Tensor | None = None, target_views: TargetViews | None = None) -> TrainingResult:
    """Distil a student of `config.kind` from the teacher similarities in `pairs` over `features_path` (with
    `target_views`, the positives and negatives by their best crop view: module docstring).

    -> TrainingResult (checkpoint `out_dir/dns_<kind>_student.pth`, mean loss of every epoch, resumed ones
    included; extra: steps run by this call).  `itq_projection` `[D, D]` skips computing ITQ for bin.
    """
    features_path = Path(features_path)
    pair_set = PairSet.of(pairs)
    checkpoint = Path(out_dir) / CHECKPOINT_NAMES[config.kind]
    settings = {**asdict(config), "teacher": pair_set.teacher, "pairs": len(pair_set.pairs),
                **({"target_views": target_views.views} if target_views is not None else {})}
    seed_everything(config.seed)
    if config.kind == "bin" and itq_projection is None:
        itq_projection = itq_initialisation(features_path, config, progress)
    student = build_student(config, itq_projection).train()
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.lr,
                                 weight_decay=config.weight_decay)
    start, losses = resume_training(checkpoint, student, optimizer, settings) if resume else (0, [])
    triplets_per_step = max(1, config.batch_size // 2)
    step_losses: list[float] = []
    for epoch in range(start, config.epochs):
        rng = seed_everything(config.seed, epoch + 1)
        triplets = pair_set.triplets(rng, config.triplets_per_anchor)
        if not triplets:
            raise ValueError("the pairs file has no anchor with both a positive and a negative")
        order = rng.permutation(len(triplets))
        steps = math.ceil(len(triplets) / triplets_per_step)
        epoch_losses = []
        bar = tqdm(range(steps), desc=f"{config.kind} epoch {epoch + 1}/{config.epochs}", unit="step",
                   disable=not progress, leave=False)
        for step in bar:
            chosen = [triplets[i] for i in order[step * triplets_per_step:(step + 1) * triplets_per_step]]
            optimizer.zero_grad()
            loss, distillation = _step_loss(student, features_path, chosen, config, rng, target_views)
            loss.backward()
            optimizer.step()
            epoch_losses.append(float(loss.detach()))
            step_losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", distillation=f"{float(distillation.detach()):.4f}")
        losses.append(float(np.mean(epoch_losses)))
        save_checkpoint(student, checkpoint)
        save_train_state(state_path(checkpoint), optimizer, epoch + 1, losses, settings)
        if progress:
            tqdm.write(f"{config.kind} epoch {epoch + 1}/{config.epochs}: mean loss {losses[-1]:.4f}")
    return TrainingResult(checkpoint, losses, {"steps_this_run": len(step_losses)})


def fine_and_coarse_similarities(features_path: str | Path, pair_list: list[tuple[str, str, float]],
                                 fine: nn.Module, coarse: nn.Module, max_frames: int = 300,
                                 progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fine and coarse student similarities of every (query, target, _) pair -> (`[P]`, `[P]`) float32."""
    by_query: dict[str, list[int]] = {}
    for number, (query, _, _) in enumerate(pair_list):
        by_query.setdefault(query, []).append(number)
    fine_sims = np.zeros(len(pair_list), np.float32)
    coarse_sims = np.zeros(len(pair_list), np.float32)
    with torch.inference_mode():
        for query, numbers in tqdm(by_query.items(), desc="student similarities", unit="query",
                                   disable=not progress):
            targets = [pair_list[n][1] for n in numbers]
            videos = read_features(features_path, list(dict.fromkeys([query, *targets])))
            q = torch.from_numpy(videos[query][:max_frames])
            batch, mask = pad_batch([videos[t][:max_frames] for t in targets])
            fine_sims[numbers] = fine.calculate_video_similarity(
                fine.index_video(q), fine.index_video(batch, mask), None, mask)[0].numpy()
            coarse_sims[numbers] = coarse.calculate_video_similarity(
                coarse.index_video(q), coarse.index_video(batch, mask))[0].numpy()
    return fine_sims, coarse_sims


def retrieval_pairs(features_path: str | Path, coarse: nn.Module, block: int, max_frames: int = 300,
                    progress: bool = True, beyond: int = 0, seed: int = 0) -> list[tuple[str, str, float]]:
    """Each video of the features file with its `block` nearest other videos by the coarse student (best first;
    ties by id order), then `beyond` others drawn (seeded) from the rest -> (query id, target id, coarse
    similarity) pairs, each query's block first: the candidates a search would show the selector.  A search
    scores every candidate, so a selector that only ever saw top blocks extrapolates to the far ones (a pack's
    selector picked candidates ranked ~90 of 100 that way); `beyond` shows it some."""
    ids = list_ids(features_path)
    if block < 1 or beyond < 0 or len(ids) < 2:
        raise ValueError(f"retrieval pairs need block >= 1, beyond >= 0 and two videos or more, got block {block}, "
                         f"beyond {beyond} and {len(ids)} videos")
    with torch.inference_mode():
        vectors = torch.cat([coarse.index_video(torch.from_numpy(video[:max_frames]))
                             for _, video in tqdm(iter_features(features_path, ids), total=len(ids),
                                                  desc="coarse vectors", unit="video", disable=not progress)])
    similarities = (vectors @ vectors.T).numpy().astype(np.float32)  # [N, N]
    rng = np.random.default_rng(seed)
    pairs = []
    for row, query in enumerate(ids):
        others = np.delete(np.arange(len(ids)), row)
        ranked = others[ranking_order(similarities[row, others])]
        rest = ranked[block:]
        far = np.sort(rng.choice(rest, size=min(beyond, len(rest)), replace=False)) if beyond and len(rest) else []
        pairs += [(query, ids[column], float(similarities[row, column])) for column in [*ranked[:block], *far]]
    return pairs


def retrieval_labels(pair_list: list[tuple[str, str, float]], fine: np.ndarray, coarse: np.ndarray,
                     calibration: ScoreCalibration | None = None, block: int | None = None) -> np.ndarray:
    """Label `[P]` float32 of retrieval pairs (`retrieval_pairs`) from their fine `[P]` and coarse `[P]`
    similarities, the fine score put on the coarse scale: a pair of its query's block (the first `block` pairs
    of that query; None: all of them) gets 1 where that score would move it past another pair of the block; a
    pair from beyond the block gets 1 where that score would bring it into the block (above the block's lowest
    coarse score)."""
    rescored = calibration(fine) if calibration is not None else fine_to_unit(np.asarray(fine, np.float32))
    blocks: dict[str, list[int]] = {}
    for number, (query, _, _) in enumerate(pair_list):
        blocks.setdefault(query, []).append(number)
    labels = np.zeros(len(pair_list), np.float32)
    for numbers in blocks.values():
        inside, outside = numbers[:block], numbers[len(numbers[:block]):]
        labels[inside] = positions_moved(coarse[inside], rescored[inside]) >= 1
        if outside:
            labels[outside] = rescored[outside] > coarse[inside].min()
    return labels


def _balanced_sample(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices: the same number (min(per_class, smallest class)) from each class, shuffled."""
    classes = [np.flatnonzero(labels == value) for value in (0.0, 1.0)]
    size = min(per_class, *(len(c) for c in classes))
    chosen = np.concatenate([rng.choice(c, size=size, replace=False) for c in classes])
    return rng.permutation(chosen)


def _selector_forward(selector: nn.Module, features_path: Path, pair_list: list[tuple[str, str, float]],
                      coarse: np.ndarray, numbers: np.ndarray, max_frames: int) -> Tensor:
    queries = [pair_list[n][0] for n in numbers]
    targets = [pair_list[n][1] for n in numbers]
    videos = read_features(features_path, list(dict.fromkeys(queries + targets)))
    batch, mask = pad_batch([videos[v][:max_frames] for v in queries + targets])
    scores = selector.index_video(batch, mask)
    query_scores, target_scores = scores.chunk(2)
    rows = selector_rows(query_scores, target_scores, torch.from_numpy(coarse[numbers]))
    return selector(rows)[:, 0]


def train_selector(features_path: str | Path, pairs: PairSet | str | Path | None, fine_checkpoint: str | Path,
                   coarse_checkpoint: str | Path, out_dir: str | Path, config: SelectorConfig,
                   resume: bool = True, progress: bool = True,
                   calibration: ScoreCalibration | None = None) -> TrainingResult:
    """Train the selector on the pairs of `pairs` labelled by the fine and coarse students' disagreement, or
    (`config.pairs_from` "retrieval"; `pairs` unused) on the coarse top blocks labelled by ranking changes
    (`calibration`: the fine-to-coarse map those labels use; None: s / 2 + 0.5).

    -> TrainingResult (checkpoint `out_dir/dns_selector_cg-<fine kind>.pth`, mean BCE per epoch; extra:
    label counts and the last validation accuracy / F1).  Raises ValueError when the labels put every pair
    in one class.
    """
    from dnsvr.training.networks.checkpoints import load_checkpoint
    from dnsvr.training.networks.selector import SelectorNetwork

    features_path = Path(features_path)
    fine = load_checkpoint(fine_checkpoint)
    if not hasattr(fine, "fg_type"):
        raise ValueError(f"{fine_checkpoint}: not a fine-grained student checkpoint")
    coarse = load_checkpoint(coarse_checkpoint, kind="cg_student")
    if config.pairs_from not in ("pairs", "retrieval"):
        raise ValueError(f"selector pairs_from must be 'pairs' or 'retrieval', got {config.pairs_from!r}")
    if config.pairs_from == "retrieval":
        pair_list = retrieval_pairs(features_path, coarse, config.block, config.max_frames, progress,
                                    config.beyond, config.seed)
    elif pairs is None:
        raise ValueError("the selector's pairs_from 'pairs' needs a pairs file")
    else:
        pair_list = PairSet.of(pairs).all_pairs()
    fine_sims, coarse_sims = fine_and_coarse_similarities(features_path, pair_list, fine, coarse,
                                                          config.max_frames, progress)
    threshold: float | None = config.threshold
    if config.pairs_from == "retrieval":
        labels, threshold = retrieval_labels(pair_list, fine_sims, coarse_sims, calibration, config.block), None
    else:
        if config.positive_fraction is not None:
            if not 0.0 < config.positive_fraction < 1.0:
                raise ValueError(f"positive_fraction must be in (0, 1), got {config.positive_fraction}")
            threshold = float(np.quantile(disagreement(fine_sims, coarse_sims), 1.0 - config.positive_fraction))
        labels = selector_labels(torch.from_numpy(fine_sims), torch.from_numpy(coarse_sims), threshold).numpy()
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        rule = "by ranking change" if threshold is None else f"at threshold {threshold}"
        raise ValueError(f"all {len(labels)} pairs get label {int(labels[0])} {rule}: choose a threshold "
                         "between the students' disagreements, or more pairs")
    seed_everything(config.seed)
    split = np.random.default_rng(config.seed).permutation(len(labels))
    validation = split[: int(round(len(labels) * config.validation_fraction))]
    training = split[len(validation):]
    selector = SelectorNetwork(fine.dims, config.hidden_size, config.num_layers,
                               attention=fine.fg_type == "att", binarization=fine.fg_type == "bin").train()
    optimizer = torch.optim.Adam(selector.parameters(), lr=config.learning_rate,
                                 weight_decay=config.weight_decay)
    checkpoint = Path(out_dir) / f"dns_selector_cg-{FINE_KINDS[fine.fg_type].official}.pth"
    settings = {**asdict(config), "pairs": len(labels), "fine": Path(fine_checkpoint).name}
    start, losses = resume_training(checkpoint, selector, optimizer, settings) if resume else (0, [])
    extra: dict[str, Any] = {"pairs": len(labels), "threshold": threshold, "label_1": positives,
                             "label_0": len(labels) - positives}
    for epoch in range(start, config.epochs):
        rng = seed_everything(config.seed, epoch + 1)
        chosen = training[_balanced_sample(labels[training], config.pairs_per_class, rng)]
        selector.train()
        epoch_losses = []
        steps = range(0, len(chosen), config.batch_size)
        bar = tqdm(steps, desc=f"selector epoch {epoch + 1}/{config.epochs}", unit="step",
                   disable=not progress, leave=False)
        for begin in bar:
            numbers = chosen[begin: begin + config.batch_size]
            if len(numbers) < 2:
                continue
            optimizer.zero_grad()
            probabilities = _selector_forward(selector, features_path, pair_list, coarse_sims, numbers,
                                              config.max_frames)
            loss = selector_loss(probabilities, torch.from_numpy(labels[numbers]))
            loss.backward()
            optimizer.step()
            epoch_losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        losses.append(float(np.mean(epoch_losses)) if epoch_losses else float("nan"))
        if len(validation):
            extra.update(_validate(selector, features_path, pair_list, coarse_sims, labels, validation,
                                   config))
        save_checkpoint(selector, checkpoint)
        save_train_state(state_path(checkpoint), optimizer, epoch + 1, losses, settings)
        if progress:
            tqdm.write(f"selector epoch {epoch + 1}/{config.epochs}: mean loss {losses[-1]:.4f} "
                       f"validation accuracy {extra.get('val_accuracy', float('nan')):.3f}")
    return TrainingResult(checkpoint, losses, extra)


def _validate(selector: nn.Module, features_path: Path, pair_list: list[tuple[str, str, float]],
              coarse: np.ndarray, labels: np.ndarray, numbers: np.ndarray,
              config: SelectorConfig) -> dict[str, float]:
    """Accuracy and F1 (label 1) of the selector at 0.5 on the validation pairs."""
    selector.eval()
    predictions = []
    with torch.inference_mode():
        for begin in range(0, len(numbers), config.batch_size):
            chunk = numbers[begin: begin + config.batch_size]
            predictions.append(_selector_forward(selector, features_path, pair_list, coarse, chunk,
                                                 config.max_frames).numpy() > 0.5)
    predicted = np.concatenate(predictions)
    truth = labels[numbers] > 0.5
    true_positives = float(np.sum(predicted & truth))
    f1 = 2 * true_positives / max(1.0, float(predicted.sum() + truth.sum()))
    return {"val_accuracy": float(np.mean(predicted == truth)), "val_f1": f1}
