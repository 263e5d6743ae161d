"""A DP run that is stopped and opened again continues its privacy state exactly:
epsilon against both observers, the adaptive clipping norm and the sampling attempts."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from veilfl.privacy.accountant import epsilon_of
from veilfl.privacy.clipping import AdaptiveClipping
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.dp_ftrl import dp_ftrl_epsilon
from veilfl.privacy.ledger import PrivacyLedger
from veilfl.protocol.effects import PersistRound, RoundCompleted, RoundOutcome, RoundPersisted
from veilfl.protocol.messages import TaskKind, UpdateHeader
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.server.checkpoints import CheckpointStore
from veilfl.server.run_setup import PreparedRun, metrics_from_store, prepare_run
from veilfl.server.run_store import ParticipantRecord, RoundRecord
from veilfl.tensors import Weights

SIZE = 16
CLIENTS = [f"c{i}" for i in range(8)]


def _settings(placement: str = "central", rounds: int = 6) -> RunSpec:
    return RunSpec(
        model_name="tiny",
        rounds=RoundConfig(num_rounds=rounds, clients_per_round=4, min_clients=2),
        dp=DpConfig(
            placement=placement,  # type: ignore[arg-type]
            noise_multiplier=0.8,
            clip_norm=1.0,
            adaptive=AdaptiveClipping(target_quantile=0.5, learning_rate=0.5),
            count_stddev=2.0,
        ),
        population=len(CLIENTS),
    )


def _zeros(seed: int) -> Weights:
    return {"w": np.zeros(SIZE, dtype=np.float32)}


def _open(run_dir: Path, settings: RunSpec) -> PreparedRun:
    prepared = prepare_run(run_dir, settings, initial_weights=_zeros)
    for client in CLIENTS:
        prepared.coordinator.join(client, now=0.0)
    return prepared


def _train(prepared: PreparedRun, rounds: int) -> RoundOutcome:
    """Run ``rounds`` rounds: every sampled client sends an update, half of them longer
    than any clipping norm the run reaches; each round is persisted as the server does.
    Returns the last round's outcome."""
    core = prepared.coordinator
    completed = 0
    last: RoundOutcome | None = None
    while completed < rounds:
        core.tick(now=0.0)
        for index, client in enumerate(CLIENTS):
            task = core.task_for(client, now=0.0)
            if task.kind is not TaskKind.TRAIN:
                continue
            assert task.round_id is not None and task.model_version is not None
            norm = 0.01 if index % 2 else 100.0
            core.submit_plaintext_update(
                UpdateHeader(client, task.round_id, task.model_version, num_samples=1, loss=0.1),
                {"w": np.full(SIZE, norm / np.sqrt(SIZE), dtype=np.float32)},
                now=0.0,
            )
        while effects := core.drain():
            for effect in effects:
                if isinstance(effect, PersistRound):
                    prepared.persist(effect.outcome)
                    core.handle(RoundPersisted(effect.outcome.cohort.round_id), now=0.0)
                elif isinstance(effect, RoundCompleted):
                    completed += 1
                    last = effect.outcome
    assert last is not None
    return last


@pytest.mark.parametrize("accounting", ["rdp", "pld"])
def test_a_reopened_dp_run_continues_epsilon_and_clip_norm_exactly(
    tmp_path: Path, accounting: str
) -> None:
    # Arrange: three rounds, then the process goes away (the store is simply closed).
    settings = _settings()
    assert settings.dp is not None
    settings = replace(settings, dp=replace(settings.dp, accounting=accounting))
    first = _open(tmp_path, settings)
    third = _train(first, 3)
    assert first.privacy is not None and third.privacy is not None
    first.store.close()  # (round 4 may have been sampled already: it released nothing)
    # Act
    second = _open(tmp_path, settings)
    # Assert: the privacy state is the one recorded with round 3, not a fresh one.
    assert second.privacy is not None
    assert second.privacy.clip_norm == third.privacy.clip_norm != settings.dp.clip_norm
    assert second.privacy.state() == third.privacy
    report = second.privacy.report()
    assert (report.epsilon_public, report.epsilon_coordinator, report.delta) == (
        third.metrics.epsilon,
        third.metrics.epsilon_coordinator,
        third.metrics.delta,
    )
    assert second.coordinator.status()["privacy"] == report.to_json()
    # One more round continues from there: 4 released rounds, and the coordinator's
    # epsilon counts the participations of all 4 (read back from the store).
    _train(second, 1)
    ledger = second.privacy.ledger
    assert ledger.rounds == 4 == len(second.store.completed_rounds())
    assert second.privacy.state().sampling_attempts >= 4
    assert second.privacy.report().epsilon_public == epsilon_of(
        PrivacyLedger.from_released_rounds(4, noise_multiplier=0.8, sample_rate=0.5),
        delta=1e-5,
        accounting=accounting,  # type: ignore[arg-type]
        adjacency="add-remove",
    )
    history = metrics_from_store(second.store)
    assert [m.epsilon for m in history[:3]] == [
        epsilon_of(
            PrivacyLedger.from_released_rounds(r, noise_multiplier=0.8, sample_rate=0.5),
            delta=1e-5,
            accounting=accounting,  # type: ignore[arg-type]
        )
        for r in (1, 2, 3)
    ]
    assert all(m.accounting == accounting and m.epsilon_coordinator is None for m in history)
    second.store.close()


