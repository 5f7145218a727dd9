"""Training of the offline text-video student (`networks.offline_t2v.OfflineTextVideoStudent`) by distillation.

Inputs: per video its pooled frame features (`data.t2v_corpus`), captions (`distill.t2v_captions` or your own),
and teachers (`distill.t2v_teachers`), which are run once over every caption x every video before training
(they are frozen; a batch then reads its sub-matrix).  MiniLM is frozen, so the captions' sentence vectors are
computed once too; only the head trains.

Loss of a batch of B videos with one caption each (S: the student's `[B, B]` logits, C: its cosines, S_n: teacher
n's similarity, R_n: its frame relevance; the losses are the modules' own):
  ground truth   `losses_teachclip.ground_truth_loss(S)` (symmetric InfoNCE), always
  coarse         TeachCLIP: `mean_n coarse_distillation_loss(S, S_n / teacher_temperature, coarse_form)`
  fine           TeachCLIP: `mean_n fine_distillation_loss(AFA weights at temperature 1, R_n, real frames)`
                 with coarse or fine on, the terms are weighted as TeachCLIP's `official_weights(coarse_form)`
                 ("pear": 0.2 L_gt + L_coarse + 2 L_fine), else L_gt alone
  teachtext      TeachText: `TeachTextLoss(C, [S_n])`: max-margin ranking + SmoothL1 to the teachers' mean
  margin         "fixed": `triplet_ranking_loss(C, 0.2)`; "adaptive": CMGSD `CMGSDLoss` with the static teacher =
                 the captions' MiniLM vectors, dynamic teachers = `DynamicTeacherHead`s over the student's own
                 text (projected, before normalisation) and video (AFA output) features, lambda
                 `lambda_schedule(epoch, lambda_start, lambda_end)`
Optional de-noising: `caption_keep_mask` on the teachers' full matrices drops captions whose own video the
teachers rank below `denoise_max_rank`.
Everything is seeded (one generator for batches and caption draws, the global one for initialisation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from dnsvr.training.distill.losses_cmgsd import CMGSDLoss, DynamicTeacherHead, lambda_schedule, triplet_ranking_loss
from dnsvr.training.distill.losses_teachclip import (
    CoarseForm,
    FineForm,
    coarse_distillation_loss,
    fine_distillation_loss,
    ground_truth_loss,
    official_weights,
    row_pearson,
)
from dnsvr.training.distill.losses_teachtext import TeachTextLoss, caption_keep_mask
from dnsvr.training.distill.t2v_captions import Caption
from dnsvr.training.distill.t2v_teachers import (
    TEACHER_TEMPERATURE,
    T2VBatch,
    T2VTeacher,
    TeacherOutput,
    teacher_logits,
)
from dnsvr.training.networks.offline_t2v import (
    DEFAULT_DEPTH,
    DEFAULT_DIM,
    DEFAULT_MAX_FRAMES,
    OfflineTextVideoStudent,
)
from torch import Tensor
from tqdm import tqdm

Margin = Literal["none", "fixed", "adaptive"]
MARGINS = ("none", "fixed", "adaptive")


@dataclass(frozen=True)
class T2VTrainConfig:
    """Student size, optimisation and the method switches (see the module docstring)."""

    dim: int = DEFAULT_DIM
    depth: int = DEFAULT_DEPTH
    max_frames: int = DEFAULT_MAX_FRAMES
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3  # TeachCLIP: 1e-4 for new modules, 1e-3 for AFA; one rate for this small head
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # linear warm-up, then cosine decay (TeachCLIP's schedule)
    seed: int = 0
    coarse: CoarseForm | None = "pear"
    fine: FineForm | None = "ce"
    teachtext: bool = False
    margin: Margin = "none"
    teacher_temperature: float = TEACHER_TEMPERATURE
    lambda_start: float = 0.2  # CMGSD: fraction of the epochs where lambda starts rising from 0 ...
    lambda_end: float = 0.6  # ... and where it reaches 1
    denoise_max_rank: int | None = None

    def __post_init__(self) -> None:
        if self.margin not in MARGINS:
            raise ValueError(f"margin must be one of {MARGINS}, got {self.margin!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"epochs must be >= 1 and batch_size >= 2, got {self.epochs} and {self.batch_size}")

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class T2VTrainResult:
    """The trained student (eval mode), one record per epoch, the captions trained on, and the time taken."""

    student: OfflineTextVideoStudent
    history: list[dict[str, float]]
    captions: list[Caption]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Data:
    """Everything the loop indexes: videos `[V, T, 1280]` / `[V, T]`, captions' sentence vectors `[C, 384]`, their
    videos `[C]`, per teacher its `[C, V]` similarity and `[C, T]` relevance."""

    features: Tensor
    mask: Tensor
    sentences: Tensor
    caption_video: Tensor
    teachers: list[TeacherOutput]


def stack_videos(features: Mapping[str, np.ndarray], video_ids: Sequence[str]) -> tuple[Tensor, Tensor]:
    """`{id: [T_i, 1280]}` -> padded features `[V, T, 1280]` float32 and mask `[V, T]` float32 (T = max T_i)."""
    length = max(len(features[v]) for v in video_ids)
    stacked = torch.zeros(len(video_ids), length, next(iter(features.values())).shape[-1])
    mask = torch.zeros(len(video_ids), length)
    for row, video_id in enumerate(video_ids):
        frames = torch.from_numpy(np.asarray(features[video_id], dtype=np.float32))
        stacked[row, : len(frames)] = frames
        mask[row, : len(frames)] = 1.0
    return stacked, mask


def run_teachers(teachers: Sequence[T2VTeacher], captions: Sequence[Caption], video_ids: Sequence[str],
                 features: Tensor, mask: Tensor) -> list[TeacherOutput]:
    """Every teacher over every caption x every video: `[C, V]` similarity and `[C, T]` relevance each."""
    index = {v: i for i, v in enumerate(video_ids)}
    batch = T2VBatch(texts=[c.text for c in captions], caption_ids=[c.caption_id for c in captions],
                     video_ids=list(video_ids), frame_features=features, frame_mask=mask,
                     pairs=torch.tensor([index[c.video_id] for c in captions]))
    with torch.no_grad():
        return [teacher(batch) for teacher in teachers]


def _lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class _Objective:
    """The configured sum of losses for one batch (see the module docstring)."""

    def __init__(self, config: T2VTrainConfig, dim: int):
        self.config = config
        self.distil = config.coarse is not None or config.fine is not None
        self.weights = official_weights(config.coarse or "pear")
        self.teachtext = TeachTextLoss() if config.teachtext else None
        self.cmgsd = CMGSDLoss() if config.margin == "adaptive" else None
        self.heads = torch.nn.ModuleDict({"text": DynamicTeacherHead(dim), "video": DynamicTeacherHead(dim)}) \
            if config.margin == "adaptive" else None

    def __call__(self, student: OfflineTextVideoStudent, data: _Data, captions: Tensor, videos: Tensor,
                 epoch: float) -> dict[str, Tensor]:
        config = self.config
        projected = student.text_proj(data.sentences[captions])  # [B, 384] -> [B, D]
        text = F.normalize(projected, dim=-1)
        parts = student.video_intermediates(data.features[videos], data.mask[videos])
        video = F.normalize(parts.video_embed, dim=-1)
        cosine = text @ video.T  # [B, B]
        logits = student.logit_scale_exp() * cosine
        similarities = [t.similarity[captions][:, videos] for t in data.teachers]  # [B, B] each
        terms: dict[str, Tensor] = {"ground_truth": ground_truth_loss(logits)}
        total = (self.weights.ground_truth if self.distil else 1.0) * terms["ground_truth"]
        if config.coarse is not None:
            terms["coarse"] = torch.stack([
                coarse_distillation_loss(logits, teacher_logits(s, config.teacher_temperature), config.coarse)
                for s in similarities]).mean()
            total = total + self.weights.coarse * terms["coarse"]
        if config.fine is not None:
            slots = parts.mask.shape[1]
            terms["fine"] = torch.stack([
                fine_distillation_loss(parts.afa_weights_t1, t.frame_relevance[captions][:, :slots],
                                       parts.mask.float(), config.fine) for t in data.teachers]).mean()
            total = total + self.weights.fine * terms["fine"]
        if self.teachtext is not None:
            terms["teachtext"] = self.teachtext(cosine, similarities).total
            total = total + terms["teachtext"]
        if config.margin == "fixed":
            terms["margin"] = triplet_ranking_loss(cosine)
            total = total + terms["margin"]
        elif self.cmgsd is not None:
            weight = lambda_schedule(epoch, config.lambda_start * config.epochs, config.lambda_end * config.epochs)
            terms["margin"] = self.cmgsd(cosine, self.heads["video"](parts.video_embed),
                                         self.heads["text"](projected), data.sentences[captions], weight).total
            total = total + terms["margin"]
        terms["total"] = total
        return terms


@torch.no_grad()
def evaluate(student: OfflineTextVideoStudent, data: _Data) -> dict[str, float]:
    """Training-set retrieval (each caption's own video; R@1, R@5) and the Pearson correlation of the student's
    `[C, V]` cosine matrix with the teachers' mean (flattened, and mean over caption rows)."""
    student.eval()
    text = student.project_text(data.sentences)  # [C, D]
    video = torch.cat([student.encode_video(data.features[i:i + 256], data.mask[i:i + 256])
                       for i in range(0, len(data.features), 256)])  # [V, D]
    sim = text @ video.T  # [C, V]
    own = sim.gather(1, data.caption_video[:, None])  # [C, 1]
    ranks = 1 + (sim > own).sum(dim=1)  # [C]
    result = {"r1": float((ranks <= 1).float().mean()), "r5": float((ranks <= 5).float().mean())}
    if data.teachers:
        teacher = torch.stack([t.similarity for t in data.teachers]).mean(dim=0)  # [C, V]
        result["pearson"] = float(row_pearson(sim.flatten()[None], teacher.flatten()[None])[0])
        result["row_pearson"] = float(row_pearson(sim, teacher).mean())
    return result


def train_t2v(features: Mapping[str, np.ndarray], captions: Sequence[Caption], teachers: Sequence[T2VTeacher],
              config: T2VTrainConfig = T2VTrainConfig(), minilm=None, progress: bool = True,
              on_epoch: Callable[[dict[str, float]], None] | None = None) -> T2VTrainResult:
    """Train a student on `{video id: pooled features [T, 1280]}` (at most `config.max_frames` frames each) and
    captions of those videos, distilled from `teachers` (none: only the losses that need no teacher may be on).
    The head trains; MiniLM stays frozen (its caption vectors are computed once).  `history[0]` is the initial
    head's evaluation (epoch 0), then one record per epoch: mean loss terms and `evaluate`."""
    started = time.monotonic()
    if not captions:
        raise ValueError("no captions to train on")
    if not teachers and (config.coarse or config.fine or config.teachtext or config.denoise_max_rank):
        raise ValueError("coarse / fine distillation, TeachText and de-noising need at least one teacher")
    video_ids = sorted({c.video_id for c in captions})
    unknown = [v for v in video_ids if v not in features]
    if unknown:
        raise KeyError(f"captions of videos without features: {unknown[:5]}")
    too_long = [v for v in video_ids if len(features[v]) > config.max_frames]
    if too_long:
        raise ValueError(f"videos with more than max_frames={config.max_frames} frames: {too_long[:5]}")
    torch.manual_seed(config.seed)
    student = OfflineTextVideoStudent(config.dim, config.depth, config.max_frames, minilm=minilm)
    stacked, mask = stack_videos(features, video_ids)
    outputs = run_teachers(teachers, captions, video_ids, stacked, mask)
    index = {v: i for i, v in enumerate(video_ids)}
    caption_video = torch.tensor([index[c.video_id] for c in captions])
    kept = list(captions)
    if config.denoise_max_rank is not None:
        keep = caption_keep_mask([o.similarity for o in outputs], caption_video, config.denoise_max_rank)
        rows = keep.nonzero().flatten()
        kept = [captions[int(i)] for i in rows]
        caption_video = caption_video[rows]
        outputs = [TeacherOutput(o.similarity[rows], o.frame_relevance[rows]) for o in outputs]
    sentences = _sentence_vectors(student, [c.text for c in kept])
    data = _Data(features=stacked, mask=mask, sentences=sentences, caption_video=caption_video, teachers=outputs)

    objective = _Objective(config, student.dim)
    parameters = [p for p in student.parameters() if p.requires_grad]
    if objective.heads is not None:
        parameters += list(objective.heads.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    captions_of = [(caption_video == v).nonzero().flatten() for v in range(len(video_ids))]
    trainable = [v for v in range(len(video_ids)) if len(captions_of[v])]
    steps_per_epoch = max(1, len(trainable) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    history = [{"epoch": 0, **evaluate(student, data)}]  # the initial head, for comparison
    step = 0
    with tqdm(total=total_steps, desc="train t2v", unit="step", disable=not progress) as bar:
        for epoch in range(config.epochs):
            student.train()
            order = torch.tensor(trainable)[torch.randperm(len(trainable), generator=generator)]
            sums: dict[str, float] = {}
            for b in range(steps_per_epoch):
                videos = order[b * config.batch_size:(b + 1) * config.batch_size]
                picks = [captions_of[int(v)][int(torch.randint(len(captions_of[int(v)]), (1,),
                                                               generator=generator))] for v in videos]
                for group in optimiser.param_groups:
                    group["lr"] = config.learning_rate * _lr_factor(step, total_steps, config.warmup_fraction)
                terms = objective(student, data, torch.stack(picks), videos, epoch + b / steps_per_epoch)
                optimiser.zero_grad()
                terms["total"].backward()
                optimiser.step()
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
                step += 1
                bar.update()
                bar.set_postfix(loss=f"{float(terms['total'].detach()):.4f}")
            record = {"epoch": epoch + 1, **{f"loss_{k}": v / steps_per_epoch for k, v in sums.items()},
                      **evaluate(student, data)}
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
    student.eval()
    return T2VTrainResult(student=student, history=history, captions=kept, seconds=time.monotonic() - started,
                          extra={"videos": len(video_ids), "captions": len(captions), "kept_captions": len(kept),
                                 "teachers": [getattr(t, "name", type(t).__name__) for t in teachers]})


@torch.no_grad()
def _sentence_vectors(student: OfflineTextVideoStudent, texts: Sequence[str], batch_size: int = 256) -> Tensor:
    """The frozen MiniLM's vectors `[C, 384]` of the captions, computed once."""
    from dnsvr.training.data.minilm_tokenizer import MiniLMTokenizer

    tokenizer = MiniLMTokenizer()
    chunks = []
    for start in range(0, len(texts), batch_size):
        ids, mask = tokenizer.encode(list(texts[start:start + batch_size]))
        chunks.append(student.sentence_vectors(torch.from_numpy(ids), torch.from_numpy(mask)))
    return torch.cat(chunks)


# ---- entry points of the ablation (benchmarks/t2v_ablation.py looks them up by name) ----------------------------


def train_student(seed: int = 0, teachclip_coarse: bool = True, teachclip_fine: bool = True, teachtext: bool = False,
                  margin: Margin = "none", progress: bool = False, **options: Any):
    """The student trained with these switches on the default corpus (frame features cached in
    `paths.cache_dir("train_t2v")`, as `dnsvr train t2v`), as a served-style index (`t2v_index.StudentIndex`).
    `options`: any other `T2VTrainConfig` field."""
    from dnsvr.training import paths
    from dnsvr.training.data.corpus import CorpusConfig
    from dnsvr.training.data.t2v_corpus import T2VCorpusConfig
    from dnsvr.training.distill.t2v_index import StudentIndex
    from dnsvr.training.distill.t2v_pipeline import train_on_corpus

    config = T2VTrainConfig(seed=seed, coarse="pear" if teachclip_coarse else None,
                            fine="ce" if teachclip_fine else None, teachtext=teachtext, margin=margin, **options)
    result, _ = train_on_corpus(T2VCorpusConfig(base=CorpusConfig(seed=seed)), paths.cache_dir("train_t2v"), config,
                                progress=progress)
    return StudentIndex(result.student)


def _teacher_index(kind: str):
    from dnsvr.training.distill.t2v_index import FrameEncoder, TeacherIndex
    from dnsvr.training.distill.t2v_teachers import ClassProbabilities, create_teacher

    encoder = FrameEncoder(DEFAULT_MAX_FRAMES)
    return TeacherIndex(create_teacher(kind, probabilities=ClassProbabilities(encoder.model)), encoder)


def concept_teacher(seed: int = 0):
    """The concept teacher as a served-style index (`t2v_index.TeacherIndex`); untrained, `seed` is unused."""
    del seed
    return _teacher_index("concept")


def lexical_teacher(seed: int = 0):
    """The lexical teacher as a served-style index (`t2v_index.TeacherIndex`); untrained, `seed` is unused."""
    del seed
    return _teacher_index("lexical")
