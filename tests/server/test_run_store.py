"""The run store in SQLite: round trips, resuming, all-or-nothing rounds, WAL mode."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.errors import StorageError
from veilfl.server.run_store import (
    SCHEMA_VERSION,
    ClientRecord,
    ParticipantRecord,
    RoundRecord,
    RunStore,
)


def _round(round_id: int, **changes: object) -> RoundRecord:
    fields: dict[str, object] = {
        "round_id": round_id,
        "model_version_before": round_id - 1,
        "model_version_after": round_id,
        "opened_at": 1.0,
        "closed_at": 2.5,
        "num_participants": 2,
        "train_loss": 0.5,
        "test_loss": None,
        "test_accuracy": 0.9,
        "seconds": 1.5,
        "extra_json": json.dumps({"epsilon": 0.75}),
    }
    fields.update(changes)
    return RoundRecord(**fields)  # type: ignore[arg-type]


def _participants(round_id: int) -> list[ParticipantRecord]:
    return [
        ParticipantRecord(round_id, "a", 10, 0.4),
        ParticipantRecord(round_id, "b", None, None),
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore(tmp_path / "run.sqlite") as opened:
        opened.initialise("run-1", {"rounds": 3, "dp": None})
        yield opened


def test_rounds_clients_and_settings_round_trip(store: RunStore) -> None:
    store.add_client("b", "bob", 2.0)
    store.add_client("a", "alice", 1.0)
    store.add_client("a", "alice again", 9.0)  # idempotent: the first join is kept
    store.record_round(_round(1), _participants(1))
    store.record_round(_round(2, test_loss=0.3, train_loss=None), _participants(2))

    assert store.run_id() == "run-1"
    assert store.config() == {"rounds": 3, "dp": None}
    assert store.clients() == [ClientRecord("a", "alice", 1.0), ClientRecord("b", "bob", 2.0)]
    assert store.completed_rounds() == [_round(1), _round(2, test_loss=0.3, train_loss=None)]
    assert store.last_completed_round() == _round(2, test_loss=0.3, train_loss=None)
    assert store.participants(1) == _participants(1)
    assert _round(1).extra() == {"epsilon": 0.75}


@settings(max_examples=30, deadline=None)
@given(
    round_id=st.integers(1, 2**40),
    losses=st.tuples(*[st.none() | st.floats(allow_nan=False) for _ in range(3)]),
    seconds=st.floats(0, 1e6),
)
def test_any_round_reads_back_equal(
    tmp_path_factory: pytest.TempPathFactory,
    round_id: int,
    losses: tuple[float | None, float | None, float | None],
    seconds: float,
) -> None:
    record = _round(
        round_id,
        train_loss=losses[0],
        test_loss=losses[1],
        test_accuracy=losses[2],
        seconds=seconds,
    )
    with RunStore(tmp_path_factory.mktemp("run") / "run.sqlite") as store:
        store.record_round(record, [])

        assert store.completed_rounds() == [record]


def test_a_reopened_store_resumes_where_it_stopped(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    with RunStore(path) as store:
        store.initialise("run-1", {"rounds": 3}, created_at=123.0)
        store.add_client("a", "alice", 1.0)
        store.record_round(_round(1), _participants(1))

    with RunStore(path) as reopened:
        reopened.initialise("run-1", {"rounds": 99})  # a resume keeps the stored settings

        assert reopened.run_id() == "run-1"
        assert reopened.created_at() == 123.0
        assert reopened.config() == {"rounds": 3}
        assert [c.client_id for c in reopened.clients()] == ["a"]
        assert reopened.last_completed_round() == _round(1)
        assert reopened.participants(1) == _participants(1)


def test_an_empty_store_has_no_run_and_no_rounds(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run.sqlite") as store:
        assert store.run_id() is None
        assert store.created_at() is None
        assert store.last_completed_round() is None
        assert store.completed_rounds() == []
        with pytest.raises(StorageError, match="holds no run yet"):
            store.config()


def test_wal_mode_is_on_and_persists_in_the_file(store: RunStore) -> None:
    store.record_round(_round(1), [])

    assert store.journal_mode() == "wal"
    assert store.path.with_name("run.sqlite-wal").exists()
    other = sqlite3.connect(store.path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        other.close()


class _CrashingParticipants(Sequence[ParticipantRecord]):
    """Participants whose second item blows up, as a crash half-way through would."""

    def __init__(self, round_id: int) -> None:
        self._items = _participants(round_id)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> ParticipantRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ParticipantRecord]: ...

    def __getitem__(self, index: int | slice) -> ParticipantRecord | Sequence[ParticipantRecord]:
        return self._items[index]

    def __iter__(self) -> Iterator[ParticipantRecord]:
        yield self._items[0]
        raise RuntimeError("crashed mid-transaction")


def test_an_exception_mid_transaction_leaves_no_partial_round(store: RunStore) -> None:
    with pytest.raises(RuntimeError, match="crashed mid-transaction"):
        store.record_round(_round(1), _CrashingParticipants(1))

    assert store.completed_rounds() == []
    assert store.participants(1) == []
    store.record_round(_round(1), _participants(1))  # and the store still works
    assert store.participants(1) == _participants(1)


def test_a_process_killed_mid_transaction_leaves_no_partial_round(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    with RunStore(path) as store:
        store.initialise("run-1", {})
        store.record_round(_round(1), _participants(1))
    child = textwrap.dedent(
        f"""
        import os
        from veilfl.server.run_store import ParticipantRecord, RoundRecord, RunStore

        def participants():
            yield ParticipantRecord(2, "a", 10, 0.4)
            os._exit(3)  # the round row is written but not committed

        store = RunStore({str(path)!r})
        record = RoundRecord(2, 1, 2, 1.0, 2.0, 2, 0.5, None, None, 1.0)
        store.record_round(record, participants())
        """
    )

    finished = subprocess.run([sys.executable, "-c", child], timeout=60, check=False)

    assert finished.returncode == 3
    with RunStore(path) as reopened:
        assert [r.round_id for r in reopened.completed_rounds()] == [1]
        assert reopened.participants(2) == []


def test_a_failed_write_is_a_storage_error_and_leaves_no_partial_round(store: RunStore) -> None:
    duplicates = _participants(1) * 2  # violates the primary key mid-transaction

    with pytest.raises(StorageError, match="Could not record round 1"):
        store.record_round(_round(1), duplicates)

    assert store.completed_rounds() == []
    assert store.participants(1) == []


def test_a_round_cannot_be_recorded_twice(store: RunStore) -> None:
    store.record_round(_round(1), [])

    with pytest.raises(StorageError, match="round 1"):
        store.record_round(_round(1, seconds=9.0), [])
    assert store.completed_rounds() == [_round(1)]


def test_participants_of_another_round_are_refused(store: RunStore) -> None:
    with pytest.raises(StorageError, match="belongs to round 2, not to round 1"):
        store.record_round(_round(1), _participants(2))

    assert store.completed_rounds() == []


def test_a_folder_holding_another_run_is_refused(store: RunStore) -> None:
    store.initialise("run-1", {})  # idempotent

    with pytest.raises(StorageError, match="already holds run run-1, not run-2"):
        store.initialise("run-2", {})


def test_settings_that_are_not_json_are_refused(tmp_path: Path) -> None:
    with RunStore(tmp_path / "run.sqlite") as store:
        with pytest.raises(StorageError, match="not JSON"):
            store.initialise("run-1", {"path": Path("x")})
        assert store.run_id() is None


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run.sqlite")
    store.close()
    store.close()  # harmless

    with pytest.raises(StorageError, match="has been closed"):
        store.run_id()


def test_the_store_can_be_used_from_another_thread(store: RunStore) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            store.record_round(_round(1), _participants(1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()

    assert errors == []
    assert store.last_completed_round() == _round(1)


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE run (run_id TEXT PRIMARY KEY, created_at REAL NOT NULL,
                          config_json TEXT NOT NULL);
        CREATE TABLE clients (client_id TEXT PRIMARY KEY, name TEXT NOT NULL,
                              joined_at REAL NOT NULL);
        CREATE TABLE rounds (round_id INTEGER PRIMARY KEY,
            model_version_before INTEGER NOT NULL, model_version_after INTEGER NOT NULL,
            opened_at REAL NOT NULL, closed_at REAL NOT NULL,
            num_participants INTEGER NOT NULL, train_loss REAL, test_loss REAL,
            test_accuracy REAL, seconds REAL NOT NULL, extra_json TEXT NOT NULL DEFAULT '{}');
        CREATE TABLE round_participants (round_id INTEGER NOT NULL REFERENCES rounds(round_id),
            client_id TEXT NOT NULL, num_samples INTEGER, loss REAL,
            PRIMARY KEY (round_id, client_id));
        INSERT INTO run VALUES ('old-run', 0.0, '{}');
        INSERT INTO rounds VALUES (1, 0, 1, 1.0, 2.5, 2, 0.5, NULL, 0.9, 1.5, '{"epsilon": 0.75}');
        """
    )
    old.close()

    with RunStore(path) as store:
        assert store.run_id() == "old-run"
        assert store.completed_rounds() == [_round(1)]
        # Version 3 columns exist after the migration: enrollments can be recorded.
        store.add_client("c", "carol", 3.0, public_key="KEY", token_digest="T")
        assert store.clients() == [ClientRecord("c", "carol", 3.0, "KEY", "T")]
        # And the version 4 table: a server optimiser's state is kept with its round.
        store.record_round(_round(2), [], strategy_state=b"state of round 2")
        assert store.strategy_state(2) == b"state of round 2"
        assert store.strategy_state(1) is None


