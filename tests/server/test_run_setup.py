"""A run folder resumes the run it holds: with an adaptive server optimiser, or with server
momentum and a learning-rate schedule, a run stopped after round 2 and restarted ends on
exactly the model of a run never stopped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from veilfl.errors import StorageError
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.effects import PersistRound, RoundPersisted
from veilfl.protocol.messages import UpdateHeader
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.server.run_setup import PreparedRun, prepare_run
from veilfl.strategy.fedopt import FedOpt
from veilfl.strategy.momentum import ServerSgd
from veilfl.strategy.settings import LrScheduleConfig, ServerOptimizerConfig
from veilfl.tensors import Weights

CLIENTS = ("a", "b")


def _settings(optimizer: ServerOptimizerConfig | None) -> RunSpec:
    return RunSpec(
        model_name="tiny",
        rounds=RoundConfig(num_rounds=4, clients_per_round=2, min_clients=2),
        server_learning_rate=0.1,
        server_optimizer=optimizer,
    )


def _start(seed: int) -> Weights:
    return {"w": np.zeros(3, dtype=np.float32), "b": np.full(2, 0.5, dtype=np.float32)}


def _delta(round_id: int, client: str) -> Weights:
    rng = np.random.default_rng([round_id, ord(client)])
    return {
        "w": rng.normal(size=3).astype(np.float32),
        "b": rng.normal(size=2).astype(np.float32),
    }


def _settle(prepared: PreparedRun) -> None:
    core = prepared.coordinator
    while effects := core.drain():
        for effect in effects:
            if isinstance(effect, PersistRound):
                prepared.persist(effect.outcome)
                core.handle(RoundPersisted(effect.outcome.cohort.round_id), now=0.0)


def _train(prepared: PreparedRun, rounds: int) -> None:
    core: Coordinator = prepared.coordinator
    for client in CLIENTS:
        core.join(client, now=0.0)
    for _ in range(rounds):
        for client in CLIENTS:
            task = core.task_for(client, now=0.0)
            assert task.round_id is not None and task.model_version is not None
            header = UpdateHeader(
                client_id=client,
                round_id=task.round_id,
                base_version=task.model_version,
                num_samples=10 + ord(client),
                loss=1.0,
            )
            core.submit_plaintext_update(header, _delta(task.round_id, client), now=0.0)
        _settle(prepared)


def _run(folder: Path, settings: RunSpec, *, stop_after: int | None) -> Weights:
    prepared = prepare_run(folder, settings, initial_weights=_start)
    _train(prepared, stop_after or settings.rounds.num_rounds)
    if stop_after is not None:
        prepared.store.close()
        prepared = prepare_run(folder, settings, initial_weights=_start)
        assert prepared.resumed_from_round == stop_after
        _train(prepared, settings.rounds.num_rounds - stop_after)
    assert prepared.coordinator.done
    weights = prepared.coordinator.global_model().weights
    prepared.store.close()
    return weights


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_a_resumed_run_continues_the_server_optimiser_exactly(tmp_path: Path, name: str) -> None:
    settings = _settings(ServerOptimizerConfig(name=name, tau=0.01))

    straight = _run(tmp_path / "straight", settings, stop_after=None)
    resumed = _run(tmp_path / "resumed", settings, stop_after=2)

    for key in straight:
        np.testing.assert_array_equal(resumed[key], straight[key])


def test_a_fresh_optimiser_after_the_restart_would_have_diverged(tmp_path: Path) -> None:
    """The test above can fail: restarting the optimiser's state changes the model."""
    settings = _settings(ServerOptimizerConfig(name="fedadam", tau=0.01))
    straight = _run(tmp_path / "straight", settings, stop_after=None)

    prepared = prepare_run(tmp_path / "forgetful", settings, initial_weights=_start)
    _train(prepared, 2)
    prepared.store.close()
    prepared = prepare_run(tmp_path / "forgetful", settings, initial_weights=_start)
    strategy = prepared.coordinator.strategy
    assert isinstance(strategy, FedOpt) and strategy.steps == 2
    fresh = ServerOptimizerConfig(name="fedadam", tau=0.01).build(server_learning_rate=0.1)
    prepared.coordinator._strategy = fresh  # what a resume without the saved state would do
    _train(prepared, 2)
    forgetful = prepared.coordinator.global_model().weights
    prepared.store.close()

    assert not np.array_equal(forgetful["w"], straight["w"])


