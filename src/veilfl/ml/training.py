"""Local training with plain SGD, and evaluation.

:func:`train_local` is the client step of FedAvg (McMahan et al. 2017): ``epochs``
passes of minibatch SGD (batch size ``B``) with cross-entropy over the client's data,
reporting the change in the weights. The data is already in memory, so it batches
tensors by hand rather than through a ``DataLoader``.

With ``proximal_mu > 0`` it is the client step of FedProx (Li et al. 2020, "Federated
Optimization in Heterogeneous Networks"): each step descends
``loss(w) + mu/2 ||w - w_global||^2``, where ``w_global`` are the weights training
started from, so the gradient gains ``mu (w - w_global)``.

Training and evaluation run on the model's device (pass ``device=`` to move it
first); the data moves there batch by batch, and the weights that come out are
float32 numpy arrays on the CPU.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
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
    "shuffle_seeds",
    "train_local",
]

_PROGRESS_REPORTS_PER_EPOCH = 20
_MAX_SEED = 2**64


@dataclass(frozen=True)
class TrainConfig:
    """SGD settings for one client's local training.

    Attributes:
        learning_rate: Step size (eta).
        momentum: SGD momentum, in [0, 1).
        epochs: Passes over the local data (E).
        batch_size: Examples per step (B).
        seed: Seeds the shuffling and, for the duration of training, torch's global
            CPU generator (dropout and the like), for repeatable runs; None draws a
            fresh seed from the OS.
        max_batches: Optional cap on steps per epoch, for quick runs.
        proximal_mu: FedProx's mu: weight of the proximal term
            ``mu/2 ||w - w_global||^2`` (0, the default, is plain SGD).

    Raises:
        ConfigurationError: for a setting out of range, saying which.
    """

    learning_rate: float = 0.05
    momentum: float = 0.0
    epochs: int = 1
    batch_size: int = 32
    seed: int | None = None
    max_batches: int | None = None
    proximal_mu: float = 0.0

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigurationError(
                f"learning_rate must be a positive number, not {self.learning_rate}."
            )
        if not 0 <= self.momentum < 1:
            raise ConfigurationError(f"momentum must be in [0, 1), not {self.momentum}.")
        if self.epochs < 1:
            raise ConfigurationError(f"epochs must be at least 1, not {self.epochs}.")
        if self.batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, not {self.batch_size}.")
        if self.max_batches is not None and self.max_batches < 1:
            raise ConfigurationError(
                f"max_batches must be at least 1, or None for no cap, not {self.max_batches}."
            )
        if not (self.proximal_mu >= 0 and math.isfinite(self.proximal_mu)):
            raise ConfigurationError(
                f"proximal_mu must be a number of at least 0, not {self.proximal_mu}."
            )
        if self.seed is not None and not 0 <= self.seed < _MAX_SEED:
            raise ConfigurationError(f"seed must be in [0, 2**64), or None, not {self.seed}.")


@dataclass(frozen=True)
class TrainProgress:
    """Where local training is, as reported to a :data:`ProgressCallback`.

    Attributes:
        epoch: Current epoch, from 1.
        epochs: Total epochs.
        batch: Batches done in this epoch, from 1.
        batches_per_epoch: Batches in each epoch.
        running_loss: Mean training loss over this epoch's batches so far.
    """

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
        delta: Trained minus starting weights, float32, in ``state_dict`` order.
        num_samples: Examples seen per epoch: ``len(data)``, or fewer under
            ``max_batches`` (the FedAvg weight of this update).
        mean_loss: Mean training loss over all steps.
        seconds: Wall time.
    """

    delta: Weights
    num_samples: int
    mean_loss: float
    seconds: float


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _place(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """Move ``model`` to ``device`` (in place) if one is given; return its device."""
    if device is not None:
        model.to(torch.device(device))
    return _device_of(model)


def shuffle_seeds(seed: int) -> tuple[int, int]:
    """The seeds :func:`train_local` derives from ``config.seed``: one for the order
    of the examples, one for torch's generator during training (dropout and such).

    Batched training (:mod:`veilfl.ml.batched_training`) uses the same, so both
    visit the examples in the same order.
    """
    (model_seed,) = np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)
    return seed, int(model_seed)


def _as_tensor(array: npt.NDArray[np.generic], device: torch.device) -> torch.Tensor:
    # torch.from_numpy shares memory but warns on read-only arrays; copy those instead.
    tensor = torch.from_numpy(array) if array.flags.writeable else torch.tensor(array)
    return tensor.to(device)


