"""`dnsvr search` prints each re-ranked hit's copied segments (serving/cli/service.py: print_results)."""

from __future__ import annotations

from dnsvr.client import SearchHit, SearchResult, Segment
from dnsvr.serving.cli.service import describe_segment, print_results


def test_describe_segment():
    assert describe_segment(Segment(0.0, 4.0, 10.0, 14.0, 0.93)) == "q 0.0-4.0s ↔ t 10.0-14.0s (0.93)"


def test_the_table_has_a_segments_column_only_when_a_hit_has_segments(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    copy = SearchHit("copy", 0.98, True, 0.9, 0.6, (Segment(0.0, 4.0, 10.0, 14.0, 0.93), Segment(5, 6, 1, 2, 0.5)))
    other = SearchHit("other", 0.5, False, 0.5, None)
    print_results(SearchResult([copy, other], {"total": 1.0}))
    lines = capsys.readouterr().out.splitlines()
    assert "segments" in lines[1]
    row = next(line for line in lines if "copy" in line)
    assert "q 0.0-4.0s ↔ t 10.0-14.0s (0.93); q 5.0-6.0s ↔ t 1.0-2.0s (0.50)" in row
    print_results(SearchResult([other], {"total": 1.0}))
    assert "segments" not in capsys.readouterr().out
