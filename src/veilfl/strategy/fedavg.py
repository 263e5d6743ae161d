"""Federated averaging (McMahan et al. 2017) with a server learning rate.

A round's clients each send a model delta ``Δ_k`` (local minus global weights) and a
weight ``n_k`` (their sample count). The aggregate is the weighted mean
``Σ n_k Δ_k / Σ n_k`` and the new global model is ``w + η · mean`` for a server
learning rate ``η`` (``η = 1`` is plain FedAvg; Reddi et al. 2021 call this server
SGD).

The strategy only sees an :class:`AggregateUpdate`: a weighted sum and a total
weight. In plaintext mode :class:`WeightedSum` builds it from updates as they arrive,
in O(model size) memory; in secure mode it comes out of secure-aggregation
reconstruction, and no party sees the individual terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError, ProtocolError, UpdateRejectedError
from veilfl.tensors import FloatArray

__all__ = ["AggregateUpdate", "FedAvg", "WeightedSum"]

Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AggregateUpdate:
    """The sum of weighted client deltas for one round, and the sum of the weights.

    Attributes:
        weighted_delta_sum: ``Σ n_k Δ_k`` as a flat vector.
        total_weight: ``Σ n_k``; positive.
        num_contributors: How many clients the sums cover.
    """

    weighted_delta_sum: Float64Array
    total_weight: float
    num_contributors: int

    def __post_init__(self) -> None:
        if not (self.total_weight > 0 and math.isfinite(self.total_weight)):
            raise ProtocolError("An aggregate needs a positive, finite total weight.")
        if self.num_contributors < 1:
            raise ProtocolError("An aggregate needs at least one contributor.")

    def mean_delta(self) -> Float64Array:
        """The weighted mean delta ``Σ n_k Δ_k / Σ n_k``."""
        return self.weighted_delta_sum / self.total_weight


class WeightedSum:
    """Running ``Σ n_k Δ_k`` and ``Σ n_k`` in float64, in O(model size) memory.

    Args:
        size: Length of the flat model vector.
    """

    def __init__(self, size: int) -> None:
        self._sum: Float64Array = np.zeros(size, dtype=np.float64)
        self._weight = 0.0
        self._count = 0

    @property
    def count(self) -> int:
        """How many updates were added."""
        return self._count

    def add(self, delta: FloatArray, *, weight: float) -> None:
        """Add one client's flat delta with its weight.

        Raises:
            UpdateRejectedError: if the length or weight is wrong.
        """
        if delta.shape != self._sum.shape:
            raise UpdateRejectedError(
                f"An update of length {delta.shape[0] if delta.ndim else 0} cannot be added to "
                f"a model of {self._sum.shape[0]} parameters."
            )
        if not (weight > 0 and math.isfinite(weight)):
            raise UpdateRejectedError("An update's weight must be a positive, finite number.")
        self._sum += np.float64(weight) * delta.astype(np.float64, copy=False)
        self._weight += weight
        self._count += 1

    def result(self) -> AggregateUpdate:
        """The aggregate of everything added so far.

        Raises:
            ProtocolError: if nothing was added.
        """
        if self._count == 0:
            raise ProtocolError("No update was added; there is nothing to aggregate.")
        return AggregateUpdate(
            weighted_delta_sum=self._sum.copy(),
            total_weight=self._weight,
            num_contributors=self._count,
        )


@dataclass(frozen=True)
class FedAvg:
    """Apply a round's aggregate to the global model.

    Attributes:
        server_learning_rate: ``η`` in ``w ← w + η · Σ n_k Δ_k / Σ n_k``.
    """

    server_learning_rate: float = 1.0

    def __post_init__(self) -> None:
        if not (self.server_learning_rate > 0 and math.isfinite(self.server_learning_rate)):
            raise ConfigurationError("The server learning rate must be a positive number.")

    def apply(self, global_weights: FloatArray, aggregate: AggregateUpdate) -> FloatArray:
        """Return the next global model as a flat float32 vector.

        Raises:
            UpdateRejectedError: if the aggregate does not fit the model.
        """
        if aggregate.weighted_delta_sum.shape != global_weights.shape:
            raise UpdateRejectedError(
                "The aggregate's length does not match the model; it cannot be applied."
            )
        step = self.server_learning_rate * aggregate.mean_delta()
        return (global_weights.astype(np.float64) + step).astype(np.float32)
