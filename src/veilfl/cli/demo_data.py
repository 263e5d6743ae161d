"""``veilfl demo --data``: give each demo client a file of its own, as each client of a
real federation has its own.

``--data`` names either a folder of per-client tables (``.csv``, ``.tsv``, ``.parquet``;
client ``i`` reads the ``i``-th, by name) or one CSV table, which the demo splits with
``--partition`` into ``RUN_DIR/data/client-I.csv`` (same header, rows split by label
for the non-IID schemes). Each client process then reads its own file with
``veilfl client --data``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, cast

from veilfl.errors import ConfigurationError
from veilfl.ml.data_sources import CsvSource, DataSettings, read_csv_rows

if TYPE_CHECKING:
    from veilfl.ml.partition import PartitionScheme

__all__ = ["TABLE_SUFFIXES", "demo_client_files"]

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
"""The files a folder of per-client tables is read for."""


def demo_client_files(
    data: str,
    *,
    clients: int,
    run_dir: Path,
    settings: DataSettings,
    scheme: str,
    seed: int = 0,
) -> list[Path]:
    """One data file per demo client, in client order.

    Args:
        data: A folder of per-client tables, or one CSV table to split.
        clients: How many clients.
        run_dir: The demo's run folder (split files go to ``data/`` inside).
        settings: How the table is read (its label column).
        scheme: The partition scheme (``iid``, ``dirichlet``, ``shards``).
        seed: Seeds the split.

    Raises:
        ConfigurationError: for a folder of too few tables, or data of another kind.
        DataError: if the table cannot be read or split.
    """
    path = Path(data).expanduser()
    if path.is_dir():
        tables = sorted(p for p in path.iterdir() if p.suffix.lower() in TABLE_SUFFIXES)
        if len(tables) < clients:
            raise ConfigurationError(
                f"veilfl demo --data {data}: the folder holds {len(tables)} tables "
                f"({', '.join(TABLE_SUFFIXES)}) for {clients} clients; give one per client, "
                "or one CSV table for the demo to split."
            )
        return tables[:clients]
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise ConfigurationError(
            f"veilfl demo --data takes one CSV table (split per client) or a folder of "
            f"per-client tables; got {data}."
        )
    from veilfl.ml.partition import partition

    header, rows = read_csv_rows(path)
    labels = CsvSource(path, label_column=settings.label_column).load().labels
    parts = partition(cast("PartitionScheme", scheme), labels, clients, seed=seed)
    folder = run_dir / "data"
    folder.mkdir(parents=True, exist_ok=True)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    files = []
    for number, part in enumerate(parts):
        target = folder / f"client-{number}{path.suffix.lower()}"
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            if header is not None:
                writer.writerow(header)
            writer.writerows(rows[int(i)] for i in part)
        files.append(target)
    return files
