"""One assembly from settings: an adaptive server optimiser and FedProx chosen in the
settings are what the coordinator applies and what the clients are told, and they are
stored with the run."""

from __future__ import annotations

import numpy as np
import pytest
from tests.run_descriptions import run_info
from tests.tiny_coordinator import settle

from veilfl.errors import ConfigurationError
from veilfl.protocol.assembly import (
    ResumePoint,
    build_coordinator,
    precision_warning,
)
from veilfl.protocol.buffered import BufferConfig, BufferMode
from veilfl.protocol.effects import Effect, PersistRound
from veilfl.protocol.messages import LocalTrainingPlan, UpdateHeader
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.strategy.fedopt import FedAdam, FedOpt, FedYogi
from veilfl.strategy.settings import ServerOptimizerConfig
from veilfl.tensors import Weights, flatten, spec_of

START: Weights = {"w": np.array([1.0, -2.0, 0.5], dtype=np.float32)}
DELTAS = {"a": (10, [2.0, 0.0, -1.0]), "b": (30, [-2.0, 4.0, 1.0])}


def _settings(**changes: object) -> RunSpec:
    fields: dict[str, object] = {
        "model_name": "tiny",
        "rounds": RoundConfig(num_rounds=2, clients_per_round=2, min_clients=2),
        "server_learning_rate": 0.1,
        "server_optimizer": ServerOptimizerConfig(name="fedadam", beta1=0.5, tau=0.5),
    }
    fields.update(changes)
    return RunSpec(**fields)  # type: ignore[arg-type]


def _one_round(settings: RunSpec) -> tuple[np.ndarray, list[Effect]]:
    core = build_coordinator(settings, initial_weights=START, run_id="r").coordinator
    for client in DELTAS:
        core.join(client, now=0.0)
    for client, (samples, delta) in DELTAS.items():
        task = core.task_for(client, now=0.0)
        assert task.round_id is not None
        header = UpdateHeader(
            client_id=client, round_id=task.round_id, base_version=0, num_samples=samples, loss=1.0
        )
        core.submit_plaintext_update(header, {"w": np.array(delta, np.float32)}, now=0.0)
    seen: list[Effect] = []
    settle(core, seen=seen)
    return flatten(core.global_model().weights, spec_of(START)), seen


def test_the_settings_server_optimiser_takes_one_step_on_the_rounds_mean_delta() -> None:
    model, seen = _one_round(_settings())

    total = sum(n for n, _ in DELTAS.values())
    mean = sum(n * np.array(d, dtype=np.float64) for n, d in DELTAS.values()) / total
    by_hand = FedAdam(server_learning_rate=0.1, beta1=0.5, tau=0.5).step(
        flatten(START, spec_of(START)), mean
    )
    np.testing.assert_array_equal(model, by_hand)
    persisted = [e for e in seen if isinstance(e, PersistRound)]
    assert len(persisted) == 1 and persisted[0].outcome.strategy_state is not None
    assert persisted[0].outcome.strategy_state.steps == 1  # type: ignore[attr-defined]


def test_fedavg_settings_step_with_the_server_learning_rate_and_keep_no_state() -> None:
    model, seen = _one_round(_settings(server_optimizer=None, server_learning_rate=0.5))

    total = sum(n for n, _ in DELTAS.values())
    mean = sum(n * np.array(d) for n, d in DELTAS.values()) / total
    np.testing.assert_allclose(model, START["w"] + 0.5 * mean, rtol=1e-6)
    assert all(e.outcome.strategy_state is None for e in seen if isinstance(e, PersistRound))


def test_a_resume_point_restores_the_optimisers_state() -> None:
    saved = FedYogi(server_learning_rate=0.1, tau=0.5)
    saved.step(np.zeros(3, dtype=np.float32), np.array([1.0, 2.0, 3.0]))
    resume = ResumePoint(
        next_round=2, model_version=1, releases=1, strategy_state=saved.state().to_bytes()
    )
    settings = _settings(server_optimizer=ServerOptimizerConfig(name="fedyogi", tau=0.5))

    core = build_coordinator(settings, initial_weights=START, run_id="r", resume=resume).coordinator
    strategy = core.strategy

    assert isinstance(strategy, FedOpt) and strategy.steps == 1
    assert strategy.state().to_bytes() == saved.state().to_bytes()


def test_fedbuff_takes_a_server_optimiser_and_fedasync_refuses_one() -> None:
    buffer = BufferConfig(buffer_size=2, max_staleness=1, max_versions=2)
    core = build_coordinator(
        _settings(buffer=buffer), initial_weights=START, run_id="r"
    ).coordinator
    assert isinstance(core.strategy, FedAdam)

    fedasync = BufferConfig(
        buffer_size=1, max_staleness=1, max_versions=2, mode=BufferMode.FEDASYNC
    )
    with pytest.raises(ConfigurationError, match=r"FedAsync .* no server optimiser"):
        _settings(buffer=fedasync)


def test_the_optimiser_and_fedprox_are_stored_with_the_run_and_published() -> None:
    settings = _settings(
        plan=LocalTrainingPlan(proximal_mu=0.01),
        server_optimizer=ServerOptimizerConfig(name="fedyogi", beta1=0.8, beta2=0.9, tau=0.1),
    )

    restored = RunSpec.from_json(settings.to_json())
    run = run_info(settings, run_id="r", coordinator_key="", model_size=spec_of(START).total_size)

    assert restored == settings
    assert run.plan.proximal_mu == 0.01


def test_settings_stored_before_server_optimisers_existed_read_as_fedavg() -> None:
    stored = _settings(server_optimizer=None).to_json()
    del stored["server_optimizer"]
    del stored["plan"]["proximal_mu"]

    restored = RunSpec.from_json(stored)

    assert restored.server_optimizer is None and restored.plan.proximal_mu == 0.0


def test_the_precision_warning_speaks_only_when_rounding_drowns_the_bound() -> None:
    secure = SecureAggregationConfig(norm_bound=1.0)
    small = ContributionLayout(1_000, secure)
    huge = ContributionLayout(3_000_000, secure)

    assert precision_warning(None, model_size=huge.dimension) is None
    assert small.rounding_noise < 0.5 and precision_warning(secure, model_size=1_000) is None
    said = precision_warning(secure, model_size=huge.dimension)
    assert huge.rounding_noise > 0.5 and said is not None and "--norm-bound" in said
