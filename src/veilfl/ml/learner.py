"""A :class:`Learner` says how to build, train and evaluate a model: the one thing a
user writes to federate their own ``torch.nn.Module`` with their own data.

Example::

    learner = Learner(
        model_fn=MyNet,                        # () -> torch.nn.Module
        train_fn=my_train,                     # (model, data, plan) -> TrainOutcome
        evaluate_fn=my_evaluate,               # (model, data) -> Evaluation
    )

``train_fn`` trains ``model`` in place on one client's ``data``; the library computes
the model delta itself, so any training loop works. The default learner for MNIST
(:func:`mnist_learner`) uses :func:`veilfl.ml.training.train_local`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import nn

from veilfl.ml.datasets import ArrayDataset
from veilfl.ml.models import build_model
from veilfl.ml.training import TrainConfig, TrainProgress, evaluate, train_local
from veilfl.ml.weights import get_weights, set_weights
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.metrics import Evaluation
from veilfl.tensors import Weights

__all__ = [
    "Learner",
    "LocalUpdate",
    "TrainOutcome",
    "evaluate_array_dataset",
    "mnist_learner",
    "sgd_learner",
    "sgd_train",
]

DataT = TypeVar("DataT")


@dataclass(frozen=True)
class TrainOutcome:
    """What a training function reports: examples used (the FedAvg weight), loss and,
    for sample-level DP training, the client's own epsilon so far."""

    num_samples: int
    mean_loss: float
    epsilon: float | None = None


@dataclass(frozen=True)
class LocalUpdate:
    """One client's contribution to a round, before any protection is applied.

    Attributes:
        delta: Local weights minus the global weights it started from.
        num_samples: Examples trained on.
        mean_loss: Mean local training loss.
        epsilon: The client's sample-level epsilon so far (DP-SGD), if any.
    """

    delta: Weights
    num_samples: int
    mean_loss: float
    epsilon: float | None = None


TrainFn = Callable[[nn.Module, DataT, LocalTrainingPlan], TrainOutcome]
EvaluateModelFn = Callable[[nn.Module, DataT], Evaluation]


@dataclass(frozen=True)
class Learner(Generic[DataT]):
    """How to build, train and evaluate a model on data of type ``DataT``.

    Attributes:
        model_fn: Builds a fresh model (same architecture on every party).
        train_fn: Trains a model in place on local data with the coordinator's plan.
        evaluate_fn: Loss and accuracy of a model on some data.
    """

    model_fn: Callable[[], nn.Module]
    train_fn: TrainFn[DataT]
    evaluate_fn: EvaluateModelFn[DataT]

    def initial_weights(self, *, seed: int | None = None) -> Weights:
        """Weights of a freshly built model (seeded for repeatable runs)."""
        if seed is None:
            return get_weights(self.model_fn())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_weights(self.model_fn())

    def local_update(
        self, model: nn.Module, global_weights: Weights, data: DataT, plan: LocalTrainingPlan
    ) -> LocalUpdate:
        """Train ``model`` from ``global_weights`` on ``data``; return the delta.

        ``model`` is a scratch instance from :attr:`model_fn`, reused across rounds.
        """
        set_weights(model, global_weights)
        outcome = self.train_fn(model, data, plan)
        trained = get_weights(model)
        delta = {
            name: (trained[name] - global_weights[name]).astype(np.float32)
            for name in global_weights
        }
        return LocalUpdate(
            delta=delta,
            num_samples=outcome.num_samples,
            mean_loss=outcome.mean_loss,
            epsilon=outcome.epsilon,
        )

    def evaluator(self, data: DataT) -> Callable[[Weights], Evaluation]:
        """A function that evaluates weights on ``data`` (for server-side evaluation)."""
        model = self.model_fn()

        def evaluate_weights(weights: Weights) -> Evaluation:
            set_weights(model, weights)
            return self.evaluate_fn(model, data)

        return evaluate_weights


def sgd_train(
    model: nn.Module,
    data: ArrayDataset,
    plan: LocalTrainingPlan,
    *,
    seed: int | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainOutcome:
    """Plain SGD on an :class:`ArrayDataset` with the plan's hyper-parameters."""
    config = TrainConfig(
        learning_rate=plan.learning_rate,
        momentum=plan.momentum,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        max_batches=plan.max_batches,
        seed=seed,
    )
    result = train_local(model, data, config, progress=progress)
    return TrainOutcome(num_samples=result.num_samples, mean_loss=result.mean_loss)


def evaluate_array_dataset(model: nn.Module, data: ArrayDataset) -> Evaluation:
    """Loss and accuracy on an :class:`ArrayDataset`."""
    result = evaluate(model, data)
    return Evaluation(loss=result.loss, accuracy=result.accuracy)


def sgd_learner(
    model_fn: Callable[[], nn.Module],
    *,
    seed: int | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> Learner[ArrayDataset]:
    """A learner for any classifier on :class:`ArrayDataset` data: local training is
    plain SGD with the coordinator's plan (cross-entropy loss), evaluation is loss and
    accuracy.

    Args:
        model_fn: Builds the model; it maps a batch of the data's images to class logits.
        seed: Seeds local shuffling, for repeatable runs: the k-th training call uses
            a seed derived from (seed, k), so rounds and clients do not all shuffle alike.
        progress: Called with training progress.
    """
    calls = itertools.count()

    def train(model: nn.Module, data: ArrayDataset, plan: LocalTrainingPlan) -> TrainOutcome:
        call_seed = None
        if seed is not None:
            call_seed = int.from_bytes(
                hashlib.sha256(f"{seed}:{next(calls)}".encode()).digest()[:8], "little"
            )
        return sgd_train(model, data, plan, seed=call_seed, progress=progress)

    return Learner(model_fn=model_fn, train_fn=train, evaluate_fn=evaluate_array_dataset)


def mnist_learner(
    model_name: str = "simple-cnn",
    *,
    seed: int | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> Learner[ArrayDataset]:
    """The built-in learner: a registered model trained with plain SGD
    (:func:`sgd_learner`).

    Args:
        model_name: A name from :data:`veilfl.ml.models.MODELS`.
        seed: Seeds local shuffling (see :func:`sgd_learner`).
        progress: Called with training progress.

    Raises:
        ConfigurationError: for an unknown model name.
    """
    build_model(model_name)  # fail early on an unknown name
    return sgd_learner(lambda: build_model(model_name), seed=seed, progress=progress)
