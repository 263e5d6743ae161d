"""How a released buffer becomes the next model: FedBuff and FedAsync.

* FedBuff (Nguyen et al. 2022, Algorithm 1): ``w ← w + η · (1/K) Σ s(τᵢ) Δᵢ``, where
  Δᵢ is client i's delta (against the version it trained on), s(τᵢ) its staleness
  weight and K the number of updates in the buffer.
* FedAsync (Xie et al. 2019): after each single update,
  ``w ← (1 - αₜ) w + αₜ x`` with ``x = w_τ + Δ`` the client's trained model and
  ``αₜ = α · s(τ)``. The buffer holds one update, whose weight s(τ) is the aggregate's
  total weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veilfl.errors import ConfigurationError, ProtocolError
from veilfl.strategy.aggregate import Aggregate, Float64Array
from veilfl.strategy.base import ModelHistory
from veilfl.strategy.fedavg import check_fits, positive_rate
from veilfl.tensors import FloatArray

__all__ = ["FedAsync", "FedBuff"]


@dataclass(frozen=True)
class FedBuff:
    """Apply a buffer's staleness-weighted delta sum, averaged over the buffer size.

    Attributes:
        server_learning_rate: η.
    """

    server_learning_rate: float = 1.0

    def __post_init__(self) -> None:
        positive_rate(self.server_learning_rate, "server learning rate")

    @property
    def name(self) -> str:
        """``fedbuff``."""
        return "fedbuff"

    def pseudo_gradient(self, aggregate: Aggregate) -> Float64Array:
        """``Σ s(τᵢ)Δᵢ / K``: the step at rate 1."""
        return aggregate.weighted_delta_sum / aggregate.num_contributors

    def apply(
        self, current: FloatArray, aggregate: Aggregate, *, history: ModelHistory
    ) -> FloatArray:
        """``w + η · Σ s(τᵢ)Δᵢ / K`` as float32."""
        check_fits(current, aggregate)
        step = self.server_learning_rate * self.pseudo_gradient(aggregate)
        return (current.astype(np.float64) + step).astype(np.float32)


@dataclass(frozen=True)
class FedAsync:
    """Mix one client's model into the global model.

    Attributes:
        mixing: α, the mixing rate for a fresh (staleness 0) update.
    """

    mixing: float = 0.6

    def __post_init__(self) -> None:
        if not 0 < self.mixing <= 1:
            raise ConfigurationError("The FedAsync mixing rate must be in (0, 1].")

    @property
    def name(self) -> str:
        """``fedasync``."""
        return "fedasync"

    def apply(
        self, current: FloatArray, aggregate: Aggregate, *, history: ModelHistory
    ) -> FloatArray:
        """``(1 - α s) w + α s (w_τ + Δ)`` as float32.

        Raises:
            ProtocolError: for an aggregate of more than one update.
        """
        check_fits(current, aggregate)
        if aggregate.num_contributors != 1:
            raise ProtocolError(
                f"FedAsync applies one update at a time; the buffer held "
                f"{aggregate.num_contributors}."
            )
        staleness_weight = aggregate.total_weight
        trained_from = history.weights_at(aggregate.trained_versions[0]).astype(np.float64)
        client_model = trained_from + aggregate.mean_delta()
        alpha = self.mixing * staleness_weight
        mixed = (1 - alpha) * current.astype(np.float64) + alpha * client_model
        return mixed.astype(np.float32)
