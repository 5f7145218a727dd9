"""User-supplied text-video scores (an `.npz` file) as a similarity function: evaluation without model code.

Keys of the file (`np.savez`; text as numpy unicode arrays, never objects: it is read with allow_pickle=False):

* either `similarity` float `[Nt, Nv]`, or `text` float `[Nt, D]` and `video` float `[Nv, D]` embeddings, scored
  by cosine (each row L2-normalised, as CLIP4Clip and TeachCLIP do);
* optionally `captions` str `[Nt]`: the caption of each row; rows are then looked up by caption text (a caption
  that appears twice takes its first row), otherwise rows must come in the split's caption order;
* optionally `video_ids` str `[Nv]`: the video of each column; columns are then looked up by id (columns of
  other videos are left out), otherwise columns must come in the split's video order.

`ScoreFile.load(path).similarity_fn` has the driver's signature `(captions, video_ids) -> float [Nt, Nv]`.
`save_scores` writes such a file.  Bad files raise `ScoreFileError` naming the key and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from dnsvr.training.files import atomic_path


class ScoreFileError(ValueError):
    """A score file is unreadable, lacks a key, or does not cover the split."""


def _float_matrix(array: np.ndarray, key: str, path: Path) -> np.ndarray:
    if array.ndim != 2 or array.dtype.kind not in "fiu":
        raise ScoreFileError(f"{path}: '{key}' must be a 2-D numeric array, got {array.dtype} {array.shape}")
    if not np.isfinite(array).all():
        raise ScoreFileError(f"{path}: '{key}' holds non-finite values")
    return array.astype(np.float32, copy=False)


def _names(array: np.ndarray | None, key: str, path: Path, count: int) -> list[str] | None:
    if array is None:
        return None
    if array.dtype.kind != "U" or array.shape != (count,):
        raise ScoreFileError(
            f"{path}: '{key}' must be {count} strings (numpy unicode), got {array.dtype} {array.shape}"
        )
    return [str(name) for name in array]


def _normalised(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class ScoreFile:
    """A loaded score file: a similarity matrix or the two embedding matrices, with optional row/column names."""

    path: Path
    similarity: np.ndarray | None
    text: np.ndarray | None
    video: np.ndarray | None
    captions: list[str] | None
    video_ids: list[str] | None

    @classmethod
    def load(cls, path: str | Path) -> ScoreFile:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except ValueError as error:  # object arrays need pickle, which is refused
            raise ScoreFileError(f"{path}: unreadable without pickle ({error}); store text as numpy unicode") from None
        except (OSError, EOFError) as error:
            raise ScoreFileError(f"{path}: not a readable .npz file ({error})") from None
        known = {"similarity", "text", "video", "captions", "video_ids"}
        if unknown := sorted(set(arrays) - known):
            raise ScoreFileError(f"{path}: unknown keys {unknown}; expected some of {sorted(known)}")
        if "similarity" in arrays:
            if "text" in arrays or "video" in arrays:
                raise ScoreFileError(f"{path}: give either 'similarity' or 'text' + 'video', not both")
            similarity = _float_matrix(arrays["similarity"], "similarity", path)
            text = video = None
            rows, columns = similarity.shape
        elif "text" in arrays and "video" in arrays:
            similarity = None
            text = _float_matrix(arrays["text"], "text", path)
            video = _float_matrix(arrays["video"], "video", path)
            if text.shape[1] != video.shape[1]:
                raise ScoreFileError(f"{path}: 'text' is {text.shape[1]}-d but 'video' is {video.shape[1]}-d")
            rows, columns = len(text), len(video)
        else:
            raise ScoreFileError(f"{path}: needs 'similarity' [Nt, Nv], or 'text' [Nt, D] and 'video' [Nv, D]")
        return cls(
            path,
            similarity,
            text,
            video,
            _names(arrays.get("captions"), "captions", path, rows),
            _names(arrays.get("video_ids"), "video_ids", path, columns),
        )

    @property
    def bytes_per_video(self) -> int | None:
        """Bytes of one stored video embedding (float32), None for a bare similarity matrix."""
        return None if self.video is None else int(self.video.shape[1] * 4)

    def _positions(self, wanted: Sequence[str], names: list[str] | None, count: int, what: str) -> np.ndarray:
        if names is None:
            if len(wanted) != count:
                raise ScoreFileError(
                    f"{self.path}: {count} {what} in the file but the split has {len(wanted)}; "
                    f"store '{'captions' if what == 'rows' else 'video_ids'}' to match them by name"
                )
            return np.arange(count)
        first: dict[str, int] = {}
        for k, name in enumerate(names):
            first.setdefault(name, k)
        missing = [name for name in wanted if name not in first]
        if missing:
            raise ScoreFileError(
                f"{self.path}: {len(missing)} of the split's {what} are not in the file, e.g. {missing[:3]}"
            )
        return np.array([first[name] for name in wanted], dtype=np.int64)

    def similarity_fn(self, captions: Sequence[str], video_ids: Sequence[str]) -> np.ndarray:
        """float32 `[len(captions), len(video_ids)]` for the split's captions and videos."""
        count_rows = len(self.text) if self.similarity is None else self.similarity.shape[0]
        count_columns = len(self.video) if self.similarity is None else self.similarity.shape[1]
        rows = self._positions(captions, self.captions, count_rows, "rows")
        columns = self._positions(video_ids, self.video_ids, count_columns, "columns")
        if self.similarity is not None:
            return self.similarity[np.ix_(rows, columns)]
        return _normalised(self.text[rows]) @ _normalised(self.video[columns]).T


def save_scores(
    path: str | Path,
    *,
    similarity: np.ndarray | None = None,
    text: np.ndarray | None = None,
    video: np.ndarray | None = None,
    captions: Sequence[str] | None = None,
    video_ids: Sequence[str] | None = None,
) -> Path:
    """Write a score file atomically (the keys of the module docstring; None values are left out)."""
    arrays = {"similarity": similarity, "text": text, "video": video}
    arrays = {key: np.asarray(value, dtype=np.float32) for key, value in arrays.items() if value is not None}
    for key, names in (("captions", captions), ("video_ids", video_ids)):
        if names is not None:
            arrays[key] = np.array(list(names), dtype=str)
    with atomic_path(path) as partial, open(partial, "wb") as handle:
        np.savez(handle, **arrays)
    return Path(path)
