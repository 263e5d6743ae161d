"""What a client gave each coordinator (rounds, models trained on, each run's epsilon),
per coordinator key across its runs, kept across restarts of the client."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from veilfl.client.participation_record import ParticipationRecord, model_digest
from veilfl.errors import ConfigurationError


def test_the_record_counts_per_coordinator_across_runs_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    record = ParticipationRecord.beside(tmp_path / "client.key")
    record.add("coordinator-x", "run-a", 3)
    record.add("coordinator-x", "run-a", 3)  # the same round again counts once
    record.add("coordinator-x", "run-b", 1)  # a new run of the same coordinator counts on
    record.add("coordinator-y", "run-c", 1)
    reopened = ParticipationRecord.beside(tmp_path / "client.key")
    assert [reopened.count(c) for c in ("coordinator-x", "coordinator-y", "z")] == [2, 1, 0]
    assert (tmp_path / "client.key.rounds.json").is_file()


def test_models_trained_on_and_epsilons_are_kept_per_coordinator(tmp_path: Path) -> None:
    record = ParticipationRecord.beside(tmp_path / "client.key")
    model = model_digest({"w": np.ones(3, np.float32)})
    record.add("x", "run-a", 1, model=model, epsilon=1.5)
    record.add("x", "run-b", 1, epsilon=math.inf)  # a run with no epsilon against it
    reopened = ParticipationRecord.beside(tmp_path / "client.key")
    assert reopened.trained_on("x", model) and not reopened.trained_on("y", model)
    assert not reopened.trained_on("x", model_digest({"w": np.zeros(3, np.float32)}))
    assert reopened.earlier_epsilon("x", run_id="run-b") == 1.5
    assert reopened.earlier_epsilon("x", run_id="run-c") == math.inf
    assert reopened.earlier_epsilon("y", run_id="run-c") == 0


def test_a_record_of_the_first_format_keeps_its_rounds(tmp_path: Path) -> None:
    path = tmp_path / "client.key.rounds.json"
    path.write_text('{"run-a": [1, 2]}')
    assert ParticipationRecord(path).count("") == 2


def test_without_a_key_file_the_record_lives_in_memory(tmp_path: Path) -> None:
    record = ParticipationRecord.beside(None)
    record.add("x", "run-a", 1)
    assert record.count("x") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_record_is_refused_rather_than_reset(tmp_path: Path) -> None:
    path = tmp_path / "client.key.rounds.json"
    path.write_text("[1, 2")
    with pytest.raises(ConfigurationError, match="is not a record of handed-in rounds"):
        ParticipationRecord(path)


def test_the_record_counts_per_coordinator_and_data_set(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    model = model_digest({"w": np.ones(3, np.float32)})
    first = ParticipationRecord.beside(key, data_set="data-a")
    first.add("x", "run-a", 1, model=model, epsilon=2.0)
    first.add("x", "run-a", 2)

    same = ParticipationRecord.beside(key, data_set="data-a")
    other = ParticipationRecord.beside(key, data_set="data-b")
    other.add("x", "run-b", 1)
    both = ParticipationRecord.beside(key, data_set="data-a")

    assert same.count("x") == 2 and same.trained_on("x", model)
    assert same.earlier_epsilon("x", run_id="run-z") == 2.0
    assert other.count("x") == 1 and not other.trained_on("x", model)
    assert other.earlier_epsilon("x", run_id="run-z") == 0
    assert both.count("x") == 2  # data-b's round stays data-b's, across a rewrite


def test_a_record_from_before_data_sets_counts_for_every_data_set(tmp_path: Path) -> None:
    path = tmp_path / "client.key.rounds.json"
    path.write_text(
        '{"format": 2, "coordinators": {"x": {"rounds": [["run-a", 1]], "models": [], '
        '"epsilon": {"run-a": 1.0}}}}'
    )

    record = ParticipationRecord(path, data_set="data-a")
    record.add("x", "run-b", 1)
    reopened = ParticipationRecord(path, data_set="data-b")

    assert record.count("x") == 2
    assert reopened.count("x") == 1 and reopened.earlier_epsilon("x", run_id="r") == 1.0
