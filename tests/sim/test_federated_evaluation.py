"""Federated evaluation through the simulator: clients evaluate the model they
received on their own evaluation split, and the round reports the example-weighted
means, in the clear and through the secure sum alike."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from veilfl.ml.datasets import ArrayDataset, synthetic_dataset
from veilfl.ml.learner import Learner, sgd_learner
from veilfl.ml.local_data import LocalData, hold_out
from veilfl.ml.partition import partition_iid
from veilfl.ml.weights import set_weights
from veilfl.privacy.dp_fedavg import DpConfig
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import EVAL_UNITS, LOSS_RANGE
from veilfl.sim.simulator import SimulationConfig, simulate
from veilfl.tensors import Weights


def _linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))


def _clients(count: int, *, fraction: float) -> list[LocalData[ArrayDataset]]:
    data = synthetic_dataset(num_examples=60 * count, seed=0)
    # Uneven splits, so an unweighted mean of the clients' accuracies would differ.
    return [
        hold_out(data.subset(p), fraction=fraction + 0.1 * (i % 4), seed=i)
        for i, p in enumerate(partition_iid(len(data), count, seed=0))
    ]


def _oracle(
    learner: Learner[ArrayDataset], weights: Weights, clients: list[LocalData[ArrayDataset]]
) -> tuple[float, float, float]:
    """Examples, example-weighted mean loss and accuracy, one client at a time."""
    model = learner.new_model()
    set_weights(model, weights)
    counts, losses, accuracies = [], [], []
    for client in clients:
        assert client.evaluation is not None
        result = learner.evaluate_fn(model, client.evaluation)
        counts.append(len(client.evaluation))
        losses.append(result.loss)
        accuracies.append(round(result.accuracy * len(client.evaluation)))
    total = float(sum(counts))
    return total, float(np.average(losses, weights=counts)), sum(accuracies) / total


@pytest.mark.parametrize("secure", [False, True], ids=["plaintext", "secure"])
def test_round_one_reports_the_example_weighted_evaluation_of_the_initial_model(
    secure: bool,
) -> None:
    # Arrange
    learner = sgd_learner(_linear, seed=0)
    initial = learner.initial_weights(seed=5)
    clients = _clients(4, fraction=0.2)
    # Act
    result = simulate(
        learner,
        client_data=clients,
        test_data=None,
        initial_weights=initial,
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(num_rounds=2, clients_per_round=4),
                plan=LocalTrainingPlan(max_batches=2),
                seed=3,
            ),
            secure=SecureAggregationConfig(max_samples_per_client=100) if secure else None,
        ),
    )
    # Assert: round 1 started from the initial model, which every client evaluated.
    examples, loss, accuracy = _oracle(learner, initial, clients)
    first, second = result.history
    assert first.federated_examples == examples
    assert first.federated_accuracy == pytest.approx(accuracy)
    # Secure: each client's loss sum is rounded to steps of 16 / EVAL_UNITS.
    tolerance = len(clients) * LOSS_RANGE / EVAL_UNITS / examples if secure else 1e-9
    assert first.federated_loss == pytest.approx(loss, abs=tolerance)
    # Round 2 evaluated round 1's model, which training moved.
    assert second.federated_examples == examples
    assert second.federated_accuracy != first.federated_accuracy or (
        second.federated_loss != first.federated_loss
    )


def test_clients_without_an_evaluation_split_report_no_federated_metrics() -> None:
    data = synthetic_dataset(num_examples=120, seed=0)
    result = simulate(
        sgd_learner(_linear, seed=0),
        client_data=[data.subset(p) for p in partition_iid(len(data), 2, seed=0)],
        test_data=None,
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(num_rounds=1, clients_per_round=2),
                plan=LocalTrainingPlan(max_batches=1),
            )
        ),
    )
    (metrics,) = result.history
    assert metrics.federated_examples is None
    assert metrics.federated_accuracy is None and metrics.federated_loss is None


@pytest.mark.parametrize(("secure", "reported"), [(True, False), (False, True)])
def test_under_dp_only_a_plaintext_run_reports_the_evaluation(secure: bool, reported: bool) -> None:
    # Under DP with secure aggregation the evaluation, like the training loss, is not
    # reported (nothing noises it); a plaintext run's trusted coordinator sees both.
    dp = DpConfig(placement="central", noise_multiplier=1.0, clip_norm=1.0, min_clients=5)
    result = simulate(
        sgd_learner(_linear, seed=0),
        client_data=_clients(10, fraction=0.2),
        test_data=None,
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(num_rounds=1, fraction=0.5, min_clients=5),
                plan=LocalTrainingPlan(max_batches=1),
                dp=dp,
            ),
            secure=SecureAggregationConfig(norm_bound=dp.clip_norm) if secure else None,
        ),
    )
    (metrics,) = result.history
    assert (metrics.federated_accuracy is not None) is reported
    assert (metrics.train_loss is not None) is reported
