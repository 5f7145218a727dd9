"""Teacher similarities of mined video pairs: the training targets of the DnS students.

For every anchor video of a features file: a pool of likely positives (its `num_positives` nearest
neighbours by the cosine of mean-pooled global vectors) and `num_negatives` random other videos, each scored
by a teacher (`dnsvr.training.distill.teachers`).  With `self_pairs` (the default) the anchor is also one of its own
positives, scored by the teacher like the others: the students train on temporally augmented videos, so
this pair teaches them the top of the similarity scale, which the mined neighbours of a small corpus rarely
reach (the bundled pack's S^f_B scores a video with itself 0.98 on average, mapped s/2+0.5:
benchmarks/score_scales.py).  Stored as JSON in the reference's structure, video numbers indexing `index`:

    {"format": "dnsvr-pairs/1", "teacher": "chamfer/efficientnet_lite0", "config": {...},
     "index": ["video_a", "video_b", ...],
     "pairs": {"0": {"positives": {"5": 0.81, ...}, "negatives": {"17": 0.12, ...}}, ...}}

Mining is resumable: the file is rewritten atomically every `save_every` anchors, and a rerun with the same
settings scores only the anchors still missing (the pools are a function of the features and the seed).
JSON, never pickle, so a pairs file from elsewhere cannot run code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from dnsvr.training.data.features_io import iter_features, list_ids, read_features
from dnsvr.training.distill.teachers import Teacher
from dnsvr.training.files import atomic_write_text, read_json_file
from tqdm import tqdm

FORMAT = "dnsvr-pairs/1"
Pools = dict[str, dict[int, float]]


class PairsFileError(ValueError):
    """A pairs file that is unreadable, of another format, or made with other settings."""


@dataclass
class PairSet:
    """index: video ids; pairs: {anchor number: {"positives": {number: sim}, "negatives": {number: sim}}}."""

    index: list[str]
    pairs: dict[int, Pools] = field(default_factory=dict)
    teacher: str = "unknown"
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "teacher": self.teacher,
            "config": self.config,
            "index": self.index,
            "pairs": {
                str(anchor): {kind: {str(i): float(s) for i, s in pool.items()}
                              for kind, pool in pools.items()}
                for anchor, pools in sorted(self.pairs.items())
            },
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file + rename): an interrupted save leaves the old file intact."""
        return atomic_write_text(path, json.dumps(self.to_json(), separators=(",", ":")))

    @classmethod
    def of(cls, pairs: PairSet | str | Path) -> PairSet:
        """`pairs` itself when it is a PairSet, else the pairs file at that path (`load`)."""
        return pairs if isinstance(pairs, PairSet) else cls.load(pairs)

    @classmethod
    def load(cls, path: str | Path) -> PairSet:
        path = Path(path)
        data = read_json_file(path, PairsFileError, "pairs")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PairsFileError(f"{path}: not a {FORMAT} pairs file")
        try:
            index = [str(v) for v in data["index"]]
            pairs = {
                int(anchor): {kind: {int(i): float(s) for i, s in pools[kind].items()}
                              for kind in ("positives", "negatives")}
                for anchor, pools in data["pairs"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PairsFileError(f"{path}: malformed pairs ({exc})") from exc
        bad = [i for pools in pairs.values() for pool in pools.values() for i in pool
               if not 0 <= i < len(index)]
        bad += [a for a in pairs if not 0 <= a < len(index)]
        if bad:
            raise PairsFileError(f"{path}: video numbers outside the index of {len(index)}: {bad[:5]}")
        return cls(index, pairs, str(data.get("teacher", "unknown")), dict(data.get("config", {})))

    def triplets(self, rng: np.random.Generator,
                 per_anchor: int = 1) -> list[tuple[str, str, str, float, float]]:
        """(anchor, positive, negative, teacher sim positive, teacher sim negative) for every anchor with both
        pools non-empty, `per_anchor` draws each (positive and negative uniformly from the pools)."""
        out = []
        for anchor, pools in sorted(self.pairs.items()):
            positives, negatives = list(pools["positives"]), list(pools["negatives"])
            if not positives or not negatives:
                continue
            for _ in range(per_anchor):
                p = positives[int(rng.integers(len(positives)))]
                n = negatives[int(rng.integers(len(negatives)))]
                out.append((self.index[anchor], self.index[p], self.index[n],
                            pools["positives"][p], pools["negatives"][n]))
        return out

    def all_pairs(self) -> list[tuple[str, str, float]]:
        """Every scored (anchor id, other id, teacher similarity), positives and negatives alike, self-pairs
        left out."""
        return [(self.index[anchor], self.index[other], sim)
                for anchor, pools in sorted(self.pairs.items())
                for kind in ("positives", "negatives") for other, sim in pools[kind].items() if other != anchor]


def global_vectors(features_path: str | Path, ids: list[str], progress: bool = True) -> np.ndarray:
    """Mean over frames and regions of each video, L2-normalised: `[N, D]` float32 in the order of `ids`."""
    vectors = []
    for _, video in tqdm(iter_features(features_path, ids), total=len(ids), desc="global vectors",
                         unit="video", disable=not progress):
        mean = video.reshape(-1, video.shape[-1]).mean(axis=0)
        vectors.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    return np.stack(vectors).astype(np.float32)


def candidate_pools(vectors: np.ndarray, num_positives: int, num_negatives: int,
                    seed: int) -> list[tuple[list[int], list[int]]]:
    """Per video: (its `num_positives` nearest neighbours by cosine, most similar first; `num_negatives`
    random other videos outside that pool).  vectors `[N, D]` -> N pools; deterministic for a seed."""
    count = len(vectors)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    rng = np.random.default_rng(seed)
    pools = []
    for anchor in range(count):
        order = np.argsort(-similarity[anchor], kind="stable")[: count - 1]
        positives = [int(i) for i in order[:num_positives]]
        rest = np.array([int(i) for i in order[num_positives:]], dtype=np.int64)
        negatives = rng.choice(rest, size=min(num_negatives, len(rest)), replace=False) if len(rest) else rest
        pools.append((positives, sorted(int(i) for i in negatives)))
    return pools


def mine_pairs(
    features_path: str | Path,
    out_path: str | Path,
    teacher: Teacher,
    num_positives: int = 10,
    num_negatives: int = 30,
    seed: int = 0,
    teacher_features_path: str | Path | None = None,
    resume: bool = True,
    save_every: int = 32,
    progress: bool = True,
    self_pairs: bool = True,
) -> PairSet:
    """Mine pools from `features_path` and score them with `teacher` (on `teacher_features_path`, default
    the same file: e.g. 3840-d regions for the ViSiL teacher) -> the PairSet, also written to `out_path`.

    resume: keep the anchors an earlier run with the same settings stored in `out_path`; a file made with
    other settings is an error (PairsFileError) rather than silently mixed.  self_pairs: each anchor is
    also scored against itself, as a positive (see the module docstring).
    """
    if num_positives < 1 or num_negatives < 1:
        raise ValueError("num_positives and num_negatives must be >= 1")
    ids = list_ids(features_path)
    if len(ids) < 2:
        raise ValueError(f"{features_path}: pair mining needs at least 2 videos, found {len(ids)}")
    teacher_path = Path(teacher_features_path or features_path)
    if teacher_path != Path(features_path):
        missing = sorted(set(ids) - set(list_ids(teacher_path)))
        if missing:
            raise ValueError(f"{teacher_path}: the teacher features lack {len(missing)} videos, "
                             f"e.g. {missing[:5]}")
    config = {"num_positives": num_positives, "num_negatives": num_negatives, "seed": seed,
              "pool_similarity": "cosine of mean-pooled region vectors", "features": Path(features_path).name,
              "self_pairs": self_pairs}
    out_path = Path(out_path)
    pair_set = PairSet(ids, {}, teacher.name, config)
    if resume and out_path.exists():
        stored = PairSet.load(out_path)
        if stored.index != ids or stored.teacher != teacher.name or stored.config != config:
            raise PairsFileError(f"{out_path}: holds pairs of other videos or settings (teacher "
                                 f"{stored.teacher!r}, {stored.config}); choose another output or "
                                 "do not resume")
        pair_set.pairs = stored.pairs
    pools = candidate_pools(global_vectors(features_path, ids, progress), num_positives, num_negatives, seed)
    todo = [anchor for anchor in range(len(ids)) if anchor not in pair_set.pairs]
    with tqdm(total=len(ids), initial=len(ids) - len(todo), desc=f"pairs ({teacher.name})", unit="anchor",
              disable=not progress) as bar:
        for done, anchor in enumerate(todo, 1):
            positives, negatives = pools[anchor]
            positives = [anchor, *positives] if self_pairs else positives
            others = positives + negatives
            videos = read_features(teacher_path, [ids[i] for i in dict.fromkeys([anchor, *others])])
            query = teacher.prepare(videos[ids[anchor]])
            targets = [query if i == anchor else teacher.prepare(videos[ids[i]]) for i in others]
            scores = teacher.similarities(query, targets)
            pair_set.pairs[anchor] = {
                "positives": {i: float(s) for i, s in zip(positives, scores[: len(positives)], strict=True)},
                "negatives": {i: float(s) for i, s in zip(negatives, scores[len(positives):], strict=True)},
            }
            if done % save_every == 0:
                pair_set.save(out_path)
            bar.update()
    pair_set.save(out_path)
    return pair_set
