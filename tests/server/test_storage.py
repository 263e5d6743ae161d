"""Run state in SQLite and atomic checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from veilfl.errors import StorageError
from veilfl.server.checkpoints import CheckpointStore
from veilfl.server.run_store import ParticipantRecord, RoundRecord, RunStore


def _round(round_id: int) -> RoundRecord:
    return RoundRecord(
        round_id=round_id,
        model_version_before=round_id - 1,
        model_version_after=round_id,
        opened_at=1.0,
        closed_at=2.0,
        num_participants=2,
        train_loss=0.5,
        test_loss=None,
        test_accuracy=0.9,
        seconds=1.0,
    )


def _participants(round_id: int) -> list[ParticipantRecord]:
    return [ParticipantRecord(round_id, c, 10, 0.4) for c in ("a", "b")]


def test_rounds_and_clients_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    store = RunStore(path)
    store.initialise("run-1", {"rounds": 3})
    store.add_client("a", "alice", 1.0)
    store.record_round(_round(1), _participants(1))
    store.close()

    reopened = RunStore(path)
    assert reopened.run_id() == "run-1"
    assert reopened.config() == {"rounds": 3}
    assert [c.client_id for c in reopened.clients()] == ["a"]
    assert reopened.last_completed_round() == _round(1)
    assert [p.client_id for p in reopened.participants(1)] == ["a", "b"]
    assert reopened.journal_mode() == "wal"


def test_a_failed_round_write_leaves_no_partial_round(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run.sqlite")
    store.initialise("run-1", {})
    duplicate_participants = _participants(1) * 2  # violates the primary key mid-transaction
    with pytest.raises(StorageError, match="could not be recorded"):
        store.record_round(_round(1), duplicate_participants)
    assert store.completed_rounds() == []
    assert store.participants(1) == []


def test_a_folder_holding_another_run_is_refused(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run.sqlite")
    store.initialise("run-1", {})
    store.initialise("run-1", {})  # idempotent
    with pytest.raises(StorageError, match="already holds run"):
        store.initialise("run-2", {})


def test_checkpoints_round_trip_and_ignore_leftover_temporary_files(tmp_path: Path) -> None:
    checkpoints = CheckpointStore(tmp_path / "ckpt")
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    checkpoints.save(3, weights)
    (tmp_path / "ckpt" / ".model_v000004.safetensors.tmp123").write_bytes(b"half a file")
    assert checkpoints.latest_version() == 3
    np.testing.assert_array_equal(checkpoints.load(3)["w"], weights["w"])
    with pytest.raises(StorageError, match="no checkpoint of version 4"):
        checkpoints.load(4)


def test_a_corrupt_checkpoint_is_reported_as_a_storage_error(tmp_path: Path) -> None:
    checkpoints = CheckpointStore(tmp_path)
    checkpoints.path_for(1).write_bytes(b"\x00" * 20)
    with pytest.raises(StorageError, match="cannot be read"):
        checkpoints.load(1)