def test_the_coordinators_epsilon_continues_from_the_stored_participations(
    tmp_path: Path,
) -> None:
    # Local noise protects against the coordinator too (distributed noise would need
    # aggregators; the bookkeeping is the same).
    settings = replace(
        _settings(), dp=DpConfig(placement="local", noise_multiplier=0.8, clip_norm=1.0)
    )
    first = _open(tmp_path, settings)
    _train(first, 3)
    assert first.privacy is not None
    expected = first.privacy.report().epsilon_coordinator
    most = max(first.store.participations().values())
    first.store.close()
    second = _open(tmp_path, settings)
    assert second.privacy is not None
    reported = second.privacy.report().epsilon_coordinator
    assert (
        reported
        == expected
        == epsilon_of(
            PrivacyLedger.from_released_rounds(most, noise_multiplier=0.8, sample_rate=1.0),
            delta=1e-5,
            adjacency="zero-out",
        )
    )
    second.store.close()


def test_a_store_without_privacy_state_is_rebuilt_from_released_rounds_not_ids(
    tmp_path: Path,
) -> None:
    # Arrange: a run whose store kept no privacy state (older veilfl), with rounds 1, 2
    # and 5 released (3 and 4 were abandoned: they released nothing).
    settings = _settings(rounds=9)
    prepare_run(tmp_path, settings, initial_weights=_zeros).store.close()
    checkpoints = CheckpointStore(tmp_path / "checkpoints", model_name="tiny")
    opened = prepare_run(tmp_path, settings, initial_weights=_zeros)
    for version, round_id in enumerate((1, 2, 5), start=1):
        checkpoints.save(version, _zeros(0))
        opened.store.record_round(
            RoundRecord(
                round_id=round_id,
                model_version_before=version - 1,
                model_version_after=version,
                opened_at=0.0,
                closed_at=1.0,
                num_participants=1,
                train_loss=None,
                test_loss=None,
                test_accuracy=None,
                seconds=1.0,
                extra_json=json.dumps({}),
            ),
            [ParticipantRecord(round_id, "c0", 1, None)],
        )
    opened.store.close()
    # Act
    resumed = _open(tmp_path, settings)
    # Assert
    assert resumed.privacy is not None
    assert resumed.privacy.ledger == PrivacyLedger.from_released_rounds(
        3, noise_multiplier=0.8, sample_rate=0.5
    )
    assert resumed.coordinator.schedule.round_id == 6
    resumed.store.close()


def test_a_reopened_dp_ftrl_run_continues_the_same_tree_and_participation_limits(
    tmp_path: Path,
) -> None:
    # Arrange: central DP-FTRL, 8 clients, 4 a round, K = 3, b = 2; three rounds, stop.
    from veilfl.privacy.central_tree import CentralTreeNoise

    dp = DpConfig(
        placement="central",
        noise_multiplier=0.5,
        clip_norm=1.0,
        mechanism="ftrl",
        max_participations=3,
        min_separation=2,
    )
    settings = replace(_settings(), dp=dp)
    first = _open(tmp_path, settings)
    third = _train(first, 3)
    assert third.privacy is not None and third.privacy.tree_noise_key is not None
    assert "tree_noise_key" not in repr(third.privacy)
    first.store.close()
    # Act: reopen and release the other three.
    second = _open(tmp_path, settings)
    assert second.privacy is not None and second.privacy.state() == third.privacy
    _train(second, 3)
    # Assert: every client within K = 3, two rounds at least 2 apart (from the store) ...
    steps: dict[str, list[int]] = {}
    total = np.zeros(SIZE)
    for step, record in enumerate(second.store.completed_rounds(), start=1):
        for participant in second.store.participants(record.round_id):
            steps.setdefault(participant.client_id, []).append(step)
            index = CLIENTS.index(participant.client_id)
            total += np.full(SIZE, (0.01 if index % 2 else 1.0) / np.sqrt(SIZE))  # clipped
    assert step == 6
    assert all(
        len(s) <= 3 and all(b - a >= 2 for a, b in itertools.pairwise(s)) for s in steps.values()
    )
    # ... and the model is theta_0 + (S_6 + the noise of cover(6)) / n with the stored secret.
    noise = CentralTreeNoise(key=third.privacy.tree_noise_key, stddev=0.5, length=SIZE)
    np.testing.assert_allclose(
        second.coordinator.global_model().weights["w"],
        (total + noise.prefix(6)) / 4,
        rtol=1e-5,
        atol=1e-5,
    )
    report = second.privacy.report()
    assert report.epsilon_coordinator is None  # central: the coordinator is trusted
    assert report.epsilon_public == dp_ftrl_epsilon(
        noise_multiplier=0.5,
        rounds=6,
        max_participations=3,
        min_separation=2,
        delta=1e-5,
        accounting="rdp",
    )
    second.store.close()
