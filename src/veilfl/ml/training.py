"""Local training with plain SGD, and evaluation."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from veilfl.errors import ConfigurationError, DataError
from veilfl.ml.datasets import ArrayDataset
from veilfl.ml.weights import get_weights
from veilfl.tensors import Weights

__all__ = [
    "EvalResult",
    "ProgressCallback",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "evaluate",
    "train_local",
]


@dataclass(frozen=True)
class TrainConfig:
    """SGD settings for one client's local training.

    Attributes:
        learning_rate: Step size.
        momentum: SGD momentum.
        epochs: Passes over the local data (E).
        batch_size: Examples per step (B).
        seed: Seeds the shuffling; None draws a fresh seed from the OS.
        max_batches: Optional cap on steps per epoch.
    """

    learning_rate: float = 0.05
    momentum: float = 0.0
    epochs: int = 1
    batch_size: int = 32
    seed: int | None = None
    max_batches: int | None = None

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigurationError("learning_rate must be a positive number.")
        if not 0 <= self.momentum < 1:
            raise ConfigurationError("momentum must be in [0, 1).")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigurationError("epochs and batch_size must be at least 1.")
        if self.max_batches is not None and self.max_batches < 1:
            raise ConfigurationError("max_batches must be at least 1, or None.")


@dataclass(frozen=True)
class TrainProgress:
    """Where local training is."""

    epoch: int
    epochs: int
    batch: int
    batches_per_epoch: int
    running_loss: float


ProgressCallback = Callable[[TrainProgress], None]


@dataclass(frozen=True)
class TrainResult:
    """The outcome of local training.

    Attributes:
        delta: Trained minus starting weights.
        num_samples: Examples seen per epoch.
        mean_loss: Mean training loss over all steps.
        seconds: Wall time.
    """

    delta: Weights
    num_samples: int
    mean_loss: float
    seconds: float


def train_local(
    model: nn.Module,
    data: ArrayDataset,
    config: TrainConfig,
    *,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train ``model`` in place with SGD and cross-entropy; return the weight delta.

    Raises:
        DataError: if ``data`` is empty.
    """
    if len(data) == 0:
        raise DataError("Cannot train on an empty data set.")
    started = time.perf_counter()
    before = get_weights(model)
    seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(8), "little")
    generator = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(data.images)
    labels = torch.from_numpy(data.labels)
    batches = math.ceil(len(data) / config.batch_size)
    if config.max_batches is not None:
        batches = min(batches, config.max_batches)
    optimiser = torch.optim.SGD(
        model.parameters(), lr=config.learning_rate, momentum=config.momentum
    )
    report_every = max(1, batches // 20)
    model.train()
    total_loss = 0.0
    steps = 0
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(data), generator=generator)
        running = 0.0
        for batch in range(batches):
            index = order[batch * config.batch_size : (batch + 1) * config.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(images[index]), labels[index])
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            value = float(loss.detach())
            running += value
            total_loss += value
            steps += 1
            if progress is not None and ((batch + 1) % report_every == 0 or batch + 1 == batches):
                progress(
                    TrainProgress(epoch, config.epochs, batch + 1, batches, running / (batch + 1))
                )
    after = get_weights(model)
    delta = {name: (after[name] - before[name]).astype(np.float32) for name in before}
    return TrainResult(
        delta=delta,
        num_samples=min(len(data), batches * config.batch_size),
        mean_loss=total_loss / steps,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class EvalResult:
    """Loss and accuracy on a data set."""

    loss: float
    accuracy: float
    num_samples: int


def evaluate(model: nn.Module, data: ArrayDataset, *, batch_size: int = 1000) -> EvalResult:
    """Mean cross-entropy and accuracy of ``model`` on ``data``.

    Raises:
        DataError: if ``data`` is empty.
    """
    if len(data) == 0:
        raise DataError("Cannot evaluate on an empty data set.")
    model.eval()
    total_loss = 0.0
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            images = torch.from_numpy(data.images[start : start + batch_size])
            labels = torch.from_numpy(data.labels[start : start + batch_size])
            logits = model(images)
            total_loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
    return EvalResult(
        loss=total_loss / len(data), accuracy=correct / len(data), num_samples=len(data)
    )
