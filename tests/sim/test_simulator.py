"""The in-process simulator drives the real protocol core."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import ArrayDataset, ClientPartitions, synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.sim.executor import SequentialExecutor
from veilfl.sim.simulator import SimulationConfig, SimulationResult, simulate
from veilfl.strategy.fedopt import FedAdam
from veilfl.strategy.settings import ServerOptimizerConfig
from veilfl.tensors import flatten, spec_of


def _clients(count: int) -> list:  # type: ignore[type-arg]
    data = synthetic_dataset(num_examples=100 * count, seed=0)
    return [data.subset(p) for p in partition_iid(len(data), count, seed=0)]


SPEC = spec_of(mnist_learner("simple-cnn").initial_weights(seed=0))


def test_simulation_learns_and_reports_every_round() -> None:
    seen = []
    result = simulate(
        mnist_learner("simple-cnn", seed=0),
        client_data=_clients(5),
        test_data=synthetic_dataset(num_examples=300, seed=9),
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(num_rounds=4, clients_per_round=5),
                plan=LocalTrainingPlan(learning_rate=0.05, momentum=0.5, batch_size=20, epochs=4),
            )
        ),
        on_round=seen.append,
    )
    assert [m.round_id for m in result.history] == [1, 2, 3, 4] == [m.round_id for m in seen]
    accuracy = [m.test_accuracy for m in result.history]
    assert accuracy[-1] is not None and accuracy[0] is not None
    assert accuracy[-1] > max(0.5, accuracy[0])
    assert result.timings.training > 0


def test_dropouts_close_rounds_at_the_deadline_with_fewer_clients() -> None:
    result = simulate(
        mnist_learner("simple-cnn", seed=0),
        client_data=_clients(20),
        test_data=None,
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(num_rounds=3, fraction=0.5, min_clients=2, round_timeout_s=5.0),
                plan=LocalTrainingPlan(max_batches=1),
                seed=4,
            ),
            dropout_probability=0.3,
        ),
    )
    assert len(result.history) == 3
    assert all(2 <= m.num_clients <= 10 for m in result.history)
    assert any(m.num_clients < 10 for m in result.history)


def test_same_seed_gives_the_same_model() -> None:
    def run() -> dict[str, np.ndarray]:
        return simulate(
            mnist_learner("simple-cnn", seed=1),
            client_data=_clients(4),
            test_data=None,
            config=SimulationConfig(
                RunSpec(
                    model_name="simulation",
                    rounds=RoundConfig(num_rounds=2, clients_per_round=2),
                    plan=LocalTrainingPlan(max_batches=2),
                    seed=3,
                )
            ),
        ).final_weights

    first, second = run(), run()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_no_clients_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least one"):
        simulate(
            mnist_learner(),
            client_data=[],
            test_data=None,
            config=SimulationConfig(
                RunSpec(
                    model_name="simulation", rounds=RoundConfig(num_rounds=1, clients_per_round=1)
                )
            ),
        )


def test_secure_simulation_matches_plaintext_and_survives_a_down_aggregator() -> None:
    from veilfl.secagg.config import SecureAggregationConfig
    from veilfl.secagg.contribution import ContributionLayout

    def run(secure: SecureAggregationConfig | None, down: frozenset[int]) -> dict[str, np.ndarray]:
        return simulate(
            mnist_learner("simple-cnn", seed=1),
            client_data=_clients(4),
            test_data=None,
            config=SimulationConfig(
                RunSpec(
                    model_name="simulation",
                    rounds=RoundConfig(num_rounds=2, clients_per_round=4),
                    plan=LocalTrainingPlan(max_batches=2),
                    seed=3,
                ),
                secure=secure,
                aggregators_down=down,
            ),
        ).final_weights

    # m = 4, t = 2: the quorum of 3 certifies each round with aggregator 2 down.
    config = SecureAggregationConfig(num_aggregators=4, max_samples_per_client=100)
    # Each round's mean is off by under one rounding step per coordinate (stochastic
    # rounding of each client's update); two rounds, with room for the second round's
    # training to carry the first one's difference.
    model_size = sum(v.size for v in mnist_learner("simple-cnn").initial_weights(seed=1).values())
    tolerance = 2 * 2 / ContributionLayout(model_size, config).scale
    plain = run(None, frozenset())
    for down in (frozenset(), frozenset({2})):
        secure = run(config, down)
        for name in plain:
            np.testing.assert_allclose(secure[name], plain[name], atol=tolerance)


def test_a_secure_simulation_applies_the_aggregators_minimum_as_veilfl_server_does() -> None:
    """The in-process aggregators sum no fewer than 2 clients (an aggregator's default):
    a round of one is refused naming both flags; the default min_clients rises to 2."""
    from veilfl.errors import ConfigurationError
    from veilfl.secagg.config import SecureAggregationConfig

    def run(per_round: int) -> int:
        return (
            simulate(
                mnist_learner("simple-cnn", seed=1),
                client_data=_clients(2),
                test_data=None,
                config=SimulationConfig(
                    RunSpec(
                        model_name="simulation",
                        rounds=RoundConfig(num_rounds=1, clients_per_round=per_round),
                        plan=LocalTrainingPlan(max_batches=1),
                    ),
                    secure=SecureAggregationConfig(max_samples_per_client=100),
                ),
            )
            .history[-1]
            .num_clients
        )

    with pytest.raises(ConfigurationError) as caught:
        run(1)
    assert str(caught.value).startswith(
        "--clients-per-round 1 is below aggregator 1's --min-participants 2"
    )
    assert run(2) == 2


def test_rounds_in_virtual_time_wait_for_the_slowest_client_or_the_deadline() -> None:
    from veilfl.sim.profiles import ClientProfiles

    profiles = ClientProfiles(base_seconds=10.0, speed_sigma=1.5, jitter_sigma=0.0, seed=2)
    result = simulate(
        mnist_learner("simple-cnn", seed=0),
        client_data=_clients(12),
        test_data=None,
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(
                    num_rounds=4, clients_per_round=6, min_clients=2, round_timeout_s=20.0
                ),
                plan=LocalTrainingPlan(max_batches=1),
            ),
            profiles=profiles,
        ),
    )
    speeds = profiles.speeds(12) * 10.0
    assert all(m.seconds <= 20.0 + 0.5 for m in result.history)  # + real aggregation time
    # Clients slower than the deadline never make it into a round.
    too_slow = int((speeds > 20.0).sum())
    assert too_slow > 0
    assert any(m.num_clients < 6 for m in result.history)


def _one_round(**settings: object) -> SimulationResult:  # type: ignore[type-arg]
    spec = RunSpec(
        model_name="simulation",
        rounds=RoundConfig(num_rounds=1, clients_per_round=3),
        **{  # type: ignore[arg-type]
            "plan": LocalTrainingPlan(learning_rate=0.1, max_batches=2, batch_size=10),
            "seed": 5,
            **settings,
        },
    )
    data = _clients(4)
    learner = mnist_learner("simple-cnn")
    return simulate(
        learner,
        client_data=data,
        test_data=None,
        config=SimulationConfig(spec),
        executor=SequentialExecutor(learner, data),
    )


def test_an_adaptive_server_optimiser_steps_on_the_rounds_mean_delta() -> None:
    start = mnist_learner("simple-cnn").initial_weights(seed=5)
    spec = SPEC
    plain = _one_round()  # server learning rate 1: the new model is start + mean delta
    mean = flatten(plain.final_weights, spec).astype(np.float64) - flatten(start, spec)

    adam = _one_round(
        server_learning_rate=0.01,
        server_optimizer=ServerOptimizerConfig(name="fedadam", tau=0.1),
    )

    by_hand = FedAdam(server_learning_rate=0.01, tau=0.1).step(flatten(start, spec), mean)
    np.testing.assert_allclose(flatten(adam.final_weights, spec), by_hand, rtol=1e-5, atol=1e-7)


def test_fedprox_keeps_the_clients_closer_to_the_global_model() -> None:
    start = flatten(mnist_learner("simple-cnn").initial_weights(seed=5), SPEC)

    def moved(mu: float) -> float:
        plan = LocalTrainingPlan(learning_rate=0.1, epochs=3, batch_size=10, proximal_mu=mu)
        final = _one_round(plan=plan).final_weights
        return float(np.linalg.norm(flatten(final, SPEC) - start))

    assert moved(5.0) < 0.9 * moved(0.0)


def test_rounds_train_batched_by_default_and_match_one_at_a_time() -> None:
    data = _clients(6)
    learner = mnist_learner("simple-cnn")
    config = SimulationConfig(
        RunSpec(
            model_name="simulation",
            rounds=RoundConfig(num_rounds=2, clients_per_round=4),
            plan=LocalTrainingPlan(learning_rate=0.05, momentum=0.5, max_batches=3, batch_size=8),
            seed=2,
        )
    )
    trained: list[int] = []

    batched = simulate(
        learner,
        client_data=data,
        test_data=None,
        config=config,
        on_client_trained=lambda: trained.append(1),
    )
    one_by_one = simulate(
        learner,
        client_data=data,
        test_data=None,
        config=config,
        executor=SequentialExecutor(learner, data),
    )

    assert len(trained) == 8  # 4 clients in each of 2 rounds
    for name in batched.final_weights:
        np.testing.assert_allclose(
            batched.final_weights[name], one_by_one.final_weights[name], rtol=1e-4, atol=1e-6
        )


class _CountingPartitions(ClientPartitions):
    """Client partitions that count which clients' data were materialised."""

    def __init__(self, data: ArrayDataset, parts: list[np.ndarray]) -> None:
        super().__init__(data, parts)
        self.fetched: list[int] = []

    def __getitem__(self, index):  # type: ignore[no-untyped-def,override]
        if isinstance(index, int):
            self.fetched.append(index)
        return super().__getitem__(index)


def test_only_the_clients_a_round_trains_have_their_data_taken_out() -> None:
    data = synthetic_dataset(num_examples=400, seed=0)
    population = _CountingPartitions(data, partition_iid(len(data), 100, seed=0))
    learner = mnist_learner("simple-cnn")

    simulate(
        learner,
        client_data=population,
        test_data=None,
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(num_rounds=2, clients_per_round=5),
                plan=LocalTrainingPlan(max_batches=1),
            )
        ),
        executor=SequentialExecutor(learner, population),
    )

    assert len(population.fetched) == 10  # 5 per round, nothing for the other 95
    assert len(set(population.fetched)) >= 5


