"""Where a simulation's local training runs: one client after another, many at once
on one device, or on a Ray cluster (:mod:`veilfl.sim.ray_executor`).

The simulators hand an executor the training work of a round (or of a batch of
asynchronous tasks) as :class:`TrainingJob` values and get one
:class:`~veilfl.ml.learner.LocalUpdate` back per job, in the same order::

    executor = BatchedExecutor(learner, client_data)
    jobs = [
        TrainingJob(client_index=i, model_version=v, weights=w, plan=plan,
                    seed=derive_seed(run_seed, round_id, i))
        for i in sampled
    ]
    for update in executor.stream(jobs):
        hand_in.deliver(...)

A job names its client's data by index into the ``client_data`` the executor was
given, so the population's data is never copied; what an executor holds at a time
is proportional to the jobs in flight (at most ``max_clients`` stacked clients for
:class:`BatchedExecutor`), and :meth:`TrainingExecutor.stream` yields each update as
soon as it and those before it are done. Protection (DP, secure aggregation) happens
after, on the updates, exactly as for any client.

With the same seeds, every executor trains the same updates: bitwise for
:class:`SequentialExecutor` (and Ray running it with as many torch threads), to
floating-point tolerance for :class:`BatchedExecutor` and across thread counts.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from torch import nn

from veilfl.errors import ConfigurationError
from veilfl.ml.batched_training import BatchedClient, batching_obstacle, train_batched
from veilfl.ml.datasets import ArrayDataset
from veilfl.ml.learner import Learner, LocalUpdate
from veilfl.ml.local_data import LocalData, as_local_data
from veilfl.ml.training import TrainConfig
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.metrics import FederatedEvaluation
from veilfl.tensors import Weights

__all__ = [
    "BatchedExecutor",
    "SequentialExecutor",
    "TrainingExecutor",
    "TrainingJob",
    "check_indices",
    "learner_batching_obstacle",
]

DataT = TypeVar("DataT")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class TrainingJob:
    """One client's local training: what to train, from where, and how.

    Attributes:
        client_index: Index of the client's data in the executor's ``client_data``.
        model_version: The global model version ``weights`` is (jobs on one version
            may share one ``weights`` object; executors send each version once).
        weights: The global weights training starts from.
        plan: The coordinator's local training plan.
        seed: Seeds veilfl's own trainer for this job (see
            :func:`~veilfl.ml.learner.derive_seed`); None draws a fresh one.
    """

    client_index: int
    model_version: int
    weights: Weights
    plan: LocalTrainingPlan
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.client_index < 0:
            raise ConfigurationError(f"client_index must be at least 0, not {self.client_index}.")


class TrainingExecutor(ABC):
    """Runs training jobs and returns their updates in job order."""

    @property
    def preferred_batch(self) -> int:
        """How many jobs it likes to be given at once: 1 when it trains one at a time
        anyway, more when it trains jobs together or in parallel. A simulator that
        could hand in jobs one by one (the asynchronous one) gathers this many."""
        return 1

    @abstractmethod
    def stream(self, jobs: Sequence[TrainingJob]) -> Iterator[LocalUpdate]:
        """Train ``jobs``; yield one update per job, in job order, as they are done.

        Raises:
            ConfigurationError: for a job naming a client the executor has no data for.
        """

    def train(self, jobs: Sequence[TrainingJob]) -> list[LocalUpdate]:
        """Train ``jobs``; one update per job, in job order."""
        return list(self.stream(jobs))

    def close(self) -> None:  # noqa: B027 (most executors hold nothing to release)
        """Release what the executor holds (workers, a Ray instance it started)."""

    def __enter__(self) -> TrainingExecutor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def check_indices(jobs: Sequence[TrainingJob], population: int) -> None:
    """Refuse jobs that name a client outside ``0..population-1``.

    Raises:
        ConfigurationError: naming the client and the population.
    """
    for job in jobs:
        if job.client_index >= population:
            raise ConfigurationError(
                f"A training job names client {job.client_index}, but the executor holds "
                f"data for {population} clients (0 to {population - 1})."
            )


class SequentialExecutor(TrainingExecutor, Generic[DataT]):
    """One client after another, with one scratch model on the learner's device.

    Args:
        learner: How to build and train the model.
        client_data: Every client's data, by index: a bare data set, or a
            :class:`~veilfl.ml.local_data.LocalData` whose evaluation split (if any)
            the client evaluates the global model on before it trains.
    """

    def __init__(
        self, learner: Learner[DataT], client_data: Sequence[DataT | LocalData[DataT]]
    ) -> None:
        self.learner = learner
        self.client_data = client_data
        self._scratch: nn.Module | None = None

    def stream(self, jobs: Sequence[TrainingJob]) -> Iterator[LocalUpdate]:
        """Train each job in turn on the learner's device."""
        check_indices(jobs, len(self.client_data))
        if self._scratch is None:
            self._scratch = self.learner.new_model()
        for job in jobs:
            local = as_local_data(self.client_data[job.client_index])
            yield self.learner.local_update(
                self._scratch,
                job.weights,
                local.train,
                job.plan,
                seed=job.seed,
                evaluate_on=local.evaluation,
            )


