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
(:func:`mnist_learner`) uses :func:`veilfl.ml.training.train_local`, as does any
learner from :func:`sgd_learner`; such learners carry a :class:`LocalSgd` marker,
which lets the simulator's executors seed each client's training and train many
clients at once (:mod:`veilfl.sim.executor`).

A learner trains and evaluates on its :attr:`Learner.device`::

    learner = mnist_learner("mnist-cnn").on(resolve_device("auto"))

Weights that leave it are float32 numpy arrays on the CPU, whatever the device.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sized
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import nn

from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import ArrayDataset
from veilfl.ml.device import resolve_device
from veilfl.ml.local_data import LocalData
from veilfl.ml.models import build_model
from veilfl.ml.training import TrainConfig, TrainProgress, evaluate, train_local
from veilfl.ml.weights import get_weights, set_weights
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.metrics import Evaluation, FederatedEvaluation
from veilfl.tensors import Weights

__all__ = [
    "Learner",
    "LocalSgd",
    "LocalUpdate",
    "TrainOutcome",
    "derive_seed",
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
        evaluation: The client's federated evaluation of the global weights it started
            from, on its own evaluation split; None when it has none.
    """

    delta: Weights
    num_samples: int
    mean_loss: float
    epsilon: float | None = None
    evaluation: FederatedEvaluation | None = None


TrainFn = Callable[[nn.Module, DataT, LocalTrainingPlan], TrainOutcome]
EvaluateModelFn = Callable[[nn.Module, DataT], Evaluation]


@dataclass(frozen=True)
class LocalSgd:
    """Marks a learner whose ``train_fn`` is veilfl's own SGD trainer on
    :class:`~veilfl.ml.datasets.ArrayDataset` (:func:`sgd_train`, plain or with
    momentum, FedProx and a step cap), so that executors may seed it per client and
    train many clients at once with ``torch.func``.

    Attributes:
        progress: Passed to :func:`~veilfl.ml.training.train_local` when one client
            trains at a time.
    """

    progress: Callable[[TrainProgress], None] | None = None


def _cpu() -> torch.device:
    return torch.device("cpu")


@dataclass(frozen=True)
class Learner(Generic[DataT]):
    """How to build, train and evaluate a model on data of type ``DataT``.

    Attributes:
        model_fn: Builds a fresh model (same architecture on every party).
        train_fn: Trains a model in place on local data with the coordinator's plan.
        evaluate_fn: Loss and accuracy of a model on some data.
        device: Where models train and evaluate (see :meth:`on`); CPU by default.
        local_sgd: Set when ``train_fn`` is veilfl's SGD trainer (:func:`sgd_learner`).
        load_data: How a client reads its own data from what ``--data`` names (its
            training and evaluation splits); None: veilfl's data sources
            (:mod:`veilfl.ml.data_sources`) read it. A ``--learner`` module may define
            ``load_data(path)`` instead.
    """

    model_fn: Callable[[], nn.Module]
    train_fn: TrainFn[DataT]
    evaluate_fn: EvaluateModelFn[DataT]
    device: torch.device = field(default_factory=_cpu)
    local_sgd: LocalSgd | None = None
    load_data: Callable[[str], LocalData[DataT]] | None = None

    def on(self, device: str | torch.device) -> Learner[DataT]:
        """The same learner on ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

        Raises:
            ConfigurationError: for an unknown device or a GPU torch does not see.
        """
        return dataclasses.replace(self, device=resolve_device(device))

    def new_model(self) -> nn.Module:
        """A fresh model from :attr:`model_fn`, on :attr:`device`."""
        return self.model_fn().to(self.device)

    def initial_weights(self, *, seed: int | None = None) -> Weights:
        """Weights of a freshly built model (seeded for repeatable runs; built on the
        CPU, so the same seed gives the same weights on every device)."""
        if seed is None:
            return get_weights(self.model_fn())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return get_weights(self.model_fn())

    def local_update(
        self,
        model: nn.Module,
        global_weights: Weights,
        data: DataT,
        plan: LocalTrainingPlan,
        *,
        seed: int | None = None,
        evaluate_on: DataT | None = None,
    ) -> LocalUpdate:
        """Train ``model`` from ``global_weights`` on ``data``; return the delta.

        With ``evaluate_on``, the global weights are first evaluated on it (federated
        evaluation, :meth:`evaluate_received`), so the update carries the evaluation
        of the model the client received.

        ``model`` is a scratch instance from :attr:`model_fn` (or :meth:`new_model`),
        reused across rounds; it is moved to :attr:`device` if it is elsewhere.

        Args:
            model: The scratch model.
            global_weights: Where training starts.
            data: The client's data.
            plan: The coordinator's hyper-parameters.
            seed: Seeds veilfl's own trainer for this call (learners with
                :attr:`local_sgd`); None, or a custom ``train_fn``, seeds as it does.
            evaluate_on: The client's evaluation split, or None.

        Returns:
            The delta as float32 numpy arrays on the CPU, with the sample count.
        """
        evaluation = (
            None
            if evaluate_on is None
            else self.evaluate_received(model, global_weights, evaluate_on)
        )
        model.to(self.device)
        set_weights(model, global_weights)
        if self.local_sgd is not None and seed is not None:
            outcome = sgd_train(
                model,
                data,  # type: ignore[arg-type]
                plan,
                seed=seed,
                progress=self.local_sgd.progress,
            )
        else:
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
            evaluation=evaluation,
        )

    def evaluate_received(
        self, model: nn.Module, global_weights: Weights, data: DataT
    ) -> FederatedEvaluation | None:
        """Federated evaluation: ``global_weights`` on a client's own evaluation
        ``data``, as sums (examples, summed loss, correct predictions); None for
        empty data.

        ``model`` is a scratch instance from :attr:`model_fn`; ``data`` must have a
        length (its examples).

        Raises:
            ConfigurationError: if ``data`` has no length.
        """
        if not isinstance(data, Sized):
            raise ConfigurationError(
                f"Federated evaluation counts examples with len(); the evaluation data is a "
                f"{type(data).__name__}, which has no length. Give a data set with __len__."
            )
        examples = len(data)
        if examples == 0:
            return None
        model.to(self.device)
        set_weights(model, global_weights)
        result = self.evaluate_fn(model, data)
        return FederatedEvaluation.of_means(
            loss=result.loss, accuracy=result.accuracy, examples=examples
        )

    def evaluator(self, data: DataT) -> Callable[[Weights], Evaluation]:
        """A function that evaluates weights on ``data`` (for server-side evaluation),
        on :attr:`device`."""
        model = self.new_model()

        def evaluate_weights(weights: Weights) -> Evaluation:
            set_weights(model, weights)
            return self.evaluate_fn(model, data)

        return evaluate_weights


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 64-bit seed for one training call, derived from a run's ``seed`` and the
    call's coordinates (say, a round and a client), so that calls neither share a
    shuffle nor depend on the order they run in."""
    text = ":".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def sgd_train(
    model: nn.Module,
    data: ArrayDataset,
    plan: LocalTrainingPlan,
    *,
    seed: int | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainOutcome:
    """SGD (with the plan's momentum and FedProx mu) on an :class:`ArrayDataset`."""
    config = TrainConfig(
        learning_rate=plan.learning_rate,
        momentum=plan.momentum,
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        max_batches=plan.max_batches,
        proximal_mu=plan.proximal_mu,
        seed=seed,
    )
    result = train_local(model, data, config, progress=progress)
    return TrainOutcome(num_samples=result.num_samples, mean_loss=result.mean_loss)


def evaluate_array_dataset(model: nn.Module, data: ArrayDataset) -> Evaluation:
    """Loss and accuracy on an :class:`ArrayDataset`."""
    result = evaluate(model, data)
    return Evaluation(loss=result.loss, accuracy=result.accuracy)


@dataclass
class _SeededSgd:
    """:func:`sgd_train` whose k-th call is seeded with ``derive_seed(seed, k)``."""

    seed: int | None
    progress: Callable[[TrainProgress], None] | None
    calls: int = 0

    def __call__(
        self, model: nn.Module, data: ArrayDataset, plan: LocalTrainingPlan
    ) -> TrainOutcome:
        call_seed = None if self.seed is None else derive_seed(self.seed, self.calls)
        self.calls += 1
        return sgd_train(model, data, plan, seed=call_seed, progress=self.progress)


def sgd_learner(
    model_fn: Callable[[], nn.Module],
    *,
    seed: int | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    device: str | torch.device = "cpu",
) -> Learner[ArrayDataset]:
    """A learner that trains ``model_fn``'s model with veilfl's SGD trainer
    (cross-entropy; the plan's learning rate, momentum, epochs, batch size, step
    cap and FedProx mu) and scores it with :func:`evaluate_array_dataset`.

    Such a learner can be batched by :class:`veilfl.sim.executor.BatchedExecutor`.

    Args:
        model_fn: Builds the model: ``(N, ...)`` inputs to ``(N, classes)`` logits.
        seed: Seeds local shuffling, for repeatable runs: the k-th training call uses
            ``derive_seed(seed, k)``, so rounds and clients do not all shuffle alike
            (executors pass each job's own seed instead).
        progress: Called with training progress.
        device: Where to train and evaluate (``auto``, ``cpu``, ``cuda[:N]``).

    Raises:
        ConfigurationError: for an unknown device or a GPU torch does not see.
    """
    return Learner(
        model_fn=model_fn,
        train_fn=_SeededSgd(seed, progress),
        evaluate_fn=evaluate_array_dataset,
        device=resolve_device(device),
        local_sgd=LocalSgd(progress=progress),
    )


def mnist_learner(
    model_name: str = "simple-cnn",
    *,
    seed: int | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    device: str | torch.device = "cpu",
) -> Learner[ArrayDataset]:
    """The built-in learner: a registered model trained with veilfl's SGD trainer.

    Args:
        model_fn: Builds the model; it maps a batch of the data's images to class logits.
        seed: Seeds local shuffling, for repeatable runs: the k-th training call uses
            a seed derived from (seed, k), so rounds and clients do not all shuffle alike.
        progress: Called with training progress.
        device: Where to train and evaluate (``auto``, ``cpu``, ``cuda[:N]``).

    Raises:
        ConfigurationError: for an unknown model or device.
    """
    build_model(model_name)  # fail early on an unknown name
    return sgd_learner(_ModelFactory(model_name), seed=seed, progress=progress, device=device)


@dataclass(frozen=True)
class _ModelFactory:
    """Builds a registered model by name (picklable, unlike a lambda)."""

    name: str

    def __call__(self) -> nn.Module:
        return build_model(self.name)
