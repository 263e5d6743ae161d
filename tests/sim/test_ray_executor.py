"""Ray executor on a local Ray instance (no cluster): the same updates as in process."""

from __future__ import annotations

import numpy as np
import pytest

from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import ArrayDataset, synthetic_dataset
from veilfl.ml.learner import LocalUpdate, derive_seed, mnist_learner
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.sim.executor import BatchedExecutor, SequentialExecutor, TrainingJob

ray = pytest.importorskip("ray")

from veilfl.sim.ray_executor import RayExecutor  # noqa: E402

LEARNER = mnist_learner("simple-cnn")
DATA: list[ArrayDataset] = [
    synthetic_dataset(num_examples=n, seed=k) for k, n in enumerate([12, 7, 20, 9, 16])
]
PLAN = LocalTrainingPlan(learning_rate=0.05, momentum=0.5, epochs=2, batch_size=5, proximal_mu=0.1)


def _jobs() -> list[TrainingJob]:
    first = LEARNER.initial_weights(seed=1)
    second = LEARNER.initial_weights(seed=2)
    return [
        TrainingJob(
            client_index=i,
            model_version=1 + k % 2,
            weights=first if k % 2 == 0 else second,
            plan=PLAN,
            seed=derive_seed(3, k, i),
        )
        for k, i in enumerate([4, 0, 2, 1, 3, 0])
    ]


def _assert_same(a: list[LocalUpdate], b: list[LocalUpdate], *, rtol: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.num_samples == y.num_samples
        assert x.mean_loss == pytest.approx(y.mean_loss, rel=rtol)
        for name in y.delta:
            assert x.delta[name].flags.writeable
            np.testing.assert_allclose(x.delta[name], y.delta[name], rtol=rtol, atol=1e-7)


def test_ray_and_in_process_executors_train_the_same_updates(local_ray: None) -> None:
    jobs = _jobs()
    expected = SequentialExecutor(LEARNER, DATA).train(jobs)

    with RayExecutor(LEARNER, DATA, num_workers=2, jobs_per_task=2) as executor:
        got = executor.train(jobs)

    _assert_same(got, expected, rtol=1e-5)
    assert ray.is_initialized()  # it did not start Ray, so it leaves it running


def test_batched_ray_actors_match_the_batched_executor(local_ray: None) -> None:
    jobs = _jobs()
    expected = BatchedExecutor(LEARNER, DATA).train(jobs)

    with RayExecutor(LEARNER, DATA, num_workers=1, batched=True) as executor:
        got = executor.train(jobs)

    _assert_same(got, expected, rtol=1e-4)


def test_asking_for_gpus_on_a_cluster_without_them_is_refused(local_ray: None) -> None:
    with pytest.raises(ConfigurationError, match="no GPU"):
        RayExecutor(LEARNER, DATA, gpus_per_client=0.5)


def test_jobs_for_unknown_clients_are_refused_before_anything_is_sent(local_ray: None) -> None:
    with RayExecutor(LEARNER, DATA, num_workers=1) as executor:
        job = TrainingJob(client_index=5, model_version=0, weights={}, plan=PLAN)
        with pytest.raises(ConfigurationError, match="data for 5 clients"):
            executor.train([job])
