"""A run's durable state in SQLite: settings, clients, completed rounds.

WAL mode with ``synchronous=FULL``: a committed round survives a crash of the
process or the machine. A round is recorded in one transaction, with its
participants, so it is either wholly there or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veilfl.errors import StorageError

__all__ = ["ClientRecord", "ParticipantRecord", "RoundRecord", "RunStore"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS run (
    run_id TEXT PRIMARY KEY, created_at REAL NOT NULL, config_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, name TEXT NOT NULL, joined_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    round_id INTEGER PRIMARY KEY,
    model_version_before INTEGER NOT NULL,
    model_version_after INTEGER NOT NULL,
    opened_at REAL NOT NULL,
    closed_at REAL NOT NULL,
    num_participants INTEGER NOT NULL,
    train_loss REAL,
    test_loss REAL,
    test_accuracy REAL,
    seconds REAL NOT NULL,
    extra_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS round_participants (
    round_id INTEGER NOT NULL REFERENCES rounds(round_id),
    client_id TEXT NOT NULL,
    num_samples INTEGER,
    loss REAL,
    PRIMARY KEY (round_id, client_id)
);
"""


@dataclass(frozen=True)
class ClientRecord:
    """A client that joined the run."""

    client_id: str
    name: str
    joined_at: float


@dataclass(frozen=True)
class RoundRecord:
    """A completed round."""

    round_id: int
    model_version_before: int
    model_version_after: int
    opened_at: float
    closed_at: float
    num_participants: int
    train_loss: float | None
    test_loss: float | None
    test_accuracy: float | None
    seconds: float
    extra_json: str = "{}"


@dataclass(frozen=True)
class ParticipantRecord:
    """One participant of a completed round (sample count and loss hidden under secure
    aggregation)."""

    round_id: int
    client_id: str
    num_samples: int | None
    loss: float | None


class RunStore:
    """The run's SQLite database. Safe to call from one thread at a time, any thread.

    Raises:
        StorageError: if the database cannot be opened or is from another version.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise StorageError(
                    f"{path} has run-state schema {row[0]}; this veilfl reads {SCHEMA_VERSION}."
                )
        except sqlite3.Error as exc:
            raise StorageError(f"The run state {path} cannot be opened: {exc}.") from exc

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def journal_mode(self) -> str:
        """SQLite's journal mode (``wal``)."""
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def initialise(
        self, run_id: str, config: Mapping[str, Any], *, created_at: float = 0.0
    ) -> None:
        """Record the run's id and settings (idempotent for the same run id).

        Raises:
            StorageError: if the database already holds another run.
        """
        existing = self.run_id()
        if existing is not None and existing != run_id:
            raise StorageError(f"{self._path} already holds run {existing}, not {run_id}.")
        if existing is None:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO run VALUES (?, ?, ?)",
                    (run_id, created_at, json.dumps(dict(config), sort_keys=True)),
                )

    def run_id(self) -> str | None:
        """The run's id, or None for an empty database."""
        with self._lock:
            row = self._db.execute("SELECT run_id FROM run").fetchone()
        return None if row is None else str(row[0])

    def config(self) -> dict[str, Any]:
        """The run's settings."""
        with self._lock:
            row = self._db.execute("SELECT config_json FROM run").fetchone()
        if row is None:
            raise StorageError(f"{self._path} holds no run yet.")
        return dict(json.loads(row[0]))

    def add_client(self, client_id: str, name: str, joined_at: float) -> None:
        """Record a joined client (idempotent)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO clients VALUES (?, ?, ?)", (client_id, name, joined_at)
            )

    def clients(self) -> list[ClientRecord]:
        """Every joined client, in join order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT client_id, name, joined_at FROM clients ORDER BY joined_at, client_id"
            ).fetchall()
        return [ClientRecord(*row) for row in rows]

    def record_round(self, record: RoundRecord, participants: Sequence[ParticipantRecord]) -> None:
        """Record a completed round and its participants in one transaction.

        Raises:
            StorageError: if the round is already recorded or the write fails.
        """
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.round_id,
                        record.model_version_before,
                        record.model_version_after,
                        record.opened_at,
                        record.closed_at,
                        record.num_participants,
                        record.train_loss,
                        record.test_loss,
                        record.test_accuracy,
                        record.seconds,
                        record.extra_json,
                    ),
                )
                db.executemany(
                    "INSERT INTO round_participants VALUES (?, ?, ?, ?)",
                    [(p.round_id, p.client_id, p.num_samples, p.loss) for p in participants],
                )
        except sqlite3.Error as exc:
            raise StorageError(f"Round {record.round_id} could not be recorded: {exc}.") from exc

    def completed_rounds(self) -> list[RoundRecord]:
        """Every completed round, in order."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM rounds ORDER BY round_id").fetchall()
        return [RoundRecord(*row) for row in rows]

    def last_completed_round(self) -> RoundRecord | None:
        """The latest completed round, if any."""
        rounds = self.completed_rounds()
        return rounds[-1] if rounds else None

    def participants(self, round_id: int) -> list[ParticipantRecord]:
        """The participants of a completed round."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM round_participants WHERE round_id = ? ORDER BY client_id",
                (round_id,),
            ).fetchall()
        return [ParticipantRecord(*row) for row in rows]