def learner_batching_obstacle(
    learner: Learner[DataT], client_data: Sequence[DataT | LocalData[DataT]]
) -> str | None:
    """Why ``learner``'s clients cannot train together, in a phrase; None if they can."""
    if learner.local_sgd is None:
        return "the learner's train_fn is not veilfl's SGD trainer (use sgd_learner)"
    if len(client_data) and not isinstance(as_local_data(client_data[0]).train, ArrayDataset):
        return "the client data are not ArrayDataset"
    reason = batching_obstacle(learner.model_fn())
    return None if reason is None else f"the model cannot be batched: {reason}"


def _config(plan: LocalTrainingPlan, seed: int | None) -> TrainConfig:
    return TrainConfig(
        learning_rate=plan.learning_rate,
        momentum=plan.momentum,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        max_batches=plan.max_batches,
        proximal_mu=plan.proximal_mu,
        seed=seed if seed is not None else int.from_bytes(os.urandom(8), "little"),
    )


class BatchedExecutor(TrainingExecutor, Generic[DataT]):
    """Many clients at once on the learner's device, with ``torch.func``
    (:func:`~veilfl.ml.batched_training.train_batched`).

    It batches learners made by :func:`~veilfl.ml.learner.sgd_learner` (or
    :func:`~veilfl.ml.learner.mnist_learner`) on :class:`ArrayDataset` data, whose
    model has no buffers and no randomness. Any other learner is trained one client at
    a time, as :class:`SequentialExecutor` would, and the log says so once.

    Batching pays on a GPU, where one client's small batches leave it idle; on a
    CPU, batched convolutions can be slower than sequential ones (measure with
    ``benchmarks/simulation_speed.py``).

    Args:
        learner: How to build and train the model.
        client_data: Every client's data, by index.
        max_clients: At most this many clients train together (memory: their data
            and two or three copies of the model each).
    """

    def __init__(
        self,
        learner: Learner[DataT],
        client_data: Sequence[DataT | LocalData[DataT]],
        *,
        max_clients: int = 100,
    ) -> None:
        if max_clients < 1:
            raise ConfigurationError(f"max_clients must be at least 1, not {max_clients}.")
        self.learner = learner
        self.client_data = client_data
        self.max_clients = max_clients
        self._sequential = SequentialExecutor(learner, client_data)
        self._model: nn.Module | None = None
        self._evaluator: nn.Module | None = None
        self.obstacle = self._obstacle()
        if self.obstacle is not None:
            logger.info("Training clients one at a time, not batched: %s.", self.obstacle)

    def _obstacle(self) -> str | None:
        return learner_batching_obstacle(self.learner, self.client_data)

    @property
    def batched(self) -> bool:
        """Whether jobs are trained together (False: one at a time, see :attr:`obstacle`)."""
        return self.obstacle is None

    @property
    def preferred_batch(self) -> int:
        """``max_clients`` when batched, else 1."""
        return self.max_clients if self.batched else 1

    def stream(self, jobs: Sequence[TrainingJob]) -> Iterator[LocalUpdate]:
        """Train up to ``max_clients`` jobs at a time; yield their updates in order."""
        if not self.batched:
            yield from self._sequential.stream(jobs)
            return
        check_indices(jobs, len(self.client_data))
        if self._model is None:
            self._model = self.learner.new_model()
        for start in range(0, len(jobs), self.max_clients):
            chunk = jobs[start : start + self.max_clients]
            clients = [
                BatchedClient(
                    data=self._data(job.client_index),
                    weights=job.weights,
                    config=_config(job.plan, job.seed),
                )
                for job in chunk
            ]
            # Federated evaluation of the weights each client received, before training.
            evaluations = [self._evaluation(job) for job in chunk]
            results = train_batched(self._model, clients, device=self.learner.device)
            for result, evaluation in zip(results, evaluations, strict=True):
                yield LocalUpdate(
                    delta=result.delta,
                    num_samples=result.num_samples,
                    mean_loss=result.mean_loss,
                    evaluation=evaluation,
                )

    def _evaluation(self, job: TrainingJob) -> FederatedEvaluation | None:
        held_out = as_local_data(self.client_data[job.client_index]).evaluation
        if held_out is None:
            return None
        if self._evaluator is None:
            self._evaluator = self.learner.new_model()
        return self.learner.evaluate_received(self._evaluator, job.weights, held_out)

    def _data(self, index: int) -> ArrayDataset:
        data: Any = as_local_data(self.client_data[index]).train
        if not isinstance(data, ArrayDataset):
            raise ConfigurationError(
                f"Client {index}'s data is a {type(data).__name__}, not an ArrayDataset; "
                "batched training needs ArrayDataset for every client."
            )
        return data
