"""Tables as data sources: CSV (read with the standard library) and Parquet (with
pyarrow, the ``tables`` extra). One row is one example; every column but the label
column is a float feature, and the label column holds integer class labels
0..K-1, encoded alike on every client."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError, DataError
from veilfl.ml.data_sources.settings import DEFAULT_EVAL_FRACTION
from veilfl.ml.datasets import ArrayDataset

__all__ = ["CsvSource", "ParquetSource", "read_csv_rows"]

DEFAULT_LABEL_COLUMN = "label"


@dataclass(frozen=True)
class CsvSource:
    """A CSV (or, with a ``.tsv`` name, tab-separated) table.

    The first row is a header when any of its cells is not a number.

    Attributes:
        path: The file.
        label_column: The label column's name (or 0-based number, for a file without a
            header); None: ``label``, else the last column.
        default_eval_fraction: The share a client holds out for evaluation by default.
    """

    path: Path
    label_column: str | None = None
    default_eval_fraction: float = DEFAULT_EVAL_FRACTION

    @property
    def description(self) -> str:
        return str(self.path)

    def load(self) -> ArrayDataset:
        header, rows = read_csv_rows(self.path)
        names = header if header is not None else [str(i) for i in range(len(rows[0]))]
        label = _label_index(names, self.label_column, self.path, has_header=header is not None)
        try:
            values = np.array(rows, dtype=np.float64)
        except ValueError:
            bad = next(
                (n, cell)
                for n, row in enumerate(rows, start=2 if header else 1)
                for cell in row
                if not _is_number(cell)
            )
            raise DataError(
                f"{self.path}, line {bad[0]}: {bad[1]!r} is not a number; every column must "
                "hold numbers (encode categories as numbers first)."
            ) from None
        return _as_dataset(values, label, names, self.path)


def read_csv_rows(path: Path) -> tuple[list[str] | None, list[list[str]]]:
    """A CSV file's header (None when its first row is all numbers) and rows.

    Raises:
        DataError: if the file cannot be read, is empty, or its rows differ in length.
    """
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle, delimiter=delimiter) if row]
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc.strerror or exc}.") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a UTF-8 CSV file ({exc}).") from None
    header: list[str] | None = None
    if rows and not all(_is_number(cell) for cell in rows[0]):
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
    if not rows:
        raise DataError(f"{path} holds no rows of data; give a table with at least one row.")
    width = len(header) if header is not None else len(rows[0])
    for number, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise DataError(
                f"{path}, line {number}: {len(row)} columns where the table has {width}."
            )
    if width < 2:
        raise DataError(f"{path} has {width} column; a table needs features and a label.")
    return header, rows


@dataclass(frozen=True)
class ParquetSource:
    """A Parquet table, read with pyarrow (``pip install '.[tables]'`` in the checkout).

    Attributes:
        path: The file.
        label_column: The label column's name; None: ``label``, else the last column.
        default_eval_fraction: The share a client holds out for evaluation by default.
    """

    path: Path
    label_column: str | None = None
    default_eval_fraction: float = DEFAULT_EVAL_FRACTION

    @property
    def description(self) -> str:
        return str(self.path)

    def load(self) -> ArrayDataset:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigurationError(
                f"Reading {self.path} needs pyarrow: pip install pyarrow (or the tables "
                "extra of the checkout, pip install '.[tables]')."
            ) from None
        try:
            table = pq.read_table(self.path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path} cannot be read as Parquet: {exc}.") from None
        names = [str(name) for name in table.column_names]
        if len(names) < 2 or table.num_rows == 0:
            raise DataError(
                f"{self.path} has {len(names)} columns and {table.num_rows} rows; a table "
                "needs features, a label and at least one row."
            )
        label = _label_index(names, self.label_column, self.path, has_header=True)
        columns = []
        for name in names:
            column = table.column(name)
            if column.null_count:
                raise DataError(
                    f"{self.path}: column {name!r} has {column.null_count} missing values; "
                    "fill or drop them first."
                )
            try:
                columns.append(np.asarray(column.to_numpy(), dtype=np.float64))
            except (TypeError, ValueError):
                raise DataError(
                    f"{self.path}: column {name!r} is not numeric; encode it as numbers first."
                ) from None
        return _as_dataset(np.stack(columns, axis=1), label, names, self.path)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _label_index(names: Sequence[str], wanted: str | None, path: Path, *, has_header: bool) -> int:
    if wanted is None:
        found = DEFAULT_LABEL_COLUMN in names
        return names.index(DEFAULT_LABEL_COLUMN) if found else len(names) - 1
    if wanted in names:
        return names.index(wanted)
    if not has_header and wanted.isdigit() and int(wanted) < len(names):
        return int(wanted)
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    raise DataError(f"{path} has no column {wanted!r} (--label-column); its columns are {shown}.")


def _as_dataset(
    values: npt.NDArray[np.float64], label: int, names: Sequence[str], path: Path
) -> ArrayDataset:
    if not np.isfinite(values).all():
        raise DataError(f"{path} holds missing or infinite values; fill or drop those rows first.")
    labels = values[:, label]
    if (labels != np.round(labels)).any() or (labels < 0).any():
        raise DataError(
            f"{path}: the label column {names[label]!r} must hold whole numbers 0..K-1 "
            "(the same classes numbered alike on every client); name another with "
            "--label-column."
        )
    features = np.delete(values, label, axis=1).astype(np.float32)
    return ArrayDataset(images=features, labels=labels.astype(np.int64))
