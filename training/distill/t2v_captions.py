"""Training captions for unlabelled videos, written from the concept vocabulary.

No video here comes with a caption, so each gets `per_video` captions made from templates filled with the
names of its top ImageNet classes (the concept teacher's view of the video):
  1. concepts: the mean over the video's frames of EfficientNet-Lite0's class probabilities; its `top_k` classes
     (default 3) are the video's concepts;
  2. each caption draws a template from `TEMPLATES` and fills `{0}` (and `{1}`) with distinct concepts drawn with
     probability proportional to their mean probability (so the first concept dominates), each name with its
     article ("a" / "an"; a name with a parenthetical qualifier loses the qualifier: "kite").
Every draw comes from a generator seeded with (seed, video id): the same inputs always give the same captions,
whatever the order of the videos.  The captions are noisy on purpose (a wrong top class gives a wrong caption);
TeachText's de-noising (`losses_teachtext.caption_keep_mask`) can drop the ones the teachers disagree with.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

TEMPLATES = (
    "a video of {0}",
    "{0}",
    "footage of {0}",
    "a close-up of {0}",
    "a camera moving over {0}",
    "a scene with {0}",
    "{0} and {1}",
    "{0} next to {1}",
    "a short clip showing {0} and {1}",
)
SEED_NAMESPACE = "dnsvr-t2v-captions"


@dataclass(frozen=True)
class Caption:
    """One training caption: its id, its video, its text and the class indices it names."""

    caption_id: str
    video_id: str
    text: str
    classes: tuple[int, ...]


def with_article(name: str) -> str:
    """"tabby cat" -> "a tabby cat", "American robin" -> "an American robin"; a "(qualifier)" is dropped."""
    name = name.split("(")[0].strip()
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def video_concepts(probabilities: Tensor, top_k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities `[T, 1000]` of one video's frames -> (top-k class indices `[k]`, their mean
    probabilities `[k]`), best first."""
    mean = probabilities.float().mean(dim=0)  # [T, 1000] -> [1000]
    top = mean.topk(top_k)
    return top.indices.numpy(), top.values.numpy()


def generate_captions(frame_probabilities: Mapping[str, Tensor], class_names: Sequence[str], per_video: int = 2,
                      top_k: int = 3, seed: int = 0) -> list[Caption]:
    """`per_video` captions per video (ids `<video id>#<k>`), from `{video id: class probabilities [T, 1000]}`."""
    if per_video < 1 or top_k < 2:
        raise ValueError(f"per_video must be >= 1 and top_k >= 2, got {per_video} and {top_k}")
    captions = []
    for video_id in sorted(frame_probabilities):
        classes, weights = video_concepts(frame_probabilities[video_id], top_k)
        rng = np.random.default_rng(zlib.crc32(f"{SEED_NAMESPACE}/{seed}/{video_id}".encode()))
        for k in range(per_video):
            template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
            slots = 2 if "{1}" in template else 1
            chosen = rng.choice(classes, size=slots, replace=False, p=weights / weights.sum())
            text = template.format(*(with_article(class_names[int(c)]) for c in chosen))
            captions.append(Caption(f"{video_id}#{k}", video_id, text, tuple(int(c) for c in chosen)))
    return captions


def save_captions(path: str | Path, captions: Sequence[Caption]) -> Path:
    """Captions as a JSON list of {caption_id, video_id, text, classes}."""
    from dnsvr.training.files import atomic_write_text

    return atomic_write_text(path, json.dumps([asdict(c) for c in captions], indent=1))


def load_captions(path: str | Path) -> list[Caption]:
    """Captions from `save_captions`'s JSON, or a list of {caption_id, video_id, text} (classes optional):
    the way to train on your own captions."""
    try:
        items = json.loads(Path(path).read_text())
        return [Caption(str(i["caption_id"]), str(i["video_id"]), str(i["text"]), tuple(i.get("classes", ())))
                for i in items]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a captions file ({exc})") from exc
