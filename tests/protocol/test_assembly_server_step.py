"""Server momentum and the learning-rate schedule, chosen in the run description, are
what every assembly applies: around FedAvg, FedBuff and the adaptive optimisers, and
under DP-FTRL, where they post-process the released noised estimates and leave the
epsilon as it was."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tests.tiny_coordinator import settle

from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.assembly import build_coordinator, check_run_settings
from veilfl.protocol.buffered import BufferConfig, BufferMode
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.effects import Effect, PersistRound
from veilfl.protocol.messages import TaskKind, UpdateHeader
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.strategy import FedAdam, FedAvg, FedBuff, ServerSgd
from veilfl.strategy.settings import LrScheduleConfig, ServerOptimizerConfig

START = {"w": np.zeros(3, np.float32)}
DELTAS = {"a": np.array([1.0, 0.0, 0.0]), "b": np.array([0.0, 2.0, 0.0])}


def _settings(**changes: object) -> RunSpec:
    fields: dict[str, object] = {
        "model_name": "tiny",
        "rounds": RoundConfig(num_rounds=3, clients_per_round=2, min_clients=2),
        "server_learning_rate": 0.5,
    }
    fields.update(changes)
    return RunSpec(**fields)  # type: ignore[arg-type]


def _round(core: Coordinator, *, seen: list[Effect] | None = None) -> None:
    for client in DELTAS:
        core.join(client, now=0.0)
    core.tick(now=0.0)
    for client, delta in DELTAS.items():
        task = core.task_for(client, now=0.0)
        if task.kind is TaskKind.TRAIN:
            assert task.round_id is not None and task.model_version is not None
            header = UpdateHeader(client, task.round_id, task.model_version, 1, 0.5)
            core.submit_plaintext_update(header, {"w": delta.astype(np.float32)}, now=0.0)
    settle(core, now=0.0, seen=seen)


def test_momentum_settings_wrap_fedavg_and_persist_the_buffer_each_round() -> None:
    core = build_coordinator(
        _settings(server_momentum=0.5), initial_weights=START, run_id="r"
    ).coordinator
    seen: list[Effect] = []

    for _ in range(3):
        _round(core, seen=seen)

    strategy = core.strategy
    assert isinstance(strategy, ServerSgd) and isinstance(strategy.inner, FedAvg)
    # g = mean delta [0.5, 1, 0]; m = g, 1.5 g, 1.75 g; w = 0.5 (1 + 1.5 + 1.75) g.
    np.testing.assert_allclose(core.global_model().weights["w"], [1.0625, 2.125, 0], rtol=1e-6)
    states = [e.outcome.strategy_state for e in seen if isinstance(e, PersistRound)]
    assert len(states) == 3 and all(s is not None for s in states)


def test_buffered_runs_wrap_fedbuff_and_fedasync_refuses_momentum_in_one_line() -> None:
    buffer = BufferConfig(buffer_size=2, max_staleness=1, max_versions=2)
    core = build_coordinator(
        _settings(buffer=buffer, server_momentum=0.9), initial_weights=START, run_id="r"
    ).coordinator
    assert isinstance(core.strategy, ServerSgd) and isinstance(core.strategy.inner, FedBuff)

    fedasync = dataclasses.replace(buffer, buffer_size=1, mode=BufferMode.FEDASYNC)
    for changes in (
        {"server_momentum": 0.9},
        {"server_lr_schedule": LrScheduleConfig(name="cosine")},
    ):
        with pytest.raises(ConfigurationError, match=r"^FedAsync .* no server momentum") as raised:
            _settings(buffer=fedasync, **changes)
        assert "\n" not in str(raised.value)


def test_a_schedule_alone_is_stateful_and_the_plain_run_is_not() -> None:
    scheduled = build_coordinator(
        _settings(server_lr_schedule=LrScheduleConfig(name="linear", final_fraction=0.5)),
        initial_weights=START,
        run_id="r",
    ).coordinator
    plain = build_coordinator(_settings(), initial_weights=START, run_id="r").coordinator

    _round(scheduled)
    _round(scheduled)

    assert isinstance(plain.strategy, FedAvg)
    assert isinstance(scheduled.strategy, ServerSgd)
    # Linear over 3 rounds to half: multipliers 1 and 5/6; g = [0.5, 1, 0].
    np.testing.assert_allclose(
        scheduled.global_model().weights["w"], 0.5 * (1 + 5 / 6) * np.array([0.5, 1, 0]), rtol=1e-6
    )


def test_the_adaptive_optimisers_take_the_schedule() -> None:
    settings = _settings(
        server_optimizer=ServerOptimizerConfig(name="fedadam"),
        server_lr_schedule=LrScheduleConfig(name="step", step_rounds=1, decay_factor=0.5),
    )

    strategy = build_coordinator(settings, initial_weights=START, run_id="r").coordinator.strategy

    assert isinstance(strategy, FedAdam)
    assert strategy.schedule == settings.server_lr_schedule.build(total_steps=3)


def _ftrl(**changes: object) -> RunSpec:
    dp = DpConfig(
        placement="central",
        noise_multiplier=1e-12,
        clip_norm=10.0,
        min_clients=2,
        mechanism="ftrl",
        max_participations=3,
        min_separation=1,
    )
    return _settings(dp=dp, population=2, **changes)


def test_dp_ftrl_takes_momentum_on_its_released_estimates_at_the_same_epsilon() -> None:
    settings = _ftrl(server_momentum=0.5)
    check_run_settings(settings)  # DP-FTRL accepts momentum, unlike an adaptive optimiser
    with_momentum = build_coordinator(settings, initial_weights=START, run_id="r")
    without = build_coordinator(_ftrl(), initial_weights=START, run_id="r")

    for _ in range(3):
        _round(with_momentum.coordinator)
        _round(without.coordinator)

    # Negligible noise: each release's change is the round's sum [1, 2, 0], over n = 2.
    np.testing.assert_allclose(
        with_momentum.coordinator.global_model().weights["w"], [1.0625, 2.125, 0], atol=1e-6
    )
    assert with_momentum.privacy is not None and without.privacy is not None
    assert with_momentum.privacy.report() == without.privacy.report()
    assert with_momentum.privacy.report().epsilon_public is not None
