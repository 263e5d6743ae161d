"""Moving weights between a ``torch.nn.Module`` and :data:`veilfl.tensors.Weights`.

The weights of a model are every floating-point entry of its ``state_dict``, in
``state_dict`` order: parameters and floating-point buffers (such as batch-norm
running statistics). Integer buffers (such as ``num_batches_tracked``) stay local.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from veilfl.errors import UpdateRejectedError
from veilfl.tensors import Weights

__all__ = ["get_weights", "set_weights"]


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t for name, t in model.state_dict().items() if t.is_floating_point()}


def get_weights(model: nn.Module) -> Weights:
    """Float32 copies of the model's floating-point state, in ``state_dict`` order.

    The arrays share no memory with the model: training it later leaves them unchanged.
    """
    return {
        name: tensor.detach().to(device="cpu", dtype=torch.float32).numpy().copy()
        for name, tensor in _float_state(model).items()
    }


def set_weights(model: nn.Module, weights: Mapping[str, npt.NDArray[np.floating]]) -> None:
    """Load ``weights`` into ``model`` in place; names and shapes must match exactly.

    Everything is checked before anything is written, so a refused update leaves the
    model as it was. Values are cast to each tensor's dtype and device.

    Raises:
        UpdateRejectedError: naming the missing, unexpected or misshapen tensors.
    """
    state = _float_state(model)
    missing = [name for name in state if name not in weights]
    extra = [name for name in weights if name not in state]
    if missing or extra:
        raise UpdateRejectedError(
            f"The weights do not fit the model: missing {missing or 'none'}, unexpected "
            f"{extra or 'none'}. Do all parties build the same model?"
        )
    for name, tensor in state.items():
        shape = tuple(np.shape(weights[name]))
        if shape != tuple(tensor.shape):
            raise UpdateRejectedError(
                f"Tensor {name!r} has shape {shape}, but the model's is {tuple(tensor.shape)}. "
                "Do all parties build the same model?"
            )
    with torch.no_grad():
        for name, tensor in state.items():
            # torch.tensor copies, so read-only arrays (decoded from the wire) are fine.
            tensor.copy_(torch.tensor(np.asarray(weights[name])))
