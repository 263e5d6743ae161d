"""The built-in models, by name.

* ``simple-cnn`` — the classic small MNIST net (PyTorch's MNIST example): two 5x5
  convolutions with max-pooling, two fully connected layers (21,840 parameters);
  trains in seconds on a CPU.
* ``mnist-cnn`` — the MNIST CNN of McMahan et al. 2017 ("Communication-Efficient
  Learning of Deep Networks from Decentralized Data"): 5x5 conv 32, 2x2 max-pool, 5x5
  conv 64, 2x2 max-pool, fully connected 512, then 10 outputs (1,663,370 parameters).

Both take ``(N, 1, 28, 28)`` images and return ``(N, 10)`` logits (no softmax).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from veilfl.errors import ConfigurationError

__all__ = ["MODELS", "McMahanCNN", "SimpleCNN", "build_model", "count_parameters"]


class SimpleCNN(nn.Module):
    """conv 1->10 k5, pool, relu, conv 10->20 k5, pool, relu, fc 320->50, relu, fc 50->10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (N, 1, 28, 28) images."""
        x = torch.relu(self.pool(self.conv1(x)))
        x = torch.relu(self.pool(self.conv2(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)  # type: ignore[no-any-return]


class McMahanCNN(nn.Module):
    """The MNIST CNN of McMahan et al. 2017, with "same" padding (1,663,370 parameters).

    conv 1->32 k5 p2, relu, pool, conv 32->64 k5 p2, relu, pool, fc 3136->512, relu,
    fc 512->10.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(7 * 7 * 64, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of (N, 1, 28, 28) images."""
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)  # type: ignore[no-any-return]


MODELS: dict[str, Callable[[], nn.Module]] = {"simple-cnn": SimpleCNN, "mnist-cnn": McMahanCNN}
"""Model factories by name, as used by the CLI's ``--model``."""


def build_model(name: str) -> nn.Module:
    """A fresh, randomly initialised model registered under ``name`` in :data:`MODELS`.

    Raises:
        ConfigurationError: naming the known models.
    """
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigurationError(
            f"Unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}, or federate "
            "your own with veilfl.Learner."
        ) from None
    return factory()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
