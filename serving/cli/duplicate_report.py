"""The duplicate report of `dnsvr index --on-duplicate report|skip`: which new videos have near-duplicates
already indexed, with their scores, and whether each new video was stored (skip leaves it out).

    report_format(path) -> "csv" | "json" (by the suffix; ValueError otherwise, before anything is indexed)
    print_report(results)            a table: new video, stored or skipped, existing duplicate, score
    write_report(results, path)      CSV: one row per (new video, duplicate): video_id, stored, duplicate_id, score
                                     JSON: [{"video_id", "stored", "duplicates": [{"video_id", "score"}]}]

`results` are the `IndexResult`s of the indexed videos; only those with duplicates are reported.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from dnsvr.client.results import IndexResult
from dnsvr.training.files import atomic_write_text

FORMATS = {".csv": "csv", ".json": "json"}
CSV_COLUMNS = ("video_id", "stored", "duplicate_id", "score")


def report_format(path: str | Path) -> str:
    """The report format of `path` by its suffix (.csv or .json); ValueError naming the choices otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"duplicate report {str(path)!r}: the file name must end in {' or '.join(FORMATS)}")
    return FORMATS[suffix]


def with_duplicates(results: Sequence[IndexResult]) -> list[IndexResult]:
    """The results that found near-duplicates, in their order."""
    return [result for result in results if result.duplicates]


def print_report(results: Sequence[IndexResult]) -> None:
    """The near-duplicates of each new video as a table (one row per pair, the new video's cells once)."""
    from rich.console import Console
    from rich.table import Table

    found = with_duplicates(results)
    console = Console()
    if not found:
        console.print("duplicates: none found")
        return
    table = Table(title=f"near-duplicates of {len(found)} new videos")
    for column in ("new video", "stored", "existing duplicate", "score"):
        table.add_column(column, justify="right" if column == "score" else "left")
    for result in found:
        for position, duplicate in enumerate(result.duplicates):
            first = position == 0
            table.add_row(result.video_id if first else "", ("yes" if result.stored else "skipped") if first else "",
                          duplicate.video_id, f"{duplicate.score:.4f}")
    console.print(table)


def report_text(results: Sequence[IndexResult], format: str) -> str:
    """The report of `results` as CSV or JSON text (module docstring)."""
    found = with_duplicates(results)
    if format == "json":
        return json.dumps([{"video_id": result.video_id, "stored": result.stored,
                            "duplicates": [{"video_id": d.video_id, "score": d.score} for d in result.duplicates]}
                           for result in found], indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for result in found:
        for duplicate in result.duplicates:
            writer.writerow((result.video_id, result.stored, duplicate.video_id, f"{duplicate.score:.6f}"))
    return buffer.getvalue()


def write_report(results: Sequence[IndexResult], path: str | Path) -> Path:
    """Write the report to `path` (atomically), in the format of its suffix."""
    return atomic_write_text(path, report_text(results, report_format(path)))
