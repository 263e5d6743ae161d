"""Metrics tables, files and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from veilfl.protocol.metrics import RoundMetrics
from veilfl.reporting import (
    format_round_row,
    format_round_table_header,
    plot_metrics,
    write_metrics,
)

_ROWS = [
    RoundMetrics(1, 3, 0.9, 0.5, 0.81, 2.0),
    RoundMetrics(2, 3, 0.4, None, None, 2.5, epsilon=1.25),
]


def test_table_rows_line_up_with_the_header_and_show_missing_values() -> None:
    header = format_round_table_header().splitlines()[0]
    row = format_round_row(_ROWS[1])
    assert len(row) == len(header)
    assert "-" in row.split() and "1.250" in row
    assert "81.00%" in format_round_row(_ROWS[0])


def test_metrics_files_round_trip(tmp_path: Path) -> None:
    json_path, csv_path = write_metrics(tmp_path, _ROWS)
    assert [RoundMetrics(**row) for row in json.loads(json_path.read_text())] == _ROWS
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["round_id"]) for r in rows] == [1, 2]


def test_plot_is_a_png(tmp_path: Path) -> None:
    path = plot_metrics(tmp_path, _ROWS, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
