"""Metrics tables, files and plots."""

from __future__ import annotations

import csv
import json
import math
import re
import struct
from pathlib import Path

import pytest

from veilfl.errors import StorageError
from veilfl.reporting import (
    RoundMetrics,
    format_round_row,
    format_round_table_header,
    plot_metrics,
    write_metrics,
)

_ROWS = [
    RoundMetrics(1, 3, 0.9, 0.5, 0.81, 2.0),
    RoundMetrics(2, 3, 0.4, None, None, 2.5, epsilon=1.25, accounting="rdp", delta=1e-5),
    RoundMetrics(
        3,
        2,
        None,
        0.25,
        0.9876,
        12.25,
        epsilon=1.5,
        epsilon_coordinator=7.5,
        accounting="pld",
        excluded=("mallory", "trudy"),
        federated_loss=0.375,
        federated_accuracy=0.875,
        federated_examples=480.0,
    ),
]


def _optional(text: str) -> float | None:
    return None if text == "" else float(text)


def test_the_header_names_the_columns_over_a_rule() -> None:
    header, rule = format_round_table_header().splitlines()

    columns = [
        "round",
        "clients",
        "train loss",
        "test loss",
        "test acc",
        "fed acc",
        "eps public",
        "eps coord",
        "acct",
        "seconds",
    ]
    assert re.split(r"\s{2,}", header.strip()) == columns
    assert set(rule) == {"-"} and len(rule) == len(header)


def test_a_full_row_formats_each_column() -> None:
    row = format_round_row(
        RoundMetrics(
            7,
            10,
            0.123456,
            0.5,
            0.81,
            2.04,
            epsilon=1.2345,
            epsilon_coordinator=9.87654,
            accounting="pld",
            federated_accuracy=0.625,
        )
    )

    assert row.split() == [
        "7",
        "10",
        "0.1235",
        "0.5000",
        "81.00%",
        "62.50%",
        "1.234",
        "9.877",
        "pld",
        "2.0",
    ]


def test_central_noise_shows_the_coordinator_as_not_protected() -> None:
    row = format_round_row(RoundMetrics(1, 4, None, None, None, 1.0, epsilon=0.5, accounting="rdp"))

    assert row.split()[6:9] == ["0.500", "none", "rdp"]


def test_missing_values_show_as_dashes_and_rows_line_up_with_the_header() -> None:
    header = format_round_table_header().splitlines()[0]
    row = format_round_row(RoundMetrics(12, 3, None, None, None, 2.5))

    assert row.split() == ["12", "3", "-", "-", "-", "-", "-", "-", "-", "2.5"]
    assert len(row) == len(header)
    for column in ("clients", "seconds"):  # right-aligned under the column name
        end = header.index(column) + len(column)
        assert row[end - 1] != " " and (end == len(row) or row[end] == " ")


def test_metrics_files_round_trip(tmp_path: Path) -> None:
    json_path, csv_path = write_metrics(tmp_path / "run", _ROWS)

    assert (json_path.name, csv_path.name) == ("metrics.json", "metrics.csv")
    assert [RoundMetrics(**row) for row in json.loads(json_path.read_text())] == _ROWS
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    from_csv = [
        RoundMetrics(
            round_id=int(r["round_id"]),
            num_clients=int(r["num_clients"]),
            train_loss=_optional(r["train_loss"]),
            test_loss=_optional(r["test_loss"]),
            test_accuracy=_optional(r["test_accuracy"]),
            seconds=float(r["seconds"]),
            epsilon=_optional(r["epsilon"]),
            epsilon_coordinator=_optional(r["epsilon_coordinator"]),
            accounting=r["accounting"] or None,
            delta=_optional(r["delta"]),
            excluded=tuple(r["excluded"].split()),
            federated_loss=_optional(r["federated_loss"]),
            federated_accuracy=_optional(r["federated_accuracy"]),
            federated_examples=_optional(r["federated_examples"]),
        )
        for r in rows
    ]
    assert from_csv == _ROWS


def test_rewriting_the_files_replaces_them_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_metrics(tmp_path, _ROWS)
    write_metrics(tmp_path, _ROWS[:1])

    assert len(json.loads((tmp_path / "metrics.json").read_text())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.json"]


def test_non_finite_values_are_written_as_json_null(tmp_path: Path) -> None:
    json_path, _ = write_metrics(tmp_path, [RoundMetrics(1, 3, math.nan, math.inf, 0.5, 1.0)])

    text = json_path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)[0]["train_loss"] is None


def test_an_unwritable_run_folder_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")

    with pytest.raises(StorageError, match="could not be written"):
        write_metrics(tmp_path / "file" / "run", _ROWS)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(
    ("metrics", "panels"),
    [(_ROWS, 3), (_ROWS[:1], 2), ([], 2), ([RoundMetrics(1, 2, None, None, None, 1.0)], 2)],
)
def test_the_plot_is_a_png_with_a_panel_for_epsilon_only_when_there_is_one(
    tmp_path: Path, metrics: list[RoundMetrics], panels: int
) -> None:
    path = plot_metrics(tmp_path / "run", metrics, title="test run")

    width, height = _png_size(path.read_bytes())
    assert path == tmp_path / "run" / "metrics.png"
    assert path.stat().st_size > 1000
    assert height > 0
    assert width == pytest.approx(panels * 4.2 * 110, abs=2)
