"""DP-FedAvg in the simulator: every noise placement trains, reports and stops on budget."""

from __future__ import annotations

import pytest

from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.privacy.accountant import epsilon_for
from veilfl.privacy.clipping import AdaptiveClipping
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.sim.simulator import SimulationConfig, SimulationResult, simulate


def _run(dp: DpConfig, *, secure: bool, rounds: int = 3) -> SimulationResult:  # type: ignore[type-arg]
    data = synthetic_dataset(num_examples=1000, seed=0)
    clients = [data.subset(p) for p in partition_iid(len(data), 20, seed=0)]
    return simulate(
        mnist_learner("simple-cnn", seed=0),
        client_data=clients,
        test_data=synthetic_dataset(num_examples=200, seed=1),
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(num_rounds=rounds, fraction=0.5, min_clients=5),
                plan=LocalTrainingPlan(max_batches=2),
                dp=dp,
            ),
            secure=SecureAggregationConfig(norm_bound=dp.clip_norm) if secure else None,
        ),
    )


@pytest.mark.parametrize(
    ("placement", "secure"),
    [
        ("central", False),
        ("central", True),
        ("distributed", True),
        ("local", False),
        ("local", True),
    ],
)
def test_each_placement_runs_and_reports_the_accountants_epsilon(
    placement: str, secure: bool
) -> None:
    dp = DpConfig(placement=placement, noise_multiplier=1.0, clip_norm=1.0, min_clients=5)  # type: ignore[arg-type]
    result = _run(dp, secure=secure)
    epsilons = [m.epsilon for m in result.history]
    expected = [
        epsilon_for(noise_multiplier=1.0, sample_rate=0.5, rounds=r, delta=dp.delta)
        for r in (1, 2, 3)
    ]
    assert epsilons == pytest.approx(expected)


def test_training_stops_when_the_budget_is_spent() -> None:
    budget = epsilon_for(noise_multiplier=1.0, sample_rate=0.5, rounds=2, delta=1e-5) * 1.01
    dp = DpConfig(placement="central", noise_multiplier=1.0, clip_norm=1.0, target_epsilon=budget)
    result = _run(dp, secure=True, rounds=10)
    assert len(result.history) == 2
    assert all(m.epsilon is not None and m.epsilon <= budget for m in result.history)


def test_adaptive_clipping_runs_with_distributed_noise() -> None:
    dp = DpConfig(
        placement="distributed",
        noise_multiplier=0.8,
        clip_norm=0.01,
        min_clients=5,
        adaptive=AdaptiveClipping(target_quantile=0.5, learning_rate=0.5),
        count_stddev=2.0,
    )
    result = _run(dp, secure=True)
    assert len(result.history) == 3


def test_distributed_noise_without_secure_aggregation_is_refused() -> None:
    dp = DpConfig(placement="distributed", noise_multiplier=1.0, clip_norm=1.0)
    with pytest.raises(ConfigurationError, match="needs secure aggregation"):
        _run(dp, secure=False)


def test_a_configuration_without_noise_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="turn differential privacy off explicitly"):
        DpConfig(placement="central", noise_multiplier=0.0, clip_norm=1.0)


@pytest.mark.parametrize("placement", ["central", "distributed", "local"])
def test_clients_clip_to_the_round_plan_under_secure_aggregation(placement: str) -> None:
    import numpy as np

    from veilfl.tensors import flatten, spec_of

    clip = 1e-4
    dp = DpConfig(placement=placement, noise_multiplier=1e-3, clip_norm=clip, min_clients=5)  # type: ignore[arg-type]
    result = _run(dp, secure=True)
    start = mnist_learner("simple-cnn", seed=0).initial_weights(seed=0)
    spec = spec_of(start)
    moved = np.linalg.norm(flatten(result.final_weights, spec) - flatten(start, spec))
    # Three rounds of a mean of updates clipped to 1e-4 (plus negligible noise) move the
    # model by about 3e-4; unclipped SGD updates would move it by orders of magnitude more.
    assert moved < 3 * clip * 2
