"""The rounds a client has handed in, per run, kept across restarts of the client."""

from __future__ import annotations

from pathlib import Path

import pytest

from veilfl.client.participation_record import ParticipationRecord
from veilfl.errors import ConfigurationError


def test_the_record_beside_a_key_file_survives_a_restart(tmp_path: Path) -> None:
    record = ParticipationRecord.beside(tmp_path / "client.key")
    record.add("run-a", 3)
    record.add("run-a", 3)  # the same round again counts once
    record.add("run-a", 5)
    record.add("run-b", 1)
    reopened = ParticipationRecord.beside(tmp_path / "client.key")
    assert (reopened.count("run-a"), reopened.count("run-b"), reopened.count("run-c")) == (2, 1, 0)
    assert (tmp_path / "client.key.rounds.json").is_file()


def test_without_a_key_file_the_record_lives_in_memory(tmp_path: Path) -> None:
    record = ParticipationRecord.beside(None)
    record.add("run-a", 1)
    assert record.count("run-a") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_record_is_refused_rather_than_reset(tmp_path: Path) -> None:
    path = tmp_path / "client.key.rounds.json"
    path.write_text("[1, 2")
    with pytest.raises(ConfigurationError, match="is not a record of handed-in rounds"):
        ParticipationRecord(path)
