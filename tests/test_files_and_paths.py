"""The one atomic-write helper, the one video-file finder with its --id-from rule, and the paths module."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dnsvr.training import paths
from dnsvr.training.files import atomic_path, atomic_write_text, find_videos, update_json_keys, video_id


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "table.md"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        partial.write_text("half of the sec")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "first" and sorted(p.name for p in target.parent.iterdir()) == ["table.md"]
    with atomic_path(target, suffix=".png") as partial:
        assert partial.name.endswith(".partial.png") and partial.parent == target.parent
        partial.write_text("second")
    assert target.read_text() == "second" and sorted(p.name for p in target.parent.iterdir()) == ["table.md"]


def test_update_json_keys_sets_keys_and_keeps_the_rest_in_order(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "pack.json", json.dumps({"name": "p", "files": {"fine": "f.pth"}, "seed": 0}))
    assert update_json_keys(path, {"seed": 2, "duplicate_threshold": 0.93}) == json.loads(path.read_text())
    assert list(json.loads(path.read_text()).items()) == [("name", "p"), ("files", {"fine": "f.pth"}), ("seed", 2),
                                                          ("duplicate_threshold", 0.93)]
    assert [p.name for p in tmp_path.iterdir()] == ["pack.json"]  # no partial file left behind
    with pytest.raises(json.JSONDecodeError):  # not JSON: an error, the file untouched
        update_json_keys(atomic_write_text(tmp_path / "bad.json", "{not json"), {"seed": 1})
    assert (tmp_path / "bad.json").read_text() == "{not json"


def test_find_videos_ids_and_problems(tmp_path: Path) -> None:
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for name in ("a/one.mp4", "a/sub/two.MKV", "a/notes.txt", "three.webm"):
        (tmp_path / name).write_bytes(b"x")
    found = find_videos([tmp_path / "a", tmp_path / "three.webm", tmp_path / "absent"], id_from="stem")
    assert [vid for vid, _ in found.items] == ["one", "two", "three"] and found.missing == [str(tmp_path / "absent")]
    by_path = find_videos([tmp_path / "a"], id_from="path")
    assert [vid for vid, _ in by_path.items] == ["one", "sub/two"]
    assert [vid for vid, _ in find_videos([tmp_path / "a"], id_from="name").items] == ["one.mp4", "two.MKV"]
    twice = find_videos([tmp_path / "three.webm", tmp_path / "three.webm"])
    assert len(twice.items) == 1  # the same file named twice is listed once
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "one.mp4").write_bytes(b"y")
    with pytest.raises(ValueError, match="two videos get the id 'one'"):
        find_videos([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="id_from must be one of"):
        video_id(Path("x.mp4"), "hash")


def test_paths_follow_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DNSVR_SHARED", str(tmp_path / "shared"))
    monkeypatch.setenv("DNSVR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DNSVR_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("DNSVR_STATE", raising=False)
    assert paths.shared_videos_dir() == tmp_path / "shared" / "data" / "videos"
    assert paths.cache_dir("nd_benchmark") == tmp_path / "cache" / "nd_benchmark"
    assert paths.default_store_path() == tmp_path / "data" / "milvus.db"
    assert paths.state_path() == tmp_path / "data" / "serve.json"
    monkeypatch.delenv("DNSVR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "dnsvr"
    with pytest.raises(KeyError, match="not a dnsvr environment variable"):
        paths.environment("DNSVR_CACHE_DIR")


def test_no_module_reads_dnsvr_variables_but_paths() -> None:
    """Every DNSVR_* variable is read through dnsvr.training.paths (the client SDK reads DNSVR_URL itself)."""
    root = Path(__file__).resolve().parents[1]
    sources = [p for folder in ("training", "export", "serving") for p in (root / folder).rglob("*.py")]
    reads = re.compile(r"""os\.(environ(\.get)?|getenv)\s*[\[(]\s*["']DNSVR_""")
    readers = [str(p.relative_to(root)) for p in sources if reads.search(p.read_text()) and p.name != "paths.py"]
    assert readers == []