def test_a_rounds_strategy_state_is_stored_with_it_and_replaces_older_ones(
    store: RunStore,
) -> None:
    store.record_round(_round(1), _participants(1), strategy_state=b"\x00one")
    store.record_round(_round(2), _participants(2), strategy_state=b"\x00two")
    store.record_round(_round(3), _participants(3))

    assert store.strategy_state(2) == b"\x00two"
    assert store.strategy_state(1) is None  # replaced by round 2's
    assert store.strategy_state(3) is None  # round 3 had none to record


def test_a_failed_round_leaves_no_strategy_state(store: RunStore) -> None:
    store.record_round(_round(1), _participants(1), strategy_state=b"one")
    with pytest.raises(StorageError):
        store.record_round(_round(2), _participants(1), strategy_state=b"two")

    assert store.strategy_state(2) is None
    assert store.strategy_state(1) == b"one"  # not replaced by the round that failed


def test_an_enrollment_token_is_spent_once(store: RunStore) -> None:
    store.add_client("a", "alice", 1.0, public_key="KA", token_digest="T1")
    with pytest.raises(StorageError, match="record client b"):
        store.add_client("b", "bob", 2.0, public_key="KB", token_digest="T1")
    store.add_client("c", "carol", 3.0, public_key="KC")  # no token: allow-list or open
    store.add_client("d", "dan", 4.0, public_key="KD")
    assert [c.client_id for c in store.clients()] == ["a", "c", "d"]


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    RunStore(path).close()
    newer = sqlite3.connect(path)
    newer.execute("UPDATE schema_version SET version = 99")
    newer.commit()
    newer.close()

    with pytest.raises(StorageError, match=r"schema 99.*Upgrade veilfl"):
        RunStore(path)


