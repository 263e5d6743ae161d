"""Training executors: batched equals sequential, the fall-back is said once, and
memory is bounded by the jobs in flight."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from torch import nn

import veilfl.sim.executor as executor_module
from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import ArrayDataset, synthetic_dataset
from veilfl.ml.learner import (
    Learner,
    LocalUpdate,
    TrainOutcome,
    derive_seed,
    evaluate_array_dataset,
    sgd_learner,
    sgd_train,
)
from veilfl.ml.local_data import as_local_data, hold_out
from veilfl.ml.weights import set_weights
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.sim.executor import BatchedExecutor, SequentialExecutor, TrainingJob


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def _population(sizes: list[int]) -> list[ArrayDataset]:
    return [
        synthetic_dataset(num_examples=n, seed=k, num_classes=3, image_shape=(1, 4, 4))
        for k, n in enumerate(sizes)
    ]


PLAN = LocalTrainingPlan(learning_rate=0.1, momentum=0.9, epochs=2, batch_size=4, proximal_mu=0.1)


def _jobs(learner: Learner[ArrayDataset], clients: list[int]) -> list[TrainingJob]:
    weights = learner.initial_weights(seed=0)
    return [
        TrainingJob(
            client_index=i, model_version=3, weights=weights, plan=PLAN, seed=derive_seed(7, 3, i)
        )
        for i in clients
    ]


def _assert_close(a: list[LocalUpdate], b: list[LocalUpdate]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.num_samples == y.num_samples
        assert x.mean_loss == pytest.approx(y.mean_loss, rel=1e-5)
        for name in y.delta:
            np.testing.assert_allclose(x.delta[name], y.delta[name], rtol=1e-4, atol=1e-6)


def test_batched_executor_matches_sequential_for_the_same_seeds() -> None:
    learner = sgd_learner(_tiny)
    data = _population([5, 17, 9, 30, 12])
    jobs = _jobs(learner, [3, 0, 4, 1])

    batched = BatchedExecutor(learner, data, max_clients=3)
    sequential = SequentialExecutor(learner, data).train(jobs)

    assert batched.batched
    _assert_close(batched.train(jobs), sequential)
    assert [u.num_samples for u in sequential] == [30, 5, 12, 17]


def test_both_executors_train_on_the_split_and_evaluate_the_received_model() -> None:
    # Arrange: clients holding evaluation splits (and one bare data set).
    learner = sgd_learner(_tiny)
    bare = _population([5, 17, 9, 30])
    data = [hold_out(d, fraction=0.25, seed=k) for k, d in enumerate(bare[:3])] + [bare[3]]
    jobs = _jobs(learner, [0, 3, 2, 1])
    # Act
    batched = BatchedExecutor(learner, data, max_clients=3).train(jobs)
    sequential = SequentialExecutor(learner, data).train(jobs)
    # Assert: training used the train split only; the evaluation is of the job's weights.
    _assert_close(batched, sequential)
    model = learner.new_model()
    set_weights(model, jobs[0].weights)
    for job, update in zip(jobs, batched, strict=True):
        local = as_local_data(data[job.client_index])
        assert update.num_samples == len(local.train)
        if local.evaluation is None:
            assert update.evaluation is None
            continue
        expected = learner.evaluate_fn(model, local.evaluation)
        assert update.evaluation is not None
        assert update.evaluation.examples == len(local.evaluation)
        assert update.evaluation.loss == pytest.approx(expected.loss, rel=1e-5)
        assert update.evaluation == sequential[jobs.index(job)].evaluation


def test_sequential_executor_is_repeatable_and_seeds_each_job() -> None:
    learner = sgd_learner(_tiny)
    data = _population([12, 12])
    first = SequentialExecutor(learner, data).train(_jobs(learner, [0, 1]))
    again = SequentialExecutor(learner, data).train(_jobs(learner, [0, 1]))
    for x, y in zip(first, again, strict=True):
        for name in x.delta:
            np.testing.assert_array_equal(x.delta[name], y.delta[name])


def _custom_learner() -> Learner[ArrayDataset]:
    def train(model: nn.Module, data: ArrayDataset, plan: LocalTrainingPlan) -> TrainOutcome:
        return sgd_train(model, data, plan, seed=5)

    return Learner(model_fn=_tiny, train_fn=train, evaluate_fn=evaluate_array_dataset)


def test_a_learner_that_cannot_be_batched_runs_sequentially_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    learner = _custom_learner()
    data = _population([8, 8, 8])
    jobs = _jobs(learner, [0, 1, 2])

    with caplog.at_level(logging.INFO, logger="veilfl.sim.executor"):
        executor = BatchedExecutor(learner, data)
        updates = executor.train(jobs) + executor.train(jobs)

    assert not executor.batched and "not veilfl's SGD trainer" in (executor.obstacle or "")
    assert [r.message for r in caplog.records].count(
        f"Training clients one at a time, not batched: {executor.obstacle}."
    ) == 1
    _assert_close(updates[:3], SequentialExecutor(learner, data).train(jobs))


def test_a_model_with_dropout_falls_back_to_sequential() -> None:
    learner = sgd_learner(lambda: nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, 3)))
    executor = BatchedExecutor(learner, _population([4]))
    assert not executor.batched and "Dropout" in (executor.obstacle or "")
    assert len(executor.train(_jobs(learner, [0]))) == 1


def test_batched_executor_trains_at_most_max_clients_at_once_and_lazily(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = executor_module.train_batched

    def spy(model, clients, *, device):  # type: ignore[no-untyped-def]
        calls.append(len(clients))
        return real(model, clients, device=device)

    monkeypatch.setattr(executor_module, "train_batched", spy)
    learner = sgd_learner(_tiny)
    stream = BatchedExecutor(learner, _population([4] * 5), max_clients=2).stream(
        _jobs(learner, [0, 1, 2, 3, 4])
    )

    next(stream)
    assert calls == [2]  # only the first chunk was trained to yield the first update
    assert len(list(stream)) == 4
    assert calls == [2, 2, 1]


def test_a_job_for_a_client_without_data_is_refused() -> None:
    learner = sgd_learner(_tiny)
    jobs = _jobs(learner, [2])
    for executor in (
        SequentialExecutor(learner, _population([4, 4])),
        BatchedExecutor(learner, _population([4, 4])),
    ):
        with pytest.raises(ConfigurationError, match="data for 2 clients"):
            executor.train(jobs)
    with pytest.raises(ConfigurationError, match="max_clients"):
        BatchedExecutor(learner, _population([4]), max_clients=0)
