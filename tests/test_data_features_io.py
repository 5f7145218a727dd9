"""HDF5 features files: official DnS layout, id escaping, appends, validation, no half-written datasets."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from dnsvr.training.data.features_io import (
    TEMP_PREFIX,
    FeaturesFileError,
    UnknownVideoError,
    iter_features,
    list_ids,
    read_features,
    write_features,
)


def features(frames: int, seed: int, regions: int = 9, dims: int = 512) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((frames, regions, dims)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_round_trip_with_awkward_ids(tmp_path: Path) -> None:
    path = tmp_path / "features.h5"
    stored = {
        "plain": features(5, 0),
        "youtube/abc/def": features(1, 1),
        "100%/real": features(3, 2),
        ".hidden": features(2, 3),
        "..": features(4, 4),
        "vidéo ü": features(6, 5),
    }
    assert write_features(path, stored) == list(stored)
    assert list_ids(path) == sorted(stored)
    loaded = read_features(path)
    assert loaded.keys() == stored.keys()
    for video_id, array in stored.items():
        assert loaded[video_id].dtype == np.float32
        np.testing.assert_array_equal(loaded[video_id], array)
    with h5py.File(path, "r") as file:
        assert all(isinstance(node, h5py.Dataset) for node in file.values()), "no groups at the root"
        assert file["youtube%2Fabc%2Fdef"].attrs["video_id"] == "youtube/abc/def"
        assert "100%25%2Freal" in file and "%2Ehidden" in file and "%2E." in file
    subset = read_features(path, ["youtube/abc/def", "plain"])
    assert list(subset) == ["youtube/abc/def", "plain"]


def test_append_overwrite_and_replace(tmp_path: Path) -> None:
    path = tmp_path / "features.h5"
    write_features(path, {"a": features(4, 0)})
    write_features(path, {"b": features(5, 1)})
    assert list_ids(path) == ["a", "b"]
    with pytest.raises(FeaturesFileError, match="already stored"):
        write_features(path, {"c": features(2, 2), "a": features(2, 3)})
    assert list_ids(path) == ["a", "b"], "a refused write must not store part of its videos"
    write_features(path, {"a": features(7, 4)}, overwrite=True)
    np.testing.assert_array_equal(read_features(path, ["a"])["a"], features(7, 4))
    write_features(path, {"z": features(1, 5)}, append=False)
    assert list_ids(path) == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.h5"], "no temporary file left behind"


def test_validation_errors_leave_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "features.h5"
    write_features(path, {"good": features(4, 0)})
    before = path.read_bytes()
    nan = features(4, 1)
    nan[0, 0, 0] = np.nan
    bad_inputs = [
        ({"ints": np.ones((4, 9, 512), np.int32)}, "floating point"),
        ({"flat": np.ones((4, 512), np.float32)}, r"\[T, R, D\]"),
        ({"regions": features(4, 2, regions=8)}, "9 regions"),
        ({"dims": features(4, 3, dims=256)}, "512-d"),
        ({"empty": np.zeros((0, 9, 512), np.float32)}, "no frames"),
        ({"nan": nan}, "NaN"),
        ({"": features(4, 4)}, "non-empty"),
    ]
    for batch, message in bad_inputs:
        with pytest.raises(FeaturesFileError, match=message):
            write_features(path, {"fine": features(4, 5), **batch})
    assert path.read_bytes() == before
    assert list_ids(path) == ["good"]
    write_features(path, {"other": features(3, 6, regions=16, dims=128)}, regions=None, dims=None)
    assert read_features(path, ["other"])["other"].shape == (3, 16, 128)


def test_reads_official_layout_written_with_plain_h5py(tmp_path: Path) -> None:
    path = tmp_path / "official.hdf5"
    with h5py.File(path, "w") as file:
        file.create_dataset("5d9ae3e7", data=features(12, 0))
        file.create_dataset("half", data=features(3, 1).astype(np.float16))
        file.create_dataset("coarse", data=np.ones((6, 512), np.float32))
        file.create_dataset("dir/clip", data=features(2, 2))
    assert list_ids(path) == ["5d9ae3e7", "coarse", "dir/clip", "half"]
    loaded = read_features(path)
    np.testing.assert_array_equal(loaded["5d9ae3e7"], features(12, 0))
    assert loaded["half"].dtype == np.float32 and loaded["half"].shape == (3, 9, 512)
    assert loaded["coarse"].shape == (6, 1, 512)
    np.testing.assert_array_equal(read_features(path, ["dir/clip"])["dir/clip"], features(2, 2))


def test_lazy_reads_unknown_ids_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "features.h5"
    write_features(path, {f"v{i}": features(4, i) for i in range(3)})
    lazy = iter_features(path)
    assert next(lazy)[0] == "v0"
    lazy.close()
    with pytest.raises(UnknownVideoError, match="nope") as error:
        read_features(path, ["v1", "nope"])
    assert isinstance(error.value, KeyError) and isinstance(error.value, FeaturesFileError)
    not_hdf5 = tmp_path / "notes.h5"
    not_hdf5.write_text("hello")
    with pytest.raises(FeaturesFileError, match="not a readable HDF5"):
        list_ids(not_hdf5)
    with pytest.raises(FileNotFoundError):
        read_features(tmp_path / "missing.h5")


def test_a_partial_dataset_left_by_a_killed_writer_is_invisible(tmp_path: Path) -> None:
    """A writer killed mid-write leaves only its temporary dataset (made here with h5py): never listed."""
    path = tmp_path / "features.h5"
    write_features(path, {"done": features(4, 0)})
    with h5py.File(path, "r+") as file:
        file.create_dataset(f"{TEMP_PREFIX}0123", data=features(2, 1)[:1])
    assert list_ids(path) == ["done"]
    assert list(read_features(path)) == ["done"]
