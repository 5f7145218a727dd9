"""Frame features in HDF5, in the layout of the official DnS feature files.

Layout: one dataset per video at the root of the file, named by the video id, holding `[T, 9, 512]` float32
region vectors (the reference loaders read `h5py.File(path)[video_id][:]`). Official files are read as they
are: a dataset's id is its path inside the file (without the leading '/'), and `[T, D]` datasets (one vector
per frame) are read as `[T, 1, D]` like the reference's loader does.

Ids that are not valid HDF5 names are escaped when writing: '%' -> '%25', '/' -> '%2F' (h5py would otherwise
create groups), and a leading '.' -> '%2E' (so '.' and '..' are names too). The exact id is also stored in the
dataset's `video_id` attribute, which readers here prefer; plain-h5py readers see the escaped name.

Writes never expose a half-written dataset: into an existing file each video goes to a hidden temporary
dataset that is renamed once complete; a new file (or `append=False`) is written to a temporary file next to
the target and moved over it with `os.replace`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np
from dnsvr.client.spec import FEATURE_DIMS, REGIONS
from dnsvr.training.files import atomic_path

ID_ATTR = "video_id"
TEMP_PREFIX = ".partial-"


class FeaturesFileError(ValueError):
    """A features file or array is unusable; the message names the file, the video and the problem."""


class UnknownVideoError(FeaturesFileError, KeyError):
    """Requested video ids are not in the features file."""

    def __str__(self) -> str:
        return str(self.args[0])


def dataset_name(video_id: str) -> str:
    """The HDF5 dataset name for `video_id` ('%', '/' and a leading '.' percent-escaped)."""
    if not isinstance(video_id, str) or not video_id:
        raise FeaturesFileError(f"video ids must be non-empty strings, got {video_id!r}")
    name = video_id.replace("%", "%25").replace("/", "%2F")
    return "%2E" + name[1:] if name.startswith(".") else name


def validate_features(
    video_id: str, features: np.ndarray, regions: int | None = REGIONS, dims: int | None = FEATURE_DIMS
) -> np.ndarray:
    """Check one video's features and return them as float32 `[T, R, D]`.

    Accepts float16/32/64 arrays (or CPU tensors); raises FeaturesFileError for another dtype, a rank other
    than 3, no frames, a region or dimension count other than `regions`/`dims` (None: any), or NaN/inf.
    """
    array = np.asarray(features)
    if not np.issubdtype(array.dtype, np.floating):
        raise FeaturesFileError(f"video {video_id!r}: features must be floating point, got {array.dtype}")
    if array.ndim != 3:
        raise FeaturesFileError(f"video {video_id!r}: features must be [T, R, D], got shape {array.shape}")
    if array.shape[0] == 0:
        raise FeaturesFileError(f"video {video_id!r}: features have no frames (shape {array.shape})")
    if regions is not None and array.shape[1] != regions:
        raise FeaturesFileError(f"video {video_id!r}: expected {regions} regions, got shape {array.shape}")
    if dims is not None and array.shape[2] != dims:
        raise FeaturesFileError(f"video {video_id!r}: expected {dims}-d vectors, got shape {array.shape}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise FeaturesFileError(f"video {video_id!r}: features contain NaN or inf")
    return array


def _open(path: str | os.PathLike, mode: str) -> h5py.File:
    if mode == "r" and not Path(path).is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    try:
        return h5py.File(path, mode)
    except OSError as error:
        raise FeaturesFileError(f"{path}: not a readable HDF5 features file ({error})") from error


def _datasets(file: h5py.File) -> dict[str, h5py.Dataset]:
    """Every complete dataset in the file keyed by video id (`video_id` attribute, else its path)."""
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, node: h5py.HLObject) -> None:
        if isinstance(node, h5py.Dataset) and not name.split("/")[-1].startswith(TEMP_PREFIX):
            video_id = node.attrs.get(ID_ATTR, name)
            found[video_id.decode() if isinstance(video_id, bytes) else str(video_id)] = node

    file.visititems(visit)
    return found


def _lookup(file: h5py.File, video_id: str) -> h5py.Dataset | None:
    node = file.get(dataset_name(video_id))
    if isinstance(node, h5py.Dataset) and node.attrs.get(ID_ATTR) == video_id:
        return node
    node = file.get(video_id)
    if isinstance(node, h5py.Dataset) and ID_ATTR not in node.attrs:
        return node
    return None


def _write_one(
    file: h5py.File, video_id: str, array: np.ndarray, overwrite: bool, compression: str | None
) -> None:
    name = dataset_name(video_id)
    temp = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    try:
        dataset = file.create_dataset(temp, data=array, compression=compression)
        dataset.attrs[ID_ATTR] = video_id
        if name in file:
            if not overwrite:
                raise FeaturesFileError(f"{file.filename}: video {video_id!r} is already stored")
            del file[name]
        file.move(temp, name)
    finally:
        if temp in file:
            del file[temp]


def write_features(
    path: str | os.PathLike,
    features: Mapping[str, np.ndarray],
    append: bool = True,
    overwrite: bool = False,
    regions: int | None = REGIONS,
    dims: int | None = FEATURE_DIMS,
    compression: str | None = None,
) -> list[str]:
    """Store `{video_id: [T, R, D] array}` as float32 datasets; returns the ids written, in order.

    `append=True` adds to an existing file (creating it if needed); `append=False` replaces the whole file
    atomically. Ids already in the file are an error unless `overwrite`. Every array is validated (see
    `validate_features`) before anything is written, so a bad input leaves the file untouched.
    """
    arrays = {vid: validate_features(vid, array, regions, dims) for vid, array in features.items()}
    for video_id in arrays:
        dataset_name(video_id)
    path = Path(path)
    if append and path.exists():
        with _open(path, "r+") as file:
            if not overwrite:
                taken = [video_id for video_id in arrays if dataset_name(video_id) in file]
                if taken:
                    raise FeaturesFileError(f"{path}: videos already stored (pass overwrite=True): {taken}")
            for video_id, array in arrays.items():
                _write_one(file, video_id, array, overwrite, compression)
        return list(arrays)
    with atomic_path(path) as temp, h5py.File(temp, "w") as file:
        for video_id, array in arrays.items():
            _write_one(file, video_id, array, overwrite=False, compression=compression)
    return list(arrays)


def list_ids(path: str | os.PathLike) -> list[str]:
    """The video ids stored in a features file (ours or an official DnS file), sorted."""
    with _open(path, "r") as file:
        return sorted(_datasets(file))


def _as_features(path: str | os.PathLike, video_id: str, dataset: h5py.Dataset) -> np.ndarray:
    array = dataset[()]
    if array.ndim == 2:
        array = array[:, None, :]
    try:
        return validate_features(video_id, array, regions=None, dims=None)
    except FeaturesFileError as error:
        raise FeaturesFileError(f"{path}: {error}") from error


def iter_features(
    path: str | os.PathLike, ids: Iterable[str] | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Lazily yield `(video_id, float32 [T, R, D])`, one dataset read at a time (all ids, sorted, if None).

    Unknown ids raise UnknownVideoError (a FeaturesFileError and KeyError) before anything is yielded.
    """
    with _open(path, "r") as file:
        if ids is None:
            datasets = sorted(_datasets(file).items())
        else:
            ids = list(ids)
            found = {video_id: _lookup(file, video_id) for video_id in ids}
            missing = [video_id for video_id, dataset in found.items() if dataset is None]
            if missing:
                raise UnknownVideoError(f"{path}: unknown video ids {missing[:10]}"
                                        + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))
            datasets = [(video_id, found[video_id]) for video_id in ids]
        for video_id, dataset in datasets:
            yield video_id, _as_features(path, video_id, dataset)


def read_features(path: str | os.PathLike, ids: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """All (or the given) videos of a features file as `{video_id: float32 [T, R, D]}`."""
    return dict(iter_features(path, ids))
