"""Readers of the official text-to-video test splits, each -> a `TextVideoSplit` (nothing is downloaded).

The file layouts are those CLIP4Clip's and TeachCLIP's data loaders read:

* **MSR-VTT 1k-A** (`msrvtt`): `MSRVTT_JSFUSION_test.csv`, a header `key,vid_key,video_id,sentence` and one row
  per test pair (1000 rows: one caption per video).  Only `video_id` and `sentence` are used.
* **MSVD** (`msvd`): a folder with `test_list.txt` (one video id per line) and `raw-captions.pkl`
  ({video id: [caption as a list of tokens]}, tokens joined with spaces as the reference does), or the same
  dict as `raw-captions.json` (tokens lists or plain strings).  Every caption of every listed video is a query
  (multi-caption: about 40 per video).  The pickle is read with the restricted unpickler of
  `dnsvr.training.evaluation.protocols` (builtin containers only): a pickle naming any other global is refused.
* **DiDeMo** (`didemo`): `test_data.json`, a list of {'video', 'description', 'times', ...}, several moments
  per video; as in the reference, a video's descriptions are joined (in file order, with spaces) into one
  paragraph, its one caption (video-paragraph retrieval).  `video_list` (the reference's `test_list.txt`)
  optionally restricts the videos.  A 'description' given as a list of sentences is joined too.

* **our split files** (`split`): a `TextVideoSplit` saved as JSON (`TextVideoSplit.save`; e.g. the captioned
  benchmark as `dnsvr eval t2v-export` writes it).

Videos are ranked in the order they first appear (a split file: in its own order).  Malformed files raise
`SplitError` naming file and entry.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dnsvr.training.data.text_video_split import SplitError, TextVideoSplit
from dnsvr.training.evaluation.protocols import load_annotation_pickle

DATASETS = ("msrvtt", "msvd", "didemo", "split")


def _split(pairs: list[tuple[str, str]], source: Path) -> TextVideoSplit:
    """(video id, caption) pairs in file order -> a split ranking every video that has a caption."""
    if not pairs:
        raise SplitError(f"{source}: no captions found")
    return TextVideoSplit(
        captions=[caption for _, caption in pairs],
        caption_video=[video for video, _ in pairs],
        video_ids=list(dict.fromkeys(video for video, _ in pairs)),
    )


def read_msrvtt(csv_path: str | Path) -> TextVideoSplit:
    """`MSRVTT_JSFUSION_test.csv` -> one caption per row, owned by the row's `video_id`."""
    path = Path(csv_path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("video_id", "sentence") if c not in (reader.fieldnames or [])]
        if missing:
            raise SplitError(f"{path}: the header lacks the columns {missing}; found {reader.fieldnames}")
        pairs = []
        for line, row in enumerate(reader, start=2):
            video, sentence = (row["video_id"] or "").strip(), (row["sentence"] or "").strip()
            if not video or not sentence:
                raise SplitError(f"{path}:{line}: empty video_id or sentence")
            pairs.append((video, sentence))
    return _split(pairs, path)


def _caption_text(caption: Any, where: str) -> str:
    """A caption as the loaders store it (a token list or a string) -> its text."""
    if isinstance(caption, (list, tuple)) and all(isinstance(token, str) for token in caption):
        text = " ".join(caption)
    elif isinstance(caption, str):
        text = caption
    else:
        raise SplitError(f"{where}: a caption must be a string or a list of tokens, got {type(caption).__name__}")
    if not text.strip():
        raise SplitError(f"{where}: empty caption")
    return text.strip()


def read_msvd(folder: str | Path, subset: str = "test") -> TextVideoSplit:
    """`<subset>_list.txt` + `raw-captions.pkl` (or `.json`) in `folder` -> every caption of every listed video."""
    folder = Path(folder)
    list_path = folder / f"{subset}_list.txt"
    if not list_path.is_file():
        raise SplitError(f"{folder}: no {list_path.name}")
    videos = [line.strip() for line in list_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    json_path, pickle_path = folder / "raw-captions.json", folder / "raw-captions.pkl"
    captions: Mapping[str, Any]
    if json_path.is_file():
        captions = json.loads(json_path.read_text(encoding="utf-8"))
        source = json_path
    elif pickle_path.is_file():
        captions, source = load_annotation_pickle(pickle_path), pickle_path
    else:
        raise SplitError(f"{folder}: neither raw-captions.json nor raw-captions.pkl")
    if not isinstance(captions, Mapping):
        raise SplitError(f"{source}: expected a dict {{video id: [captions]}}, got {type(captions).__name__}")
    uncaptioned = [video for video in videos if not captions.get(video)]
    if uncaptioned:
        raise SplitError(f"{source}: {len(uncaptioned)} listed videos have no captions, e.g. {uncaptioned[:3]}")
    pairs = [
        (video, _caption_text(caption, f"{source}[{video!r}][{k}]"))
        for video in videos
        for k, caption in enumerate(captions[video])
    ]
    return _split(pairs, source)


def read_didemo(json_path: str | Path, video_list: str | Path | None = None) -> TextVideoSplit:
    """`test_data.json` (+ optional video list) -> one paragraph caption per video."""
    path = Path(json_path)
    entries = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise SplitError(f"{path}: expected a list of moments, got {type(entries).__name__}")
    keep = None
    if video_list is not None:
        keep = {line.strip() for line in Path(video_list).read_text(encoding="utf-8").splitlines() if line.strip()}
    paragraphs: dict[str, list[str]] = {}
    for k, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "video" not in entry or "description" not in entry:
            raise SplitError(f"{path}[{k}]: a moment needs 'video' and 'description'")
        if keep is not None and entry["video"] not in keep:
            continue
        description = entry["description"]
        text = _caption_text(description.split() if isinstance(description, str) else description, f"{path}[{k}]")
        paragraphs.setdefault(str(entry["video"]), []).append(text)
    return _split([(video, " ".join(texts)) for video, texts in paragraphs.items()], path)


def load_split(dataset: str, path: str | Path, video_list: str | Path | None = None) -> TextVideoSplit:
    """Dataset name (one of DATASETS) + its file or folder -> the split (`video_list`: DiDeMo only)."""
    if dataset == "msrvtt":
        return read_msrvtt(path)
    if dataset == "msvd":
        return read_msvd(path)
    if dataset == "didemo":
        return read_didemo(path, video_list)
    if dataset == "split":
        return TextVideoSplit.load(path)
    raise SplitError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
