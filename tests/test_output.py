"""The human display's wording (eltmake.output)."""

from __future__ import annotations

from eltmake.output import _fmt_stats


def test_counts_of_one_read_in_the_singular_without_clipping_words() -> None:
    assert _fmt_stats({"records": 1, "output_lines": 1}) == "1 record, 1 output line"
    assert _fmt_stats({"success": 1, "pass": 1, "warn": 1}) == "1 success, 1 pass, 1 warn"
    assert _fmt_stats({"records": 1200, "success": 2}) == "1,200 records, 2 success"