def train_local(
    model: nn.Module,
    data: ArrayDataset,
    config: TrainConfig,
    *,
    progress: ProgressCallback | None = None,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train ``model`` in place with SGD and cross-entropy; return the weight delta.

    Each epoch visits the data in a fresh random order (a ``torch.Generator`` seeded
    from ``config.seed``), in batches of ``config.batch_size`` (the last one smaller).
    With the same seed, starting weights, data, machine and thread count, the delta
    is bitwise identical. The caller's global torch random state is left unchanged.

    Args:
        model: Any module mapping a batch of images to logits; it is left in the
            train/eval mode it had.
        data: The local training data.
        config: Learning rate, momentum, epochs, batch size, seed and step cap.
        progress: Called at most 20 times per epoch, always after the last batch.
        device: Move ``model`` there first (in place); None trains where it is.

    Returns:
        The delta against the weights ``model`` had on entry (float32, CPU), and
        statistics. The mean loss is the cross-entropy alone, without FedProx's term.

    Raises:
        DataError: if ``data`` is empty.
    """
    if len(data) == 0:
        raise DataError("Cannot train on an empty data set; give this client some examples.")
    started = time.perf_counter()
    before = get_weights(model)
    seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(8), "little")
    order_seed, model_seed = shuffle_seeds(seed)
    generator = torch.Generator().manual_seed(order_seed)
    device = _place(model, device)
    images, labels = _as_tensor(data.images, device), _as_tensor(data.labels, device)
    batches = math.ceil(len(data) / config.batch_size)
    if config.max_batches is not None:
        batches = min(batches, config.max_batches)
    report_every = math.ceil(batches / _PROGRESS_REPORTS_PER_EPOCH)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(parameters, lr=config.learning_rate, momentum=config.momentum)
    anchor = [p.detach().clone() for p in parameters] if config.proximal_mu > 0 else None
    was_training = model.training
    model.train()
    total_loss = 0.0
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(model_seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(model_seed)
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(len(data), generator=generator).to(device)
            # Summed on the device in float64: reading each loss would make the CPU
            # wait for a GPU after every step.
            running = torch.zeros((), dtype=torch.float64, device=device)
            for batch in range(batches):
                index = order[batch * config.batch_size : (batch + 1) * config.batch_size]
                optimiser.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(images[index]), labels[index])
                loss.backward()  # type: ignore[no-untyped-call]
                if anchor is not None:
                    _add_proximal_gradient(parameters, anchor, config.proximal_mu)
                optimiser.step()
                running += loss.detach()
                done = batch + 1
                if progress is not None and (done % report_every == 0 or done == batches):
                    mean = float(running) / done
                    progress(TrainProgress(epoch, config.epochs, done, batches, mean))
            total_loss += float(running)
    model.train(was_training)
    after = get_weights(model)
    return TrainResult(
        delta={name: (after[name] - before[name]).astype(np.float32) for name in before},
        num_samples=min(len(data), batches * config.batch_size),
        mean_loss=total_loss / (batches * config.epochs),
        seconds=time.perf_counter() - started,
    )


def _add_proximal_gradient(
    parameters: list[nn.Parameter], anchor: list[torch.Tensor], mu: float
) -> None:
    """``grad += mu (w - w_global)``: the gradient of FedProx's ``mu/2 ||w - w_global||^2``."""
    with torch.no_grad():
        for parameter, start in zip(parameters, anchor, strict=True):
            if parameter.grad is not None:
                parameter.grad.add_(parameter - start, alpha=mu)


@dataclass(frozen=True)
class EvalResult:
    """Loss and accuracy on a data set.

    Attributes:
        loss: Mean cross-entropy per example.
        accuracy: Fraction of examples whose largest logit is the label.
        num_samples: Examples evaluated.
    """

    loss: float
    accuracy: float
    num_samples: int


def evaluate(
    model: nn.Module,
    data: ArrayDataset,
    *,
    batch_size: int = 1000,
    device: torch.device | str | None = None,
) -> EvalResult:
    """Mean cross-entropy and accuracy of ``model`` on ``data``, in eval mode.

    The model is left in the train/eval mode it had.

    Args:
        model: Maps a batch of images to logits.
        data: The examples to score.
        batch_size: Examples per forward pass (memory, not results).
        device: Move ``model`` there first (in place); None evaluates where it is.

    Raises:
        DataError: if ``data`` is empty.
        ConfigurationError: if ``batch_size`` is below 1.
    """
    if len(data) == 0:
        raise DataError("Cannot evaluate on an empty data set.")
    if batch_size < 1:
        raise ConfigurationError(f"batch_size must be at least 1, not {batch_size}.")
    device = _place(model, device)
    was_training = model.training
    model.eval()
    total_loss = 0.0
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            images = _as_tensor(data.images[start : start + batch_size], device)
            labels = _as_tensor(data.labels[start : start + batch_size], device)
            logits = model(images)
            total_loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
    model.train(was_training)
    return EvalResult(
        loss=total_loss / len(data), accuracy=correct / len(data), num_samples=len(data)
    )
