"""Teachers of the offline text-video student, as plug-ins with one protocol.

A teacher scores a batch of texts against a batch of videos (`T2VBatch`) and returns `TeacherOutput`:
  similarity       `[Bt, Bv]` float32  its text x video score (larger = more relevant)
  frame_relevance  `[Bt, T]` float32   for each text, a distribution over the real frames of its paired video
                                       (`batch.pairs[i]`, by default video i): softmax over those frames, 0 on
                                       padded slots (TeachCLIP's `p[i, t] = softmax_t(cos(text_i, frame_{i,t}))`)
Teachers are frozen and run at training time only; `TEACHERS` maps each kind to its constructor
(`create_teacher(kind, **options)`):

  precomputed      teacher outputs read from a `.npz` file: bring X-CLIP, TS2-Net, X-Pool or your own model's
                   scores (format in `PrecomputedTeacher`)
  clip_frame_word  a fine-grained frame-word interaction over user-supplied CLIP weights (`networks.clip`)
  concept          EfficientNet-Lite0's ImageNet class probabilities per frame x MiniLM's cosine between the text
                   and each class name
  lexical          the query's words matched against the class names, their qualifiers and coarse category
                   terms, x the same class probabilities (a second, complementary teacher)

The concept and lexical teachers need no weights beyond the installed packages, so the bundled student is
distilled from them (TeachText's unweighted mean of the two).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from dnsvr.training.data.minilm_tokenizer import DEFAULT_MAX_LEN
from dnsvr.training.networks.t2v_defaults import TEACHER_TEMPERATURE
from torch import Tensor, nn

FRAME_TEMPERATURE = 0.05  # softmax temperature of the concept / lexical frame relevance (scores lie in [0, 1])
CLASS_TEMPERATURE = 0.05  # concept teacher: softmax temperature over the text's top classes (MiniLM cosines)
TOP_CLASSES = 5  # concept teacher: classes a text is spread over
TOP_FRAME_FRACTION = 0.5  # concept / lexical similarity: mean over this fraction of a video's best frames
MASS_FLOOR = 1e-4  # concept / lexical similarity: the class-probability mass that maps to 0 (`log_scaled`)
CLASS_NAME_TOKENS = 16  # MiniLM tokens per class name (the longest name has 11)


@dataclass
class T2VBatch:
    """Texts and videos a teacher scores.

    texts           Bt strings; caption_ids: their ids (the precomputed teacher looks them up)
    video_ids       Bv ids
    frame_features  `[Bv, T, 1280]` float32 EfficientNet-Lite0 pooled features (concept, lexical teachers)
    frame_mask      `[Bv, T]` float32, 1 at real frames (a prefix of each row)
    pixels          `[Bv, T, 3, S, S]` float32 CLIP-normalised frames (`data.clip_frames`), for the CLIP teacher
    pairs           `[Bt]` int64: the video of each text (default: text i <-> video i, Bt = Bv)
    """

    texts: Sequence[str]
    video_ids: Sequence[str]
    frame_mask: Tensor
    frame_features: Tensor | None = None
    caption_ids: Sequence[str] | None = None
    pixels: Tensor | None = None
    pairs: Tensor | None = None

    def paired(self) -> Tensor:
        """`[Bt]` int64 index of each text's video."""
        if self.pairs is not None:
            return self.pairs.long()
        if len(self.texts) != len(self.video_ids):
            raise ValueError(f"{len(self.texts)} texts and {len(self.video_ids)} videos: give `pairs`")
        return torch.arange(len(self.texts))


@dataclass
class TeacherOutput:
    """similarity `[Bt, Bv]` float32; frame_relevance `[Bt, T]` float32 (see the module docstring)."""

    similarity: Tensor
    frame_relevance: Tensor


class T2VTeacher(Protocol):
    name: str

    def __call__(self, batch: T2VBatch) -> TeacherOutput: ...


