"""Execution backends: the settings build the executor they name, and a simulation on
a local Ray instance ends on the same model as one in process, with the same seeds."""

from __future__ import annotations

import numpy as np
import pytest

from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import ClientPartitions, synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.protocol.buffered import BufferConfig
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.sim.async_simulator import AsyncSimulationConfig, buffered_spec, simulate_async
from veilfl.sim.backends import ExecutionSettings, build_executor
from veilfl.sim.executor import BatchedExecutor, SequentialExecutor
from veilfl.sim.profiles import ClientProfiles
from veilfl.sim.simulator import SimulationConfig, simulate
from veilfl.strategy.settings import ServerOptimizerConfig
from veilfl.tensors import Weights

LEARNER = mnist_learner("simple-cnn")


def _population(count: int) -> ClientPartitions:
    data = synthetic_dataset(num_examples=30 * count, seed=0)
    return ClientPartitions(data, partition_iid(len(data), count, seed=0))


def test_inprocess_settings_build_a_batched_or_sequential_executor() -> None:
    data = _population(3)
    batched = build_executor(LEARNER, data, ExecutionSettings(max_clients=7))
    sequential = build_executor(LEARNER, data, ExecutionSettings(batched=False))

    assert isinstance(batched, BatchedExecutor) and batched.preferred_batch == 7
    assert isinstance(sequential, SequentialExecutor) and sequential.preferred_batch == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backend": "dask"}, "--backend 'dask' is not known"),
        ({"max_clients": 0}, "--batch-clients must be at least 1"),
        ({"backend": "ray", "ray_cpus": 0.0}, "--ray-cpus must be more than 0"),
        ({"ray_gpus": 0.5}, "need --backend ray"),
    ],
)
def test_settings_out_of_range_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ExecutionSettings(**settings)  # type: ignore[arg-type]


SECURE = SecureAggregationConfig(max_samples_per_client=30)


def _same(a: Weights, b: Weights, *, rtol: float, atol: float) -> None:
    """Equal to float tolerance: Ray's actors run torch on one thread each, which sums
    convolutions in another order than this process's threads (last-bit differences)."""
    for name in b:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol)


def test_a_ray_simulation_ends_on_the_in_process_model(local_ray: None) -> None:
    """Skipped where Ray is not installed (the fixture skips)."""
    data = _population(8)
    plan = LocalTrainingPlan(learning_rate=0.05, momentum=0.5, max_batches=2, batch_size=10)
    rounds = SimulationConfig(
        RunSpec(
            model_name="simulation",
            rounds=RoundConfig(num_rounds=2, clients_per_round=4),
            plan=plan,
            seed=3,
            server_optimizer=ServerOptimizerConfig(name="fedyogi", tau=0.1),
            server_learning_rate=0.02,
        ),
        secure=SECURE,
    )
    buffers = AsyncSimulationConfig(
        buffered_spec(
            BufferConfig(buffer_size=3, max_staleness=2, max_versions=3, max_concurrency=5),
            plan=plan,
        ),
        profiles=ClientProfiles(base_seconds=5, speed_sigma=0.8, seed=1),
    )
    settings = ExecutionSettings(backend="ray", batched=False, ray_workers=2)

    with build_executor(LEARNER, data, settings) as on_ray:
        ray_rounds = simulate(
            LEARNER, client_data=data, test_data=None, config=rounds, executor=on_ray
        )
        ray_buffers = simulate_async(
            LEARNER, client_data=data, test_data=None, config=buffers, executor=on_ray
        )
    local = SequentialExecutor(LEARNER, data)
    here_rounds = simulate(LEARNER, client_data=data, test_data=None, config=rounds, executor=local)
    here_buffers = simulate_async(
        LEARNER, client_data=data, test_data=None, config=buffers, executor=local
    )

    # Secure aggregation rounds each client's update stochastically (under one step per
    # coordinate); FedYogi's step moves less than the mean delta does.
    size = sum(v.size for v in LEARNER.initial_weights().values())
    step = 1 / ContributionLayout(size, SECURE).scale
    _same(ray_rounds.final_weights, here_rounds.final_weights, rtol=1e-5, atol=2 * 2 * step)
    _same(ray_buffers.final_weights, here_buffers.final_weights, rtol=1e-5, atol=1e-7)
    import ray

    assert ray.is_initialized()  # it did not start Ray, so it leaves it running
