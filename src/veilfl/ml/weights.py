"""Moving weights between a ``torch.nn.Module`` and :data:`veilfl.tensors.Weights`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from veilfl.errors import UpdateRejectedError
from veilfl.tensors import FloatArray, Weights

__all__ = ["get_weights", "set_weights"]


def get_weights(model: nn.Module) -> Weights:
    """Float32 copies of every floating-point entry of the model's state dict, in order."""
    return {
        name: tensor.detach().cpu().numpy().astype(np.float32, copy=True)
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point()
    }


def set_weights(model: nn.Module, weights: Mapping[str, FloatArray]) -> None:
    """Load ``weights`` into ``model``; names and shapes must match exactly.

    Raises:
        UpdateRejectedError: naming the missing, unexpected or misshapen tensors.
    """
    state = {n: t for n, t in model.state_dict().items() if t.is_floating_point()}
    missing = sorted(set(state) - set(weights))
    extra = sorted(set(weights) - set(state))
    if missing or extra:
        raise UpdateRejectedError(
            f"The weights do not fit the model: missing {missing or 'none'}, unexpected "
            f"{extra or 'none'}. Do all parties build the same model?"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            value = weights[name]
            if tuple(value.shape) != tuple(tensor.shape):
                raise UpdateRejectedError(
                    f"Tensor {name!r} has shape {tuple(value.shape)}, but the model's is "
                    f"{tuple(tensor.shape)}."
                )
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))