def masked_frame_softmax(scores: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """`[N, T]` scores -> softmax over the real frames (mask `[N, T]`, 1 = real), 0 on padded slots."""
    real = mask != 0
    return (scores / temperature).masked_fill(~real, float("-inf")).softmax(dim=-1).masked_fill(~real, 0.0)


def top_frames_mean(scores: Tensor, mask: Tensor, fraction: float = TOP_FRAME_FRACTION) -> Tensor:
    """`[..., V, T]` per-frame scores, mask `[V, T]` -> `[..., V]`: the mean of each video's best
    `ceil(fraction * real frames)` frames."""
    real = mask != 0
    counts = real.sum(dim=-1)  # [V]
    keep = torch.clamp((counts.float() * fraction).ceil().long(), min=1)  # [V]
    ranked = scores.masked_fill(~real, float("-inf")).sort(dim=-1, descending=True).values  # [..., V, T]
    ranks = torch.arange(scores.shape[-1], device=scores.device)  # [T]
    take = ranks < keep[:, None]  # [V, T]
    return ranked.masked_fill(~take, 0.0).sum(dim=-1) / keep  # [..., V]


# ---- precomputed ----------------------------------------------------------------------------------------------


class PrecomputedTeacher:
    """Teacher outputs from a `.npz` file (`np.load(..., allow_pickle=False)`: no pickle, strings as unicode arrays).

    Arrays:
      caption_ids      `[C]` str      one id per caption
      video_ids        `[V]` str      one id per video
      similarity       `[C, V]` float32  the teacher's score of every caption against every video
      frame_relevance  `[C, T]` float32  each caption's distribution over the frames of its own video (the first
                                          frames selected for the student, in order; rows sum to 1 over the real
                                          frames, 0 after them)
    A batch is served by indexing: its `caption_ids` (required) and `video_ids` must all be in the file, and the
    frame relevance is cut or zero-padded to the batch's T.  Write one with `save_teacher_npz`.
    """

    def __init__(self, path: str | Path, name: str | None = None):
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in ("caption_ids", "video_ids", "similarity", "frame_relevance")}
        except KeyError as exc:
            raise ValueError(f"{path}: a teacher file needs caption_ids, video_ids, similarity, frame_relevance "
                             f"({exc})") from exc
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a teacher .npz file ({exc})") from exc
        captions, videos = arrays["caption_ids"], arrays["video_ids"]
        sim, relevance = arrays["similarity"], arrays["frame_relevance"]
        if captions.dtype.kind != "U" or videos.dtype.kind != "U":
            raise ValueError(f"{path}: caption_ids and video_ids must be string arrays")
        if sim.shape != (len(captions), len(videos)) or relevance.ndim != 2 or len(relevance) != len(captions):
            raise ValueError(f"{path}: similarity {sim.shape} must be [C, V] = [{len(captions)}, {len(videos)}] and "
                             f"frame_relevance {relevance.shape} [C, T]")
        self.name = name or f"precomputed:{path.stem}"
        self.similarity = torch.from_numpy(sim.astype(np.float32))
        self.frame_relevance = torch.from_numpy(relevance.astype(np.float32))
        self.caption_index = {str(c): i for i, c in enumerate(captions)}
        self.video_index = {str(v): i for i, v in enumerate(videos)}

    def __call__(self, batch: T2VBatch) -> TeacherOutput:
        if batch.caption_ids is None:
            raise ValueError(f"{self.name}: the batch needs caption_ids")
        rows = _indices(self.caption_index, batch.caption_ids, "caption", self.name)
        columns = _indices(self.video_index, batch.video_ids, "video", self.name)
        t = batch.frame_mask.shape[1]
        relevance = self.frame_relevance[rows][:, :t]  # [Bt, min(T, T_file)]
        relevance = F.pad(relevance, (0, t - relevance.shape[1]))  # -> [Bt, T]
        relevance = relevance * (batch.frame_mask[batch.paired()] != 0)
        relevance = relevance / relevance.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return TeacherOutput(similarity=self.similarity[rows][:, columns], frame_relevance=relevance)


def _indices(index: dict[str, int], ids: Sequence[str], what: str, name: str) -> Tensor:
    missing = [i for i in ids if i not in index]
    if missing:
        raise KeyError(f"{name}: unknown {what} ids {list(missing)[:5]}")
    return torch.tensor([index[i] for i in ids], dtype=torch.long)


def save_teacher_npz(path: str | Path, caption_ids: Sequence[str], video_ids: Sequence[str],
                     output: TeacherOutput) -> Path:
    """Write teacher outputs over all captions x all videos in `PrecomputedTeacher`'s format (`output` from a batch
    of every caption against every video, `pairs` = each caption's video)."""
    path = Path(path)
    np.savez(path, caption_ids=np.asarray(list(caption_ids), dtype=str),
             video_ids=np.asarray(list(video_ids), dtype=str), similarity=output.similarity.numpy().astype(np.float32),
             frame_relevance=output.frame_relevance.numpy().astype(np.float32))
    return path


# ---- CLIP frame-word ------------------------------------------------------------------------------------------


