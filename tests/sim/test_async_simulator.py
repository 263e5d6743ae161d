"""Asynchronous simulation: FedBuff with slow, dropping and late clients."""

from __future__ import annotations

import numpy as np
import pytest

from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.privacy.accountant import epsilon_for
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.buffered import BufferConfig, BufferMode
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.sim.async_simulator import (
    AsyncSimulationConfig,
    AsyncSimulationResult,
    buffered_spec,
    simulate_async,
)
from veilfl.sim.executor import SequentialExecutor
from veilfl.sim.profiles import ClientProfiles
from veilfl.strategy.settings import ServerOptimizerConfig

PROFILES = ClientProfiles(
    base_seconds=5, speed_sigma=0.8, dropout=0.1, late_fraction=0.3, late_by_seconds=20, seed=1
)


def _clients(count: int) -> list:  # type: ignore[type-arg]
    data = synthetic_dataset(num_examples=40 * count, seed=0)
    return [data.subset(p) for p in partition_iid(len(data), count, seed=0)]


def _run(
    *,
    buffer: BufferConfig | None = None,
    secure: SecureAggregationConfig | None = None,
    **settings: object,
) -> AsyncSimulationResult:
    spec = buffered_spec(
        buffer or BufferConfig(buffer_size=4, max_staleness=2, max_versions=5, max_concurrency=10),
        **{"plan": LocalTrainingPlan(max_batches=2), **settings},
    )
    return simulate_async(
        mnist_learner("simple-cnn", seed=0),
        client_data=_clients(30),
        test_data=None,
        config=AsyncSimulationConfig(spec, secure=secure, profiles=PROFILES),
    )


def test_fedbuff_releases_every_buffer_with_k_updates_despite_stragglers() -> None:
    result = _run()
    assert [m.round_id for m in result.history] == [1, 2, 3, 4, 5]
    assert all(m.num_clients == 4 for m in result.history)
    assert result.accepted == 20
    assert result.dropped > 0


def test_secure_aggregation_per_buffer_gives_the_plaintext_model() -> None:
    plain = _run()
    config = SecureAggregationConfig(max_samples_per_client=40)  # every weight is 1
    secure = _run(secure=config)
    # Each buffer's mean is off by under one rounding step per coordinate; five
    # buffers, with room for later training to carry earlier differences.
    model_size = sum(v.size for v in plain.final_weights.values())
    tolerance = 2 * 5 / ContributionLayout(model_size, config).scale
    for name in plain.final_weights:
        np.testing.assert_allclose(
            secure.final_weights[name], plain.final_weights[name], atol=tolerance
        )
    assert secure.accepted == plain.accepted
    # Every accepted update counted exactly once across buffers, with secure aggregation on.
    assert sum(m.num_clients for m in secure.history) == secure.accepted == 4 * 5


def test_a_tight_staleness_bound_refuses_stale_updates() -> None:
    result = _run(buffer=BufferConfig(buffer_size=2, max_staleness=0, max_versions=6))
    assert result.refused_stale > 0
    assert len(result.history) == 6


def test_fedasync_applies_single_updates() -> None:
    result = _run(
        buffer=BufferConfig(
            buffer_size=1, max_staleness=3, max_versions=4, mode=BufferMode.FEDASYNC
        )
    )
    assert [m.num_clients for m in result.history] == [1, 1, 1, 1]


def test_dp_is_accounted_per_released_buffer_without_amplification() -> None:
    dp = DpConfig(placement="distributed", noise_multiplier=1.0, clip_norm=1.0, min_clients=4)
    result = _run(
        secure=SecureAggregationConfig(norm_bound=1.0),
        dp=dp,
    )
    # A buffer fills with whoever comes, so the sample is not secret: the public gets
    # the coordinator's number, the unsampled Gaussian composed over the buffers of the
    # client that took part most (between 1 and r of the first r buffers).
    for released, metrics in enumerate(result.history, start=1):
        unsampled = [
            epsilon_for(noise_multiplier=1.0, sample_rate=1.0, rounds=k, delta=1e-5)
            for k in range(1, released + 1)
        ]
        assert metrics.epsilon == metrics.epsilon_coordinator
        assert any(metrics.epsilon == pytest.approx(e) for e in unsampled)
    amplified = epsilon_for(noise_multiplier=1.0, sample_rate=4 / 30, rounds=5, delta=1e-5)
    assert result.history[-1].epsilon is not None and result.history[-1].epsilon > amplified


class _GatheringSequential(SequentialExecutor):  # type: ignore[type-arg]
    """One client at a time, but asking the simulator for jobs seven at a time."""

    @property
    def preferred_batch(self) -> int:
        return 7


def test_training_finishing_tasks_ahead_together_changes_nothing() -> None:
    learner = mnist_learner("simple-cnn")
    data = _clients(30)
    config = AsyncSimulationConfig(
        buffered_spec(
            BufferConfig(buffer_size=3, max_staleness=1, max_versions=5, max_concurrency=10),
            plan=LocalTrainingPlan(max_batches=2),
        ),
        profiles=PROFILES,
    )

    def run(executor: SequentialExecutor) -> AsyncSimulationResult:  # type: ignore[type-arg]
        return simulate_async(
            learner, client_data=data, test_data=None, config=config, executor=executor
        )

    one = run(SequentialExecutor(learner, data))
    ahead = run(_GatheringSequential(learner, data))

    assert one.refused_stale > 0  # some updates trained ahead are then refused
    assert (ahead.accepted, ahead.refused_stale, ahead.dropped) == (
        one.accepted,
        one.refused_stale,
        one.dropped,
    )
    for name in one.final_weights:
        np.testing.assert_array_equal(ahead.final_weights[name], one.final_weights[name])


def test_the_default_executor_trains_batched_to_the_same_model() -> None:
    learner = mnist_learner("simple-cnn")
    data = _clients(30)
    config = AsyncSimulationConfig(
        buffered_spec(
            BufferConfig(buffer_size=4, max_staleness=2, max_versions=3, max_concurrency=8),
            plan=LocalTrainingPlan(max_batches=2),
        ),
        profiles=PROFILES,
    )

    batched = simulate_async(learner, client_data=data, test_data=None, config=config)
    one = simulate_async(
        learner,
        client_data=data,
        test_data=None,
        config=config,
        executor=SequentialExecutor(learner, data),
    )

    for name in one.final_weights:
        np.testing.assert_allclose(
            batched.final_weights[name], one.final_weights[name], rtol=1e-4, atol=1e-6
        )


def test_fedbuff_with_an_adaptive_server_optimiser_runs() -> None:
    result = _run(server_optimizer=ServerOptimizerConfig(name="fedyogi"), server_learning_rate=0.01)
    assert [m.round_id for m in result.history] == [1, 2, 3, 4, 5]