@pytest.mark.parametrize("content", [b"this is not a database" * 100, None])
def test_files_that_are_not_run_stores_are_refused(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "run.sqlite"
    if content is None:
        foreign = sqlite3.connect(path)
        foreign.execute("CREATE TABLE something_else (x INTEGER)")
        foreign.close()
    else:
        path.write_bytes(content)

    with pytest.raises(StorageError, match="veilfl run database"):
        RunStore(path)


def test_a_missing_folder_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot be opened"):
        RunStore(tmp_path / "missing" / "run.sqlite")


def test_extra_metrics_must_be_a_json_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        _round(1, extra_json="[1, 2]")


def test_the_privacy_state_is_recorded_with_its_round_or_not_at_all(store: RunStore) -> None:
    state = {"version": 1, "clip_norm": 0.123456789012345, "ledger": {"entries": []}}
    store.record_round(_round(1), _participants(1), privacy_state=state)
    assert store.privacy_state(1) == state  # floats round-trip exactly
    store.record_round(_round(2), _participants(2))
    assert store.privacy_state(2) is None

    def failing() -> Iterator[ParticipantRecord]:
        yield ParticipantRecord(3, "a", 1, 0.1)
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        store.record_round(_round(3), failing(), privacy_state=state)
    assert store.privacy_state(3) is None
    with pytest.raises(StorageError, match="not JSON"):
        store.record_round(_round(3), [], privacy_state={"clip_norm": float("nan")})
    assert store.last_completed_round() == _round(2)


def test_participations_count_completed_rounds_per_client(store: RunStore) -> None:
    store.record_round(_round(1), _participants(1))
    store.record_round(_round(3), [ParticipantRecord(3, "a", 1, 0.1)])
    assert store.participations() == {"a": 2, "b": 1}


@pytest.mark.parametrize(
    ("version", "dropped"),
    [
        (3, ("strategy_states", "round_privacy")),
        (4, ("strategy_states",)),
        (4, ("round_privacy",)),
    ],
)
def test_an_older_database_gains_the_tables_it_lacks(
    tmp_path: Path, version: int, dropped: tuple[str, ...]
) -> None:
    # Arrange: a store as an older schema wrote it, with one completed round.
    path = tmp_path / "run.sqlite"
    with RunStore(path) as current:
        current.initialise("run-3", {})
        current.record_round(_round(1), _participants(1))
    old = sqlite3.connect(path)
    for table in dropped:
        old.execute(f"DROP TABLE {table}")
    old.execute("UPDATE schema_version SET version = ?", (version,))
    old.commit()
    old.close()
    # Act
    with RunStore(path) as store:
        # Assert: old rounds have no saved state; new ones can record both kinds.
        assert store.privacy_state(1) is None and store.strategy_state(1) is None
        store.record_round(
            _round(2), _participants(2), strategy_state=b"s", privacy_state={"version": 1}
        )
        assert store.privacy_state(2) == {"version": 1}
        assert store.strategy_state(2) == b"s"
    check = sqlite3.connect(path)
    assert check.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    check.close()