class CLIPFrameWordTeacher:
    """A fine-grained frame-word teacher over CLIP weights (an OpenAI-layout state dict or a `CLIP`).

    Per text: its word tokens' states (CLIP's text transformer after `ln_final`, each token projected by
    `text_projection`; the SOT / EOT tokens and padding excluded; a text with no word token uses its EOT vector)
    and the frames' image embeddings, all L2-normalised.  Formula:
        similarity[i, j]      = mean_w max_t cos(word_{i,w}, frame_{j,t})   (each word's best frame, averaged)
        frame_relevance[i, t] = softmax over the real frames of cos(sentence_i, frame_{pairs[i],t}) / temperature
    with sentence_i CLIP's sentence embedding (the EOT token) and temperature 1 (TeachCLIP's definition).
    """

    def __init__(self, clip: nn.Module | dict, temperature: float = 1.0, max_words: int = 32):
        from dnsvr.training.data.clip_tokenizer import CLIPTokenizer
        from dnsvr.training.networks.clip import build_clip

        self.name = "clip_frame_word"
        self.clip = build_clip(clip) if isinstance(clip, dict) else clip.eval()
        self.tokenizer = CLIPTokenizer()
        self.temperature = temperature
        self.max_words = max_words

    @torch.no_grad()
    def __call__(self, batch: T2VBatch) -> TeacherOutput:
        from dnsvr.training.data.clip_tokenizer import EOT_ID, SOT_ID

        if batch.pixels is None:
            raise ValueError("the CLIP teacher needs the batch's pixels (CLIP-normalised frames)")
        ids, mask = (torch.from_numpy(a) for a in self.tokenizer.encode(list(batch.texts), self.max_words))
        states = self.clip.text_token_states(ids) @ self.clip.text_projection  # [Bt, L, width] -> [Bt, L, D]
        states = F.normalize(states, dim=-1)
        eot = ids.argmax(dim=-1)  # [Bt]
        sentence = states[torch.arange(len(ids)), eot]  # [Bt, D]
        words = (mask != 0) & (ids != SOT_ID) & (ids != EOT_ID)  # [Bt, L]
        empty = (~words.any(dim=1)).nonzero().flatten()  # texts without a word token: use their EOT
        words[empty, eot[empty]] = True

        real = batch.frame_mask != 0  # [Bv, T]
        pixels = batch.pixels
        frames = torch.zeros(*real.shape, states.shape[-1])  # [Bv, T, D]
        frames[real] = F.normalize(self.clip.encode_image(pixels[real]), dim=-1)  # [n_real, 3, S, S] -> [n_real, D]
        cos = torch.einsum("ild,vtd->ivlt", states, frames)  # [Bt, Bv, L, T]
        best_frame = cos.masked_fill(~real[None, :, None, :], float("-inf")).amax(dim=-1)  # [Bt, Bv, L]
        counts = words.sum(dim=1, keepdim=True).float()  # [Bt, 1]
        similarity = (best_frame * words[:, None, :]).sum(dim=-1) / counts  # [Bt, Bv]
        paired = batch.paired()
        frame_cos = torch.einsum("id,itd->it", sentence, frames[paired])  # [Bt, T]
        relevance = masked_frame_softmax(frame_cos, batch.frame_mask[paired], self.temperature)
        return TeacherOutput(similarity=similarity.float(), frame_relevance=relevance.float())


# ---- concept and lexical teachers -----------------------------------------------------------------------------


class ClassProbabilities:
    """EfficientNet-Lite0's ImageNet classifier on pooled frame features: `[..., 1280]` -> probabilities
    `[..., 1000]` (the wheel's `_fc` layer, softmax)."""

    def __init__(self, classifier: nn.Module | None = None):
        if classifier is None:
            from dnsvr.training.networks.efficientnet import load_efficientnet_lite0

            classifier = load_efficientnet_lite0()
        self.classifier = classifier.eval()

    @torch.no_grad()
    def __call__(self, frame_features: Tensor) -> Tensor:
        return self.classifier.classify(frame_features.float()).softmax(dim=-1)


def log_scaled(mass: Tensor, floor: float = MASS_FLOOR) -> Tensor:
    """Probability mass in [0, 1] -> a cosine-like score in [0, 1]: `(log(m + floor) - log floor) / -log floor`,
    clamped (floor 1e-4: 1e-4 -> ~0.08, 1e-3 -> 0.26, 0.03 -> 0.62, 1 -> 1).  Class probabilities are heavy-tailed;
    the log spreads them into the range of the student's cosines."""
    return ((torch.log(mass + floor) - math.log(floor)) / -math.log(floor)).clamp(0.0, 1.0)


