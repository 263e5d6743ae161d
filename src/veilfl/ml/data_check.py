"""The start-up check that a model takes the data it is given: a mismatch is one line
naming both shapes, before any round, rather than a torch traceback in the first one."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import ArrayDataset

__all__ = ["check_model_takes", "model_input_shape"]


def model_input_shape(model: nn.Module) -> str | None:
    """What the model's first layer takes, in words (``(784,) features: Linear``), or
    None when its first layer is not a linear or convolutional one."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            features = module.in_features
            return f"({features},) (its first layer, Linear, has {features} inputs)"
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            dims = ", ".join(["C", "L"] if isinstance(module, nn.Conv1d) else ["C", "H", "W"])
            kind = type(module).__name__
            return (
                f"({dims}) with C = {module.in_channels} (its first layer, {kind}, has "
                f"{module.in_channels} input channels)"
            )
    return None


def check_model_takes(
    model_fn: Any, data: ArrayDataset, *, data_name: str, model_name: str
) -> None:
    """Run two of ``data``'s examples through a fresh model from ``model_fn`` (on the
    CPU, without gradients), and check its outputs cover ``data``'s labels.

    Args:
        model_fn: Builds the model (a learner's ``model_fn``).
        data: Examples and labels the model will train or evaluate on.
        data_name: Names the data in the message (``--data scores.csv``).
        model_name: Names the model in the message (``--learner pkg.mod:learner``).

    Raises:
        ConfigurationError: in one line naming the data's shape and the model's.
    """
    if len(data) == 0:
        return
    model: nn.Module = model_fn()
    shape = tuple(data.images.shape[1:])
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        model.eval()
        try:
            outputs = model(torch.from_numpy(data.images[:2].copy()))
        except Exception as exc:
            takes = model_input_shape(model)
            detail = " ".join(str(exc).split())[:200]
            wants = (
                f"takes examples of shape {takes}" if takes else f"does not take them ({detail})"
            )
            raise ConfigurationError(
                f"{data_name} gives examples of shape {shape}, but the model {model_name} "
                f"{wants}; give it data of that shape, or a model that takes {shape}."
            ) from None
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2:
        got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise ConfigurationError(
            f"The model {model_name} gives outputs of shape {got} for {data_name}'s examples "
            f"of shape {shape}; it must give (N, classes) logits."
        )
    classes = int(outputs.shape[1])
    highest = int(data.labels.max())
    if highest >= classes:
        raise ConfigurationError(
            f"{data_name} has labels up to {highest}, but the model {model_name} outputs "
            f"{classes} classes; give the model {highest + 1} outputs (or renumber the labels "
            f"0..{classes - 1})."
        )
