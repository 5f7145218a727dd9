"""Files on disk: the one atomic-write helper, and the one finder of video files with its id rule.

    with atomic_path("out/table.md") as partial:        # write `partial`; it replaces the target on success
        partial.write_text(text)
    atomic_write_text("state.json", json.dumps(state))   # the same for a whole text at once
    update_json_keys("pack/pack.json", {"fusion": "mix"})  # a JSON object's keys set, the rest kept
    find_videos(["clips/", "extra.mp4"], id_from="stem") -> VideoFiles(items [(id, path)], missing [str])

Atomic: the data goes to `<name>.<pid>.partial` beside the target (same folder, so same file system), which
`os.replace` moves over the target only when writing succeeded; a reader sees the old file or the new one,
never half of one, and a failed write leaves no partial file behind.

Video ids (`--id-from`, the same meaning in every command):
    stem  the file name without its extension (default)
    name  the file name with its extension
    path  the path relative to the folder argument it was found in (a file argument: the path as given),
          without the extension, with '/' separators
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VIDEO_EXTENSIONS = frozenset(
    ".3gp .avi .flv .m2ts .m4v .mkv .mov .mp4 .mpeg .mpg .mts .ogv .ts .vob .webm .wmv".split()
)
ID_RULES = ("stem", "name", "path")
ID_FROM_HELP = ("video id: stem = file name without extension, name = file name, path = path relative to the "
                "folder argument (a file argument: as given) without extension (default: %(default)s)")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside `path` to write to; moved over `path` when the block ends without error.

    `suffix` is appended to the temporary name (writers that pick a format by extension, e.g. `.png`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial{suffix}")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return Path(path)


def update_json_keys(path: str | os.PathLike, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Set `updates`' keys in the JSON object stored at `path` (rewritten atomically, every other key kept, order
    too) -> the new object.  A pack's pack.json is written so by each stage that adds to it."""
    contents = {**json.loads(Path(path).read_text()), **updates}
    atomic_write_text(path, json.dumps(contents, indent=2) + "\n")
    return contents


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_path(path) as partial:
        partial.write_bytes(data)
    return Path(path)


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def video_id(path: Path, id_from: str = "stem", root: Path | None = None) -> str:
    """The id of the video at `path` under the rule `id_from` (module docstring); `root`: its folder argument."""
    if id_from == "stem":
        return path.stem
    if id_from == "name":
        return path.name
    if id_from == "path":
        relative = path.relative_to(root) if root is not None else path
        return relative.with_suffix("").as_posix()
    raise ValueError(f"id_from must be one of {ID_RULES}, got {id_from!r}")


@dataclass
class VideoFiles:
    """What `find_videos` found: (id, path) pairs in argument order (folders sorted), and missing arguments."""

    items: list[tuple[str, Path]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def find_videos(inputs: Sequence[str | os.PathLike], id_from: str = "stem") -> VideoFiles:
    """Every file argument and every video file (by extension) under every folder argument, with its id.

    A file named twice is listed once; two different files that would get the same id raise ValueError
    (pick another `id_from`).  Arguments that do not exist are listed in `missing`.
    """
    if id_from not in ID_RULES:
        raise ValueError(f"id_from must be one of {ID_RULES}, got {id_from!r}")
    found = VideoFiles()
    seen: dict[str, Path] = {}
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            pairs = [(video_id(p, id_from, root), p) for p in sorted(root.rglob("*")) if is_video_file(p)]
        elif root.is_file():
            pairs = [(video_id(root, id_from), root)]
        else:
            found.missing.append(str(item))
            continue
        for vid, path in pairs:
            if vid in seen:
                if seen[vid].resolve() != path.resolve():
                    raise ValueError(f"two videos get the id {vid!r}: {seen[vid]} and {path} (choose another "
                                     f"--id-from: {', '.join(ID_RULES)})")
                continue
            seen[vid] = path
            found.items.append((vid, path))
    return found


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json_file(path: Path, error: type[Exception], what: str) -> Any:
    """The JSON document in `path` (never pickle: a file from elsewhere cannot run code); `error` naming the
    file as "no such `what` file" or "not a JSON `what` file" when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not a JSON {what} file ({exc})") from exc
