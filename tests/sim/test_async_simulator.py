"""Asynchronous simulation: FedBuff with slow, dropping and late clients."""

from __future__ import annotations

import numpy as np
import pytest

from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.privacy.accountant import epsilon_for
from veilfl.privacy.dp_fedavg import DpConfig
from veilfl.protocol.buffered import BufferConfig, BufferMode
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.sim.async_simulator import AsyncSimulationConfig, simulate_async
from veilfl.sim.profiles import ClientProfiles

PROFILES = ClientProfiles(
    base_seconds=5, speed_sigma=0.8, dropout=0.1, late_fraction=0.3, late_by_seconds=20, seed=1
)


def _clients(count: int) -> list:  # type: ignore[type-arg]
    data = synthetic_dataset(num_examples=40 * count, seed=0)
    return [data.subset(p) for p in partition_iid(len(data), count, seed=0)]


def _run(**overrides: object):  # type: ignore[no-untyped-def]
    settings: dict[str, object] = {
        "buffer": BufferConfig(buffer_size=4, max_staleness=2, max_versions=5, max_concurrency=10),
        "profiles": PROFILES,
        "plan": LocalTrainingPlan(max_batches=2),
    }
    settings.update(overrides)
    return simulate_async(
        mnist_learner("simple-cnn", seed=0),
        client_data=_clients(30),
        test_data=None,
        config=AsyncSimulationConfig(**settings),  # type: ignore[arg-type]
    )


def test_fedbuff_releases_every_buffer_with_k_updates_despite_stragglers() -> None:
    result = _run()
    assert [m.round_id for m in result.history] == [1, 2, 3, 4, 5]
    assert all(m.num_clients == 4 for m in result.history)
    assert result.accepted == 20
    assert result.dropped > 0


def test_secure_aggregation_per_buffer_gives_the_plaintext_model() -> None:
    plain = _run()
    secure = _run(secure=SecureAggregationConfig(max_clients=8, max_samples_per_client=40))
    for name in plain.final_weights:
        np.testing.assert_allclose(secure.final_weights[name], plain.final_weights[name], atol=1e-5)
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
