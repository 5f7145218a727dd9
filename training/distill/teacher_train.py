"""Train the ViSiL teacher head on labelled near-duplicate groups (the paper's teacher, trained offline by us).

Data: a features file (`features_io` layout, video id -> `[T, 9, 512]` float32) and a labels JSON

    {"videos": {"<video id>": {"group": "<group name>", ...}, ...}, ...}

Videos that share a group are near-duplicates of each other (a generated source and its edited copies, which
the generator labels for free); videos of other groups are negatives.  Videos of the features file that the
labels do not name are not used; a group of one video is only ever a negative.  When every video also lists the
photographs it shows (`"photos"`, as `dnsvr train corpus` writes), a negative must share none with the anchor
(`labelled_corpus.clean_negative`): two groups filmed over one photograph overlap in content.

Network: `dnsvr.training.networks.visil.ViSiLHead` (the network the official `visil.pth` loads into, numerics
unchanged) built with `dims` = the features' D, non-symmetric: region Chamfer of attention-weighted regions ->
video comparator CNN -> Hardtanh -> frame Chamfer.  Training is ViSiL's recipe, written here from the paper's
description: per triplet (anchor a, positive p, negative n) the hinge max(0, S(a, n) - S(a, p) + margin) on the
video similarities, plus `regularization` x the similarity regulariser (how far the comparator's output leaves
[-1, 1] before the Hardtanh, summed over each pair's output matrix and averaged over the batch's pairs,
`losses.similarity_regularization`); Adam; the attention context vector is projected back onto the unit
sphere after every step (the constraint of ViSiL's attention).  Reference settings: margin 0.5,
regularisation weight 0.5, lr 1e-5 with batches of 64 triplets over a large labelled set (VCDB); the default
lr here is 1e-3 for the small synthetic sets this project trains on (`TeacherConfig`): on 128 labelled videos,
20 epochs at 1e-3 reached 0.990 mAP on our small benchmark, at 1e-4 0.977, below the Chamfer teacher's 0.980
(benchmarks/results/teacher.md).  Hard negatives by global-vector cosine hurt there (0.868): synthetic
sources share photographs, so the most similar "negatives" show the same scenes.  On the held-out preset,
trained on 208 videos of `dnsvr train corpus`, it ties the Chamfer teacher (0.870 vs 0.873).

Feature layout: the bundled extractor's `[T, 9, 512]` regions (EfficientNet-Lite0 stages 6 + 7, see
`dnsvr.training.networks.efficientnet`), the very features the students read.  ViSiL itself concatenates
four ResNet stages (3840-d); a richer Lite0 concatenation would need a second feature file for every corpus
video (teacher features apart from student features, which `dnsvr train pairs --teacher-features` supports)
and was not measured here; the 512-d layout keeps the teacher a drop-in for the Chamfer teacher over the
same file, and the extractor docstring's measurement chose stages 6 + 7 as the best 512-d set for Chamfer.

Triplets (`build_triplets`): every ordered (anchor, positive) pair of a group, each with `negatives_per_pair`
negatives drawn uniformly from the other groups' videos, or from the anchor's `hard_negatives` most similar
other-group videos by the cosine of mean-pooled region vectors (`pairs.global_vectors`); optionally capped at
`triplets_per_epoch`.  Epoch e of a run with seed s draws from (s, e), so a resumed run matches an
uninterrupted one.

Files: the trained head as `{'model': state_dict}` at `out` (loads with `load_teacher('visil', out)` and
`load_checkpoint(out, kind='teacher')`), and `<out stem>.train-state.pth` next to it (optimizer, epochs done,
loss history, settings), both rewritten atomically after every epoch; rerunning resumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dnsvr.training.data.features_io import list_ids, read_features
from dnsvr.training.distill.augment import pad_batch
from dnsvr.training.distill.losses import similarity_regularization
from dnsvr.training.distill.teachers import Teacher
from dnsvr.training.distill.train import (
    TrainingResult,
    resume_training,
    save_checkpoint,
    save_train_state,
    seed_everything,
    state_path,
)
from dnsvr.training.files import read_json_file
from dnsvr.training.networks.similarity import canonical_frames, frame_chamfer
from dnsvr.training.networks.visil import ViSiLHead
from torch import Tensor
from tqdm import tqdm

Triplet = tuple[str, str, str]
NegativeRule = Callable[[str, str], bool]


class LabelsError(ValueError):
    """A labels file or labelling that cannot train a teacher: unreadable, malformed, naming videos the
    features lack, or without a group of two videos and a second group."""


@dataclass
class TeacherConfig:
    """Hyper-parameters of one teacher run (see the module docstring for the reference values)."""

    epochs: int = 20
    batch_size: int = 16  # triplets per step
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    margin: float = 0.5
    regularization: float = 0.5
    negatives_per_pair: int = 1
    hard_negatives: int = 0  # > 0: negatives from the anchor's this many most similar other-group videos
    triplets_per_epoch: int | None = None  # None: every (anchor, positive) pair once per epoch
    max_frames: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.negatives_per_pair < 1 or self.max_frames < 1:
            raise ValueError("epochs, batch_size, negatives_per_pair and max_frames must be >= 1")
        if self.hard_negatives < 0 or (self.triplets_per_epoch is not None and self.triplets_per_epoch < 1):
            raise ValueError("hard_negatives must be >= 0 and triplets_per_epoch >= 1 (or None)")
        if self.learning_rate <= 0 or self.margin < 0 or self.regularization < 0:
            raise ValueError("learning_rate must be > 0, margin and regularization >= 0")


def read_labels(path: str | Path) -> dict[str, Any]:
    """The labels JSON document, checked to give every video a group.  Raises LabelsError for an unreadable
    or malformed file."""
    path = Path(path)
    data = read_json_file(path, LabelsError, "labels")
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise LabelsError(f'{path}: expected {{"videos": {{video_id: {{"group": ...}}, ...}}}}')
    bad = [v for v, record in videos.items() if not isinstance(record, dict) or "group" not in record]
    if bad:
        raise LabelsError(f"{path}: {len(bad)} videos without a group, e.g. {bad[:3]}")
    return data


def label_groups(document: Mapping[str, Any]) -> dict[str, str]:
    """{video id: group} of a labels document (`read_labels`)."""
    return {str(v): str(record["group"]) for v, record in document["videos"].items()}


def load_labels(path: str | Path) -> dict[str, str]:
    """Labels JSON -> {video id: group}.  Raises LabelsError for an unreadable or malformed file."""
    return label_groups(read_labels(path))


def negative_rule(document: Mapping[str, Any]) -> NegativeRule | None:
    """`labelled_corpus.clean_negative` over a labels document whose videos all list their photos, else None
    (then any other-group video is a negative)."""
    if not all(isinstance(record.get("photos"), list) for record in document["videos"].values()):
        return None
    from dnsvr.training.data.labelled_corpus import clean_negative

    return lambda a, b: clean_negative(document, a, b)


def check_labels(groups: Mapping[str, str], feature_ids: Iterable[str]) -> None:
    """Raise LabelsError unless every labelled video has features, some group has two videos and there is
    a second group to draw negatives from."""
    missing = sorted(set(groups) - set(feature_ids))
    if missing:
        raise LabelsError(f"the labels name {len(missing)} videos the features file lacks, e.g. {missing[:5]}")
    sizes: dict[str, int] = {}
    for group in groups.values():
        sizes[group] = sizes.get(group, 0) + 1
    if len(sizes) < 2 or max(sizes.values()) < 2:
        raise LabelsError(f"training needs a group of >= 2 videos and another group; got {len(sizes)} groups "
                          f"of at most {max(sizes.values(), default=0)} videos")


def build_triplets(groups: Mapping[str, str], seed: int, negatives_per_pair: int = 1,
                   similarity: np.ndarray | None = None, hard_negatives: int = 0,
                   limit: int | None = None, negative_ok: NegativeRule | None = None) -> list[Triplet]:
    """(anchor, positive, negative) ids: every ordered pair of a group x `negatives_per_pair` negatives.

    groups: {video id: group}; similarity `[N, N]` over `sorted(groups)` (needed when `hard_negatives` > 0:
    negatives come from the anchor's that many most similar other-group videos, else from all of them);
    limit: keep at most this many, drawn at random; negative_ok(anchor, other): whether an other-group video
    may be the anchor's negative (None: all may; an anchor left with none gets no triplets).  Deterministic
    for a seed.
    """
    check_labels(groups, groups)
    ids = sorted(groups)
    if hard_negatives and (similarity is None or similarity.shape != (len(ids), len(ids))):
        raise ValueError(f"hard negatives need a [{len(ids)}, {len(ids)}] similarity over the sorted ids")
    labels = np.array([groups[i] for i in ids])
    rng = np.random.default_rng(seed)
    out = []
    for a in range(len(ids)):
        positives = np.flatnonzero((labels == labels[a]) & (np.arange(len(ids)) != a))
        negatives = np.flatnonzero(labels != labels[a])
        if negative_ok is not None:
            negatives = np.array([n for n in negatives if negative_ok(ids[a], ids[n])], dtype=np.int64)
        if len(negatives) == 0:
            continue
        if hard_negatives:
            negatives = negatives[np.argsort(-similarity[a, negatives], kind="stable")[:hard_negatives]]
        for p in positives:
            for n in rng.choice(negatives, size=negatives_per_pair, replace=True):
                out.append((ids[a], ids[int(p)], ids[int(n)]))
    if limit is not None and limit < len(out):
        out = [out[i] for i in sorted(rng.choice(len(out), size=limit, replace=False))]
    return out


def paired_visil_similarity(head: ViSiLHead, query: Tensor, target: Tensor, query_mask: Tensor,
                            target_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Row b of the query batch against row b of the target batch, with the training regulariser.

    Indexed (attention-weighted) query `[B, Tq, R, D]`, target `[B, Tt, R, D]`, masks `[B, Tq]`, `[B, Tt]` ->
    (similarities `[B]`, regulariser summed over the B comparator outputs, a scalar).  Equal to the diagonal
    of `head.calculate_video_similarity` (non-symmetric head).
    """
    if head.symmetric:
        raise ValueError("teacher training covers the non-symmetric ViSiL head")
    query, query_mask = canonical_frames(query, query_mask)
    target, target_mask = canonical_frames(target, target_mask)
    f2f = torch.einsum("bird,bjsd->bijrs", query, target).amax(dim=-1).mean(dim=-1)
    f2f_mask = query_mask[:, :, None] & target_mask[:, None, :]
    out, out_mask = head.visil_output(f2f.masked_fill(~f2f_mask, 0.0), f2f_mask)
    scores = frame_chamfer(head.htanh(out), out_mask.any(dim=2), out_mask.any(dim=1))
    return scores, similarity_regularization(out, out_mask)


def teacher_step_loss(head: ViSiLHead, batch: Tensor, mask: Tensor, margin: float,
                      regularization_weight: float) -> tuple[Tensor, dict[str, float]]:
    """Loss of one batch: videos `[3B, T, R, D]` (anchors, positives, negatives), mask `[3B, T]` ->
    (triplet hinge mean + weight x regulariser per pair, {'triplet', 'regularization', 'accuracy'})."""
    indexed = head.index_video(batch, mask)
    anchors, positives, negatives = indexed.chunk(3)
    anchor_mask, positive_mask, negative_mask = mask.chunk(3)
    pos, reg_pos = paired_visil_similarity(head, anchors, positives, anchor_mask, positive_mask)
    neg, reg_neg = paired_visil_similarity(head, anchors, negatives, anchor_mask, negative_mask)
    triplet = (neg - pos + margin).clamp(min=0.0).mean()
    regularization = (reg_pos + reg_neg) / (2 * len(pos))
    parts = {"triplet": float(triplet.detach()), "regularization": float(regularization.detach()),
             "accuracy": float((pos > neg).float().mean())}
    return triplet + regularization_weight * regularization, parts


def _batch(videos: Mapping[str, np.ndarray], triplets: Sequence[Triplet], max_frames: int) -> tuple[Tensor, Tensor]:
    order = [t[0] for t in triplets] + [t[1] for t in triplets] + [t[2] for t in triplets]
    return pad_batch([videos[v][:max_frames] for v in order])


def train_teacher(features_path: str | Path, labels: str | Path | Mapping[str, str], out: str | Path,
                  config: TeacherConfig | None = None, resume: bool = True,
                  progress: bool = True) -> TrainingResult:
    """Train a ViSiL head on the labelled videos of `features_path` and write it to `out` (see the module
    docstring).  labels: a labels JSON file or {video id: group}.

    -> TrainingResult (checkpoint `out`, mean loss of every epoch so far, resumed ones included; extra:
    steps run by this call, the last epoch's triplet loss and in-batch triplet accuracy).  Raises LabelsError
    for unusable labels, ValueError for a stored run with other settings.
    """
    config = config or TeacherConfig()
    features_path, out = Path(features_path), Path(out)
    document = None if isinstance(labels, Mapping) else read_labels(labels)
    groups = dict(labels) if document is None else label_groups(document)
    negative_ok = None if document is None else negative_rule(document)
    check_labels(groups, list_ids(features_path))
    videos = read_features(features_path, sorted(groups))
    dims = {v.shape[-1] for v in videos.values()}
    if len(dims) != 1:
        raise ValueError(f"{features_path}: the labelled videos have features of several sizes {sorted(dims)}")
    similarity = None
    if config.hard_negatives:
        from dnsvr.training.distill.pairs import global_vectors

        vectors = global_vectors(features_path, sorted(groups), progress=False)
        similarity = vectors @ vectors.T
    settings = {**asdict(config), "videos": len(groups), "groups": len(set(groups.values())),
                "features": features_path.name, "clean_negatives": negative_ok is not None}
    seed_everything(config.seed)
    head = ViSiLHead(dims=dims.pop()).train()
    optimizer = torch.optim.Adam(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    out.parent.mkdir(parents=True, exist_ok=True)
    start, losses = resume_training(out, head, optimizer, settings) if resume else (0, [])
    steps_run, parts = 0, {}
    for epoch in range(start, config.epochs):
        rng = seed_everything(config.seed, epoch + 1)
        triplets = build_triplets(groups, int(rng.integers(2**31)), config.negatives_per_pair, similarity,
                                  config.hard_negatives, config.triplets_per_epoch, negative_ok)
        if not triplets:
            raise LabelsError("no (anchor, positive) pair has a negative that shares no photograph with it")
        order = rng.permutation(len(triplets))
        steps = math.ceil(len(triplets) / config.batch_size)
        epoch_losses, epoch_parts = [], []
        bar = tqdm(range(steps), desc=f"teacher epoch {epoch + 1}/{config.epochs}", unit="step",
                   disable=not progress, leave=False)
        for step in bar:
            chosen = [triplets[i] for i in order[step * config.batch_size:(step + 1) * config.batch_size]]
            batch, mask = _batch(videos, chosen, config.max_frames)
            optimizer.zero_grad()
            loss, step_parts = teacher_step_loss(head, batch, mask, config.margin, config.regularization)
            loss.backward()
            optimizer.step()
            head.attention.apply_constraint()
            epoch_losses.append(float(loss.detach()))
            epoch_parts.append(step_parts)
            steps_run += 1
            bar.set_postfix(loss=f"{epoch_losses[-1]:.4f}", accuracy=f"{step_parts['accuracy']:.2f}")
        losses.append(float(np.mean(epoch_losses)))
        parts = {k: float(np.mean([p[k] for p in epoch_parts])) for k in epoch_parts[0]}
        save_checkpoint(head, out)
        save_train_state(state_path(out), optimizer, epoch + 1, losses, settings)
        if progress:
            tqdm.write(f"teacher epoch {epoch + 1}/{config.epochs}: loss {losses[-1]:.4f} (triplet "
                       f"{parts['triplet']:.4f}, regulariser {parts['regularization']:.4f}, in-batch triplet "
                       f"accuracy {parts['accuracy']:.3f})")
    return TrainingResult(out, losses, {"steps_this_run": steps_run, **parts})


@dataclass
class Separation:
    """How a teacher separates labelled groups: mean similarity of same-group and other-group pairs, and the
    share of (anchor, positive, negative) triplets, over all of them, with S(a, p) > S(a, n)."""

    mean_positive: float
    mean_negative: float
    triplet_accuracy: float


def group_separation(teacher: Teacher, videos: Mapping[str, np.ndarray], groups: Mapping[str, str]) -> Separation:
    """Score every ordered pair of the labelled `videos` ({id: `[T, R, D]`}) with `teacher` -> Separation."""
    check_labels(groups, videos)
    ids = sorted(groups)
    prepared = [teacher.prepare(videos[v]) for v in ids]
    scores = np.stack([teacher.similarities(query, prepared) for query in prepared])  # [N, N]
    labels = np.array([groups[v] for v in ids])
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    other = labels[:, None] != labels[None, :]
    correct, total = 0, 0
    for a in range(len(ids)):
        pos, neg = scores[a, same[a]], scores[a, other[a]]
        correct += int((pos[:, None] > neg[None, :]).sum())
        total += pos.size * neg.size
    return Separation(float(scores[same].mean()), float(scores[other].mean()), correct / max(total, 1))
