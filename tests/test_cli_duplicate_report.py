"""`dnsvr index --on-duplicate ... --duplicate-report PATH`: the table at the end and the CSV / JSON file, with a
stand-in client (what the service answers is covered by test_service_end_to_end's duplicate test)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from dnsvr.client import Duplicate, IndexOutcome, IndexResult
from dnsvr.serving.cli import main as cli
from dnsvr.serving.cli import service

FOUND = {"copy": [Duplicate("original", 0.97), Duplicate("other", 0.91)]}  # new video -> what the index reports


class StandInClient:
    """index_many as the service answers it: skip leaves out a video with duplicates, report stores it."""

    def __init__(self) -> None:
        self.asked: dict = {}

    def __enter__(self) -> StandInClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def index_many(self, items, *, concurrency, on_done, on_duplicate, duplicate_threshold):
        self.asked = {"on_duplicate": on_duplicate, "duplicate_threshold": duplicate_threshold}
        outcomes = []
        for video_id, _ in items:
            duplicates = FOUND.get(video_id, []) if on_duplicate != "keep" else []
            stored = on_duplicate != "skip" or not duplicates
            outcomes.append(IndexOutcome(video_id, IndexResult(video_id, 4, stored=stored, duplicates=duplicates)))
            on_done(outcomes[-1])
        return outcomes


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("copy", "fresh"):
        (videos / f"{name}.mp4").write_bytes(b"not decoded by the stand-in")
    return videos


@pytest.fixture()
def client(monkeypatch) -> StandInClient:
    opened = StandInClient()
    monkeypatch.setattr(service, "client_from_args", lambda args: opened)
    return opened


def test_skip_prints_the_table_and_writes_csv_and_json(folder, client, tmp_path, capsys):
    report = tmp_path / "report.csv"
    assert cli.main(["index", str(folder), "--on-duplicate", "skip", "--duplicate-threshold", "0.85",
                     "--duplicate-report", str(report)]) == 0
    output = capsys.readouterr().out
    assert client.asked == {"on_duplicate": "skip", "duplicate_threshold": 0.85}
    assert "indexed 1 videos (4 frames at 1 fps), 0 skipped, 1 not stored as near-duplicates" in output
    assert "skipped" in output and "original" in output and "0.9700" in output and "fresh" not in output.split(
        "near-duplicates of")[1]
    with report.open() as opened:
        rows = list(csv.DictReader(opened))
    assert rows == [{"video_id": "copy", "stored": "False", "duplicate_id": "original", "score": "0.970000"},
                    {"video_id": "copy", "stored": "False", "duplicate_id": "other", "score": "0.910000"}]

    report = tmp_path / "report.json"
    assert cli.main(["index", str(folder), "--on-duplicate", "report", "--duplicate-report", str(report)]) == 0
    assert json.loads(report.read_text()) == [{"video_id": "copy", "stored": True, "duplicates": [
        {"video_id": "original", "score": 0.97}, {"video_id": "other", "score": 0.91}]}]
    assert "indexed 2 videos" in capsys.readouterr().out


@pytest.mark.parametrize(("arguments", "message"), [
    (["--on-duplicate", "skip", "--duplicate-report", "report.txt"], "must end in .csv or .json"),
    (["--duplicate-report", "report.csv"], "needs --on-duplicate report or skip"),
    (["--on-duplicate", "skip", "--duplicate-threshold", "1.5"], "duplicate_threshold must be a number in"),
    (["--on-duplicate", "skip", "--duplicate-threshold", "nan"], "got nan"),
])
def test_bad_options_index_nothing(folder, client, capsys, arguments, message):
    assert cli.main(["index", str(folder), *arguments]) == 2
    assert message in capsys.readouterr().err and client.asked == {}
