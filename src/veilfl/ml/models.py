"""The built-in models, by name.

* ``simple-cnn`` — the seed project's SimpleCNN: two convolutions, max-pooling, two
  fully connected layers (21,840 parameters); trains in seconds on a CPU.
* ``mnist-cnn`` — McMahan et al. 2017's MNIST CNN: 5x5 conv 32, 2x2 max-pool, 5x5
  conv 64, 2x2 max-pool, fully connected 512, softmax 10 (1,663,370 parameters).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from veilfl.errors import ConfigurationError

__all__ = ["MODELS", "McMahanCNN", "SimpleCNN", "build_model", "count_parameters"]


class SimpleCNN(nn.Module):
    """Two conv layers with max-pooling, then two fully connected layers."""

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
    """The CNN of McMahan et al. 2017 ("Communication-Efficient Learning ...")."""

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


def build_model(name: str) -> nn.Module:
    """A fresh model registered under ``name``.

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
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
