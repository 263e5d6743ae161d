"""A run's durable state in SQLite: settings, clients, completed rounds and, under DP,
the privacy state after each of them.

A coordinator writes here as it goes and reads it back after a restart to resume after
the last completed round. The database runs in WAL mode with ``synchronous=FULL``, so a
committed round survives a crash of the process or of the machine, and a round is
recorded with its participants in one transaction: after a crash it is either wholly
there or not there at all.

Schema (version :data:`SCHEMA_VERSION`; the ``schema_version`` table holds it)::

    run                 one row: run_id, created_at, config_json
    clients             client_id, name, joined_at, public_key, token_digest (unique)
    rounds              round_id, model_version_before, model_version_after, opened_at,
                        closed_at, status, num_participants, train_loss, test_loss,
                        test_accuracy, seconds, extra_json
    round_participants  round_id -> rounds, client_id, num_samples, loss
    strategy_states     round_id -> rounds, state (the server optimiser's state after
                        that round; only the latest round's is kept)
    round_privacy       round_id -> rounds, state_json (under DP: the ledger, the
                        clipping norm and the sampling attempts after that round)

Times are seconds since the epoch (floats). Version 1 lacked ``rounds.status``,
version 2 the clients' ``public_key`` and ``token_digest``, version 3 the
``strategy_states`` and ``round_privacy`` tables and version 4 one of them; older
databases are migrated when opened.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from veilfl.errors import StorageError

__all__ = [
    "ROUND_COMPLETED",
    "SCHEMA_VERSION",
    "ClientRecord",
    "ParticipantRecord",
    "RoundRecord",
    "RunStore",
]

SCHEMA_VERSION = 5
"""The schema this module writes; older versions are migrated on open."""

ROUND_COMPLETED = "completed"
"""The status of a round whose new model was checkpointed."""

_STRATEGY_STATES = """CREATE TABLE strategy_states (
    round_id INTEGER PRIMARY KEY REFERENCES rounds(round_id),
    state BLOB NOT NULL
)"""

_ROUND_PRIVACY = """CREATE TABLE round_privacy (
    round_id INTEGER PRIMARY KEY REFERENCES rounds(round_id),
    state_json TEXT NOT NULL
)"""

_TABLES = (
    """CREATE TABLE schema_version (
        only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE run (
        run_id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        config_json TEXT NOT NULL
    )""",
    """CREATE TABLE clients (
        client_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        joined_at REAL NOT NULL,
        public_key TEXT,
        token_digest TEXT
    )""",
    "CREATE UNIQUE INDEX clients_by_token ON clients (token_digest)",
    """CREATE TABLE rounds (
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
        extra_json TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'completed'
    )""",
    """CREATE TABLE round_participants (
        round_id INTEGER NOT NULL REFERENCES rounds(round_id),
        client_id TEXT NOT NULL,
        num_samples INTEGER,
        loss REAL,
        PRIMARY KEY (round_id, client_id)
    )""",
    _STRATEGY_STATES,
    _ROUND_PRIVACY,
)

_ROUND_COLUMNS = (
    "round_id, model_version_before, model_version_after, opened_at, closed_at, "
    "num_participants, train_loss, test_loss, test_accuracy, seconds, extra_json, status"
)


@dataclass(frozen=True)
class ClientRecord:
    """A client that joined the run.

    Attributes:
        client_id: The id the coordinator gave it.
        name: The name it announced.
        joined_at: When it first joined (seconds since the epoch).
        public_key: Its Ed25519 public key (URL-safe base64), if it enrolled with one.
        token_digest: Digest of the one-time token it enrolled with, if any.
    """

    client_id: str
    name: str
    joined_at: float
    public_key: str | None = None
    token_digest: str | None = None


@dataclass(frozen=True)
class RoundRecord:
    """A completed round.

    Attributes:
        round_id: The round (or buffer) number, from 1.
        model_version_before: The model version clients trained on.
        model_version_after: The model version the round produced.
        opened_at: When the round opened (seconds since the epoch).
        closed_at: When its new model was ready.
        num_participants: Clients whose updates were aggregated.
        train_loss: Sample-weighted mean local training loss, None when not reported.
        test_loss: Server-side test loss of the new model, None if not evaluated.
        test_accuracy: Server-side test accuracy in [0, 1], None if not evaluated.
        seconds: Wall time of the round.
        extra_json: A JSON object of further metrics (``{"epsilon": 1.2}``).
        status: :data:`ROUND_COMPLETED`.

    Raises:
        ValueError: if ``extra_json`` is not a JSON object.
    """

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
    status: str = ROUND_COMPLETED

    def __post_init__(self) -> None:
        self.extra()

    def extra(self) -> dict[str, object]:
        """The further metrics, decoded from :attr:`extra_json`."""
        try:
            extra = json.loads(self.extra_json)
        except ValueError:
            extra = None
        if not isinstance(extra, dict):
            raise ValueError(f"Round {self.round_id}'s extra_json must be a JSON object.")
        return extra


@dataclass(frozen=True)
class ParticipantRecord:
    """One participant of a completed round.

    Attributes:
        round_id: The round.
        client_id: The client.
        num_samples: Its local sample count (None under secure aggregation, where the
            coordinator does not see it).
        loss: Its mean local training loss (None where not reported).
    """

    round_id: int
    client_id: str
    num_samples: int | None
    loss: float | None


class RunStore:
    """The run's SQLite database, opened on construction.

    Safe to use from any thread, one call at a time (calls are serialised by a lock).
    Usable as a context manager that closes the store on exit.

    Args:
        path: The database file; created if missing (its folder must exist).

    Raises:
        StorageError: if the database cannot be opened, is not a run store, cannot use
            WAL mode, or was written by a newer veilfl.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._db = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None, timeout=10.0
            )
        except sqlite3.Error as exc:
            raise StorageError(f"The run state {path} cannot be opened: {exc}.") from exc
        try:
            self._configure()
            self._migrate()
        except BaseException:
            self._db.close()
            self._closed = True
            raise

    def _configure(self) -> None:
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StorageError(
                f"The run state {self._path} cannot be opened ({exc}); "
                "it may not be a veilfl run database."
            ) from exc
        if str(mode).lower() != "wal":
            raise StorageError(
                f"The run state {self._path} cannot use WAL mode (SQLite chose {mode!r}); "
                "put the run folder on a local disk."
            )

    def _migrate(self) -> None:
        with self._transaction("open") as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if "schema_version" not in tables:
                if tables:
                    raise StorageError(
                        f"{self._path} holds tables but no schema version; "
                        "it is not a veilfl run database."
                    )
                for statement in _TABLES:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version VALUES (1, ?)", (SCHEMA_VERSION,))
                return
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = None if row is None else row[0]
            if version == 1:
                db.execute("ALTER TABLE rounds ADD COLUMN status TEXT NOT NULL DEFAULT 'completed'")
                version = 2
            if version == 2:
                db.execute("ALTER TABLE clients ADD COLUMN public_key TEXT")
                db.execute("ALTER TABLE clients ADD COLUMN token_digest TEXT")
                db.execute("CREATE UNIQUE INDEX clients_by_token ON clients (token_digest)")
                version = 3
            if version == 3:
                version = 4
            if version == 4:
                for name, statement in (
                    ("strategy_states", _STRATEGY_STATES),
                    ("round_privacy", _ROUND_PRIVACY),
                ):
                    if name not in tables:
                        db.execute(statement)
                db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            elif version != SCHEMA_VERSION:
                raise StorageError(
                    f"{self._path} has run-state schema {version}; this veilfl reads "
                    f"schemas up to {SCHEMA_VERSION}. Upgrade veilfl to resume this run."
                )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (a second call does nothing)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open(action)
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StorageError(f"Could not {action} in {self._path}: {exc}.") from exc

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block finishes, else rolled back."""
        with self._lock:
            self._check_open(action)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StorageError(f"Could not {action} in {self._path}: {exc}.") from exc

    def _check_open(self, action: str) -> None:
        if self._closed:
            raise StorageError(f"Cannot {action}, as the run store has been closed.")

    def journal_mode(self) -> str:
        """SQLite's journal mode (``"wal"``)."""
        with self._read("read the journal mode") as db:
            return str(db.execute("PRAGMA journal_mode").fetchone()[0])

    def initialise(
        self, run_id: str, config: Mapping[str, object], *, created_at: float | None = None
    ) -> None:
        """Record the run's id and settings; a no-op if this run is already recorded.

        On a repeat call with the same ``run_id`` the stored settings are kept; compare
        them with :meth:`config` to refuse a resume with other settings.

        Args:
            run_id: The run's id.
            config: The run's settings, JSON-serialisable.
            created_at: When the run was created; now if None.

        Raises:
            StorageError: if the database holds another run, or ``config`` is not
                JSON-serialisable.
        """
        try:
            config_json = json.dumps(dict(config), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise StorageError(f"The settings of run {run_id} are not JSON: {exc}.") from exc
        with self._transaction("record the run") as db:
            row = db.execute("SELECT run_id FROM run").fetchone()
            if row is not None and row[0] != run_id:
                raise StorageError(
                    f"{self._path} already holds run {row[0]}, not {run_id}; "
                    "use another run folder."
                )
            if row is None:
                db.execute(
                    "INSERT INTO run (run_id, created_at, config_json) VALUES (?, ?, ?)",
                    (run_id, time.time() if created_at is None else created_at, config_json),
                )

    def run_id(self) -> str | None:
        """The run's id, or None if :meth:`initialise` was never called."""
        with self._read("read the run id") as db:
            row = db.execute("SELECT run_id FROM run").fetchone()
        return None if row is None else str(row[0])

    def created_at(self) -> float | None:
        """When the run was created, or None if :meth:`initialise` was never called."""
        with self._read("read the run's creation time") as db:
            row = db.execute("SELECT created_at FROM run").fetchone()
        return None if row is None else float(row[0])

    def config(self) -> dict[str, object]:
        """The run's settings, as given to :meth:`initialise`.

        Raises:
            StorageError: if no run is recorded yet.
        """
        with self._read("read the run settings") as db:
            row = db.execute("SELECT config_json FROM run").fetchone()
        if row is None:
            raise StorageError(f"{self._path} holds no run yet; call initialise first.")
        config: dict[str, object] = json.loads(row[0])
        return config

    def add_client(
        self,
        client_id: str,
        name: str,
        joined_at: float,
        *,
        public_key: str | None = None,
        token_digest: str | None = None,
    ) -> None:
        """Record a joined client; a no-op if it is already recorded.

        Raises:
            StorageError: if ``token_digest`` was already spent by another client.
        """
        with self._transaction(f"record client {client_id}") as db:
            db.execute(
                "INSERT INTO clients (client_id, name, joined_at, public_key, token_digest) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (client_id) DO NOTHING",
                (client_id, name, joined_at, public_key, token_digest or None),
            )

    def clients(self) -> list[ClientRecord]:
        """Every joined client, in join order."""
        with self._read("read the clients") as db:
            rows = db.execute(
                "SELECT client_id, name, joined_at, public_key, token_digest FROM clients "
                "ORDER BY joined_at, client_id"
            ).fetchall()
        return [
            ClientRecord(str(c), str(n), float(j), None if k is None else str(k), t)
            for c, n, j, k, t in rows
        ]

    def record_round(
        self,
        record: RoundRecord,
        participants: Sequence[ParticipantRecord],
        *,
        strategy_state: bytes | None = None,
        privacy_state: Mapping[str, object] | None = None,
    ) -> None:
        """Record a completed round, its participants, the server optimiser's state
        and (under DP) the privacy state after it, in one transaction.

        If anything fails part-way (including an exception from iterating
        ``participants``), nothing of the round is recorded. ``strategy_state`` (the
        server optimiser's state after this round) is stored with it, in the same
        transaction, and replaces the state of earlier rounds.

        Raises:
            StorageError: if a participant names another round, the round is already
                recorded, a client appears twice, the privacy state is not JSON, or
                the write fails.
        """
        state_json = None
        if privacy_state is not None:
            try:
                state_json = json.dumps(dict(privacy_state), sort_keys=True, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise StorageError(
                    f"The privacy state of round {record.round_id} is not JSON: {exc}."
                ) from exc
        with self._transaction(f"record round {record.round_id}") as db:
            db.execute(
                f"INSERT INTO rounds ({_ROUND_COLUMNS}) VALUES ({', '.join('?' * 12)})",
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
                    record.status,
                ),
            )
            if strategy_state is not None:
                db.execute(
                    "INSERT INTO strategy_states (round_id, state) VALUES (?, ?)",
                    (record.round_id, strategy_state),
                )
                db.execute("DELETE FROM strategy_states WHERE round_id < ?", (record.round_id,))
            for participant in participants:
                if participant.round_id != record.round_id:
                    raise StorageError(
                        f"Participant {participant.client_id} belongs to round "
                        f"{participant.round_id}, not to round {record.round_id}."
                    )
                db.execute(
                    "INSERT INTO round_participants (round_id, client_id, num_samples, loss) "
                    "VALUES (?, ?, ?, ?)",
                    (
                        record.round_id,
                        participant.client_id,
                        participant.num_samples,
                        participant.loss,
                    ),
                )
            if state_json is not None:
                db.execute(
                    "INSERT INTO round_privacy (round_id, state_json) VALUES (?, ?)",
                    (record.round_id, state_json),
                )

    def record_evaluation(
        self, round_id: int, *, test_loss: float | None, test_accuracy: float | None
    ) -> None:
        """Add the server-side evaluation of a recorded round's model.

        Raises:
            StorageError: if the round is not recorded or the write fails.
        """
        with self._transaction(f"record the evaluation of round {round_id}") as db:
            updated = db.execute(
                "UPDATE rounds SET test_loss = ?, test_accuracy = ? WHERE round_id = ?",
                (test_loss, test_accuracy, round_id),
            ).rowcount
            if updated != 1:
                raise StorageError(f"Round {round_id} is not recorded; it cannot be evaluated.")

    def completed_rounds(self) -> list[RoundRecord]:
        """Every completed round, by round id."""
        with self._read("read the completed rounds") as db:
            rows = db.execute(
                f"SELECT {_ROUND_COLUMNS} FROM rounds WHERE status = ? ORDER BY round_id",
                (ROUND_COMPLETED,),
            ).fetchall()
        return [_round_record(row) for row in rows]

    def last_completed_round(self) -> RoundRecord | None:
        """The completed round with the highest id, or None before the first."""
        with self._read("read the last completed round") as db:
            row = db.execute(
                f"SELECT {_ROUND_COLUMNS} FROM rounds WHERE status = ? "
                "ORDER BY round_id DESC LIMIT 1",
                (ROUND_COMPLETED,),
            ).fetchone()
        return None if row is None else _round_record(row)

    def strategy_state(self, round_id: int) -> bytes | None:
        """The server optimiser's state recorded with ``round_id``, or None (a stateless
        strategy, or a round whose state a later round replaced)."""
        with self._read(f"read the strategy state of round {round_id}") as db:
            row = db.execute(
                "SELECT state FROM strategy_states WHERE round_id = ?", (round_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def participants(self, round_id: int) -> list[ParticipantRecord]:
        """The participants of a recorded round, by client id."""
        with self._read(f"read the participants of round {round_id}") as db:
            rows = db.execute(
                "SELECT round_id, client_id, num_samples, loss FROM round_participants "
                "WHERE round_id = ? ORDER BY client_id",
                (round_id,),
            ).fetchall()
        return [ParticipantRecord(int(r), str(c), n, loss) for r, c, n, loss in rows]

    def privacy_state(self, round_id: int) -> dict[str, object] | None:
        """The privacy state recorded with a round, or None (no DP, or a round recorded
        before schema 4)."""
        with self._read(f"read the privacy state of round {round_id}") as db:
            row = db.execute(
                "SELECT state_json FROM round_privacy WHERE round_id = ?", (round_id,)
            ).fetchone()
        if row is None:
            return None
        state: dict[str, object] = json.loads(row[0])
        return state

    def participations(self) -> dict[str, int]:
        """How many completed rounds each client took part in (clients that took part
        in none are absent)."""
        with self._read("count the clients' participations") as db:
            rows = db.execute(
                "SELECT p.client_id, COUNT(*) FROM round_participants p "
                "JOIN rounds r ON r.round_id = p.round_id WHERE r.status = ? "
                "GROUP BY p.client_id",
                (ROUND_COMPLETED,),
            ).fetchall()
        return {str(client): int(count) for client, count in rows}


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _round_record(row: tuple[Any, ...]) -> RoundRecord:
    (
        round_id,
        before,
        after,
        opened_at,
        closed_at,
        num_participants,
        train_loss,
        test_loss,
        test_accuracy,
        seconds,
        extra_json,
        status,
    ) = row
    return RoundRecord(
        round_id=int(round_id),
        model_version_before=int(before),
        model_version_after=int(after),
        opened_at=float(opened_at),
        closed_at=float(closed_at),
        num_participants=int(num_participants),
        train_loss=_optional_float(train_loss),
        test_loss=_optional_float(test_loss),
        test_accuracy=_optional_float(test_accuracy),
        seconds=float(seconds),
        extra_json=str(extra_json),
        status=str(status),
    )