class _ClassWeightedTeacher:
    """Shared scoring of the concept and lexical teachers from per-text class weights `w [Bt, 1000]`:
        r[i, j, t]             = sum_c w[i, c] * p[j, t, c]      (p: frame t's class probabilities)
        similarity[i, j]       = log_scaled(mean of r[i, j, .] over video j's best `ceil(0.5 * T_j)` frames)
        frame_relevance[i, t]  = softmax over the real frames of r[i, pairs[i], t] / FRAME_TEMPERATURE
    """

    name = "class_weighted"

    def __init__(self, probabilities: ClassProbabilities | None = None):
        self.probabilities = probabilities or ClassProbabilities()

    def class_weights(self, texts: Sequence[str]) -> Tensor:
        raise NotImplementedError

    def __call__(self, batch: T2VBatch) -> TeacherOutput:
        if batch.frame_features is None:
            raise ValueError(f"the {self.name} teacher needs the batch's frame features")
        weights = self.class_weights(batch.texts)  # [Bt, 1000]
        probabilities = self.probabilities(batch.frame_features)  # [Bv, T, 1000]
        scores = torch.einsum("ic,vtc->ivt", weights, probabilities)  # [Bt, Bv, T]
        similarity = log_scaled(top_frames_mean(scores, batch.frame_mask))  # [Bt, Bv]
        paired = batch.paired()
        own = scores[torch.arange(len(paired)), paired]  # [Bt, T]
        relevance = masked_frame_softmax(own, batch.frame_mask[paired], FRAME_TEMPERATURE)
        return TeacherOutput(similarity=similarity.float(), frame_relevance=relevance.float())


class ConceptTeacher(_ClassWeightedTeacher):
    """Class weights from MiniLM: `w[i, c] = softmax over the text's top-5 classes of cos(text_i, name_c) / 0.05`
    (0 elsewhere), the cosine between the MiniLM vectors of the text and of the class name."""

    name = "concept"

    def __init__(self, probabilities: ClassProbabilities | None = None, minilm: nn.Module | None = None,
                 top_classes: int = TOP_CLASSES, temperature: float = CLASS_TEMPERATURE):
        super().__init__(probabilities)
        from dnsvr.training.data.minilm_tokenizer import MiniLMTokenizer
        from dnsvr.training.networks.minilm import load_minilm

        self.packaged_minilm = minilm is None
        self.minilm = (minilm if minilm is not None else load_minilm()).eval()
        self.tokenizer = MiniLMTokenizer()
        self.top_classes = top_classes
        self.temperature = temperature

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 256, max_len: int = DEFAULT_MAX_LEN) -> Tensor:
        """MiniLM sentence vectors `[N, 384]` of texts."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            ids, mask = self.tokenizer.encode(list(texts[start:start + batch_size]), max_len)
            chunks.append(self.minilm(torch.from_numpy(ids), torch.from_numpy(mask)))
        return torch.cat(chunks)

    @cached_property
    def class_vectors(self) -> Tensor:
        """MiniLM vectors `[1000, 384]` of the ImageNet class names; with the package's MiniLM they are cached in
        `paths.cache_dir("t2v")` under the weights' sha256 (10 s of CPU each time otherwise)."""
        from dnsvr.training import paths
        from dnsvr.training.data.imagenet_classes import imagenet_class_names
        from dnsvr.training.files import atomic_path
        from dnsvr.training.networks.minilm import minilm_files

        names = imagenet_class_names()
        cache = None
        if self.packaged_minilm:
            cache = paths.cache_dir("t2v", f"imagenet_minilm_{minilm_files().weights_sha256[:16]}.npy")
            if cache.is_file():
                return torch.from_numpy(np.load(cache, allow_pickle=False))
        vectors = self.embed(names, max_len=CLASS_NAME_TOKENS)
        if cache is not None:
            with atomic_path(cache, ".npy") as partial:
                np.save(partial, vectors.numpy())
        return vectors

    def class_weights(self, texts: Sequence[str]) -> Tensor:
        cos = self.embed(texts) @ self.class_vectors.T  # [Bt, 1000]
        top = cos.topk(self.top_classes, dim=-1)
        weights = torch.zeros_like(cos)
        return weights.scatter_(1, top.indices, (top.values / self.temperature).softmax(dim=-1))


