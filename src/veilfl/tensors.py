"""Named model tensors as plain numpy arrays, and their flat-vector form.

A model travels through the protocol core as :data:`Weights`: an insertion-ordered
mapping from parameter name to a float32 array. The core never imports torch; the
``ml`` package converts between ``torch.nn.Module`` and :data:`Weights`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.errors import UpdateRejectedError

__all__ = [
    "FloatArray",
    "TensorSpec",
    "Weights",
    "add_scaled",
    "flatten",
    "spec_of",
    "unflatten",
    "zeros_like",
]

FloatArray = npt.NDArray[np.float32]
Weights = dict[str, FloatArray]


@dataclass(frozen=True)
class TensorSpec:
    """The names and shapes of a model's tensors, in order.

    Attributes:
        names: Parameter names in model order.
        shapes: One shape per name.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ValueError("A TensorSpec needs exactly one shape per name.")
        if len(set(self.names)) != len(self.names):
            raise ValueError("A TensorSpec's names must be unique.")

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of elements of each tensor."""
        return tuple(int(np.prod(shape, dtype=np.int64)) for shape in self.shapes)

    @property
    def total_size(self) -> int:
        """Number of elements over all tensors: the length of the flat vector."""
        return int(sum(self.sizes))

    def check(self, weights: Mapping[str, npt.NDArray[np.generic]]) -> None:
        """Raise unless ``weights`` has exactly these names and shapes, as finite float32.

        Raises:
            UpdateRejectedError: naming the first tensor that does not fit.
        """
        missing = [name for name in self.names if name not in weights]
        extra = [name for name in weights if name not in self.shapes_by_name]
        if missing or extra:
            raise UpdateRejectedError(
                f"The tensors do not match the model: missing {missing or 'none'}, "
                f"unexpected {extra or 'none'}."
            )
        for name, shape in zip(self.names, self.shapes, strict=True):
            array = weights[name]
            if tuple(array.shape) != shape:
                raise UpdateRejectedError(
                    f"Tensor {name!r} has shape {tuple(array.shape)}, "
                    f"but the model expects {shape}."
                )
            if array.dtype != np.float32:
                raise UpdateRejectedError(
                    f"Tensor {name!r} has dtype {array.dtype}, but updates must be float32."
                )
            if not np.isfinite(array).all():
                raise UpdateRejectedError(f"Tensor {name!r} contains NaN or infinite values.")

    @property
    def shapes_by_name(self) -> dict[str, tuple[int, ...]]:
        """Mapping from name to shape."""
        return dict(zip(self.names, self.shapes, strict=True))

    def to_json(self) -> dict[str, list[int]]:
        """A JSON-ready ``{name: shape}`` mapping (insertion-ordered)."""
        return {name: list(shape) for name, shape in zip(self.names, self.shapes, strict=True)}


def spec_of(weights: Mapping[str, npt.NDArray[np.generic]]) -> TensorSpec:
    """The :class:`TensorSpec` of ``weights``, in its iteration order."""
    return TensorSpec(
        names=tuple(weights),
        shapes=tuple(tuple(int(n) for n in array.shape) for array in weights.values()),
    )


def flatten(weights: Mapping[str, FloatArray], spec: TensorSpec) -> FloatArray:
    """Concatenate ``weights`` into one float32 vector in ``spec`` order."""
    if not spec.names:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(
        [np.asarray(weights[name], dtype=np.float32).reshape(-1) for name in spec.names]
    )


def unflatten(vector: FloatArray, spec: TensorSpec) -> Weights:
    """Split a flat vector back into named tensors (the inverse of :func:`flatten`).

    Raises:
        UpdateRejectedError: if the vector's length is not ``spec.total_size``.
    """
    if vector.shape != (spec.total_size,):
        raise UpdateRejectedError(
            f"A flat update of shape {vector.shape} cannot fill a model of "
            f"{spec.total_size} parameters."
        )
    out: Weights = {}
    offset = 0
    for name, shape, size in zip(spec.names, spec.shapes, spec.sizes, strict=True):
        out[name] = vector[offset : offset + size].reshape(shape).astype(np.float32, copy=False)
        offset += size
    return out


def zeros_like(spec: TensorSpec) -> Weights:
    """Zero tensors of the shapes in ``spec``."""
    return {
        name: np.zeros(shape, dtype=np.float32)
        for name, shape in zip(spec.names, spec.shapes, strict=True)
    }


def add_scaled(
    base: Mapping[str, FloatArray], delta: Mapping[str, FloatArray], scale: float
) -> Weights:
    """Return ``base + scale * delta``, tensor by tensor, as float32."""
    return {
        name: (array + np.float32(scale) * delta[name]).astype(np.float32, copy=False)
        for name, array in base.items()
    }