def test_only_the_latest_rounds_state_is_kept(tmp_path: Path) -> None:
    prepared = prepare_run(
        tmp_path, _settings(ServerOptimizerConfig(name="fedyogi")), initial_weights=_start
    )
    _train(prepared, 3)
    store = prepared.store

    assert store.strategy_state(1) is None and store.strategy_state(2) is None
    saved = store.strategy_state(3)
    strategy = prepared.coordinator.strategy
    assert isinstance(strategy, FedOpt)
    assert saved == strategy.state().to_bytes()
    store.close()


def test_fedavg_rounds_store_no_strategy_state(tmp_path: Path) -> None:
    prepared = prepare_run(tmp_path, _settings(None), initial_weights=_start)
    _train(prepared, 2)
    assert prepared.store.strategy_state(2) is None
    prepared.store.close()
    resumed = prepare_run(tmp_path, _settings(None), initial_weights=_start)
    assert resumed.resumed_from_round == 2
    resumed.store.close()


def test_a_resume_whose_optimiser_state_is_lost_is_refused(tmp_path: Path) -> None:
    settings = _settings(ServerOptimizerConfig(name="fedadam"))
    prepared = prepare_run(tmp_path, settings, initial_weights=_start)
    _train(prepared, 2)
    prepared.store._db.execute("DELETE FROM strategy_states")
    prepared.store.close()

    with pytest.raises(StorageError, match="no saved state of it was found"):
        prepare_run(tmp_path, settings, initial_weights=_start)


MOMENTUM_RUNS = {
    "heavy ball": dict(server_momentum=0.9),
    "nesterov with cosine": dict(
        server_momentum=0.8,
        server_nesterov=True,
        server_lr_schedule=LrScheduleConfig(name="cosine", warmup_rounds=1),
    ),
    "step schedule alone": dict(server_lr_schedule=LrScheduleConfig(name="step", step_rounds=2)),
}


@pytest.mark.parametrize("changes", MOMENTUM_RUNS.values(), ids=MOMENTUM_RUNS.keys())
def test_a_resumed_run_continues_the_server_momentum_exactly(
    tmp_path: Path, changes: dict[str, object]
) -> None:
    settings = replace(_settings(None), **changes)  # type: ignore[arg-type]

    straight = _run(tmp_path / "straight", settings, stop_after=None)
    resumed = _run(tmp_path / "resumed", settings, stop_after=2)

    for key in straight:
        np.testing.assert_array_equal(resumed[key], straight[key])


def test_the_resumed_coordinator_holds_the_buffer_saved_with_the_last_round(
    tmp_path: Path,
) -> None:
    settings = replace(_settings(None), server_momentum=0.9)
    prepared = prepare_run(tmp_path, settings, initial_weights=_start)
    _train(prepared, 2)
    before = prepared.coordinator.strategy
    assert isinstance(before, ServerSgd)
    saved = before.state()
    prepared.store.close()

    prepared = prepare_run(tmp_path, settings, initial_weights=_start)
    after = prepared.coordinator.strategy

    assert isinstance(after, ServerSgd) and after.steps == 2
    assert saved.buffer is not None and after.state().buffer is not None
    np.testing.assert_array_equal(after.state().buffer, saved.buffer)  # type: ignore[arg-type]
    prepared.store.close()


def test_a_fresh_momentum_buffer_after_the_restart_would_have_diverged(tmp_path: Path) -> None:
    """The resume tests above can fail: losing the buffer changes the model."""
    settings = replace(_settings(None), server_momentum=0.9)
    straight = _run(tmp_path / "straight", settings, stop_after=None)

    prepared = prepare_run(tmp_path / "forgetful", settings, initial_weights=_start)
    _train(prepared, 2)
    prepared.store.close()
    prepared = prepare_run(tmp_path / "forgetful", settings, initial_weights=_start)
    strategy = prepared.coordinator.strategy
    assert isinstance(strategy, ServerSgd)
    prepared.coordinator._strategy = ServerSgd(strategy.inner, momentum=0.9)  # buffer lost
    _train(prepared, 2)
    forgetful = prepared.coordinator.global_model().weights
    prepared.store.close()

    assert not np.array_equal(forgetful["w"], straight["w"])


def test_a_resume_whose_momentum_buffer_is_lost_is_refused(tmp_path: Path) -> None:
    settings = replace(_settings(None), server_momentum=0.9)
    prepared = prepare_run(tmp_path, settings, initial_weights=_start)
    _train(prepared, 2)
    prepared.store._db.execute("DELETE FROM strategy_states")
    prepared.store.close()

    with pytest.raises(StorageError, match="fedavgm, but no saved state of it was found"):
        prepare_run(tmp_path, settings, initial_weights=_start)