# Coarse category terms of ImageNet-1k class index ranges / lists (the ImageNet order groups classes: 151-268
# are dog breeds, 281-285 domestic cats, ...); a query word equal to a term matches every class of the group.
CATEGORY_TERMS: dict[str, tuple[range | tuple[int, ...], ...]] = {
    "fish": (range(0, 7), range(389, 398)),
    "bird": (range(7, 25), range(80, 101), range(127, 147)),
    "frog": (range(30, 33),),
    "turtle": (range(33, 38),),
    "lizard": (range(38, 49),),
    "snake": (range(52, 69),),
    "spider": (range(72, 78),),
    "whale": ((147, 148),),
    "dog": (range(151, 269),),
    "puppy": (range(151, 269),),
    "wolf": (range(269, 272),),
    "fox": (range(277, 281),),
    "cat": (range(281, 286),),
    "kitten": (range(281, 286),),
    "bear": (range(294, 298),),
    "insect": (range(300, 327),),
    "beetle": (range(300, 308),),
    "butterfly": (range(321, 327),),
    "rabbit": (range(330, 333),),
    "horse": ((339,),),
    "monkey": (range(365, 385),),
    "ape": (range(365, 369),),
    "elephant": ((101, 385, 386),),
    "animal": (range(0, 398),),
    "car": ((407, 436, 468, 511, 609, 627, 656, 661, 717, 751, 817),),
    "boat": ((472, 484, 554, 576, 625, 724, 780, 814, 871, 914),),
    "ship": ((403, 510, 628, 724),),
    "bike": ((444, 671, 670, 665),),
    "bicycle": ((444, 671),),
}
CATEGORY_MATCH = 0.5  # a coarse category term counts half as much as the class's own name
HEAD_MATCH = 0.5  # the name's last word alone ("shark" of "great white shark")
_WORD = re.compile(r"[a-z0-9]+")


def words_of(text: str) -> list[str]:
    """Lower-case words with a plural 's' removed ("cats" -> "cat", "glasses" stays)."""
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
            for w in _WORD.findall(text.lower())]


class LexicalTeacher(_ClassWeightedTeacher):
    """Class weights from words: a class scores 1 when all words of its name (before any parenthesis) occur in the
    text, `HEAD_MATCH` when only the name's last word does, `CATEGORY_MATCH` when a word is one of its group's
    `CATEGORY_TERMS`, and the best of these; the words in a name's parenthesis ("kite (bird of prey)") count as
    more category terms.  The scores are normalised to sum 1 over classes (all 0 when nothing matches: the text
    then scores 0 against every video and its frame relevance is uniform)."""

    name = "lexical"

    @cached_property
    def vocabulary(self) -> list[tuple[frozenset[str], str, frozenset[str]]]:
        """Per class: (its name's words, the name's last word, its category terms)."""
        from dnsvr.training.data.imagenet_classes import imagenet_class_names

        groups: dict[int, set[str]] = {}
        for term, spans in CATEGORY_TERMS.items():
            for span in spans:
                for index in span:
                    groups.setdefault(index, set()).add(term)
        classes = []
        for index, name in enumerate(imagenet_class_names()):
            main, _, qualifier = name.partition("(")
            words = words_of(main)
            terms = groups.get(index, set()) | set(words_of(qualifier))
            classes.append((frozenset(words), words[-1], frozenset(terms)))
        return classes

    def class_weights(self, texts: Sequence[str]) -> Tensor:
        weights = torch.zeros(len(texts), len(self.vocabulary))
        for row, text in enumerate(texts):
            present = set(words_of(text))
            for index, (words, head, terms) in enumerate(self.vocabulary):
                score = 1.0 if words <= present else HEAD_MATCH if head in present else 0.0
                if terms & present:
                    score = max(score, CATEGORY_MATCH)
                weights[row, index] = score
        return weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)


TEACHERS: dict[str, Callable[..., T2VTeacher]] = {
    "precomputed": PrecomputedTeacher,
    "clip_frame_word": CLIPFrameWordTeacher,
    "concept": ConceptTeacher,
    "lexical": LexicalTeacher,
}


def create_teacher(kind: str, **options) -> T2VTeacher:
    """A teacher of one registered kind (`TEACHERS`), built with its constructor's options."""
    if kind not in TEACHERS:
        raise ValueError(f"unknown teacher kind {kind!r}; expected one of {', '.join(TEACHERS)}")
    return TEACHERS[kind](**options)


def teacher_logits(similarity: Tensor, temperature: float = TEACHER_TEMPERATURE) -> Tensor:
    """A teacher's similarity turned into logits for TeachCLIP's coarse loss: `similarity / temperature`."""
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"teacher temperature must be positive, got {temperature}")
    return similarity / temperature