def test_a_device_can_be_chosen_and_a_missing_gpu_is_one_clear_error() -> None:
    config = SimulationConfig(
        RunSpec(
            model_name="simulation",
            rounds=RoundConfig(num_rounds=1, clients_per_round=2),
            plan=LocalTrainingPlan(max_batches=1),
        )
    )
    result = simulate(
        mnist_learner("simple-cnn"),
        client_data=_clients(2),
        test_data=None,
        config=config,
        device="cpu",
    )
    assert len(result.history) == 1
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the refusal is for machines without one")
    with pytest.raises(ConfigurationError, match="torch sees no CUDA GPU"):
        simulate(
            mnist_learner("simple-cnn"),
            client_data=_clients(2),
            test_data=None,
            config=config,
            device="cuda",
        )


def test_a_simulation_with_fewer_aggregators_up_than_the_quorum_is_refused_at_once() -> None:
    from veilfl.secagg.config import SecureAggregationConfig

    # m = 3, t = 2: the quorum is all three, so one aggregator down stops every round.
    with pytest.raises(ConfigurationError, match="fewer than the quorum of 3"):
        simulate(
            mnist_learner("simple-cnn", seed=1),
            client_data=_clients(4),
            test_data=None,
            config=SimulationConfig(
                RunSpec(
                    model_name="simulation", rounds=RoundConfig(num_rounds=1, clients_per_round=4)
                ),
                secure=SecureAggregationConfig(max_samples_per_client=100),
                aggregators_down=frozenset({2}),
            ),
        )
