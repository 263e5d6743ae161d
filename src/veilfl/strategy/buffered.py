"""How a released buffer becomes the next model: FedBuff and FedAsync.

* FedBuff (Nguyen et al. 2022, Algorithm 1): ``w ← w + η · (1/K) Σ s(τᵢ) Δᵢ``, where
  Δᵢ is client i's delta (against the version it trained on) and s(τᵢ) its staleness
  weight.
* FedAsync (Xie et al. 2019): after each single update,
  ``w ← (1 - αₜ) w + αₜ x`` with ``x = w_τ + Δ`` the client's trained model and
  ``αₜ = α · s(τ)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError, UpdateRejectedError
from veilfl.tensors import FloatArray

__all__ = ["FedAsync", "FedBuff"]


@dataclass(frozen=True)
class FedBuff:
    """Apply a buffer's staleness-weighted delta sum.

    Attributes:
        server_learning_rate: η.
    """

    server_learning_rate: float = 1.0

    def __post_init__(self) -> None:
        if not (self.server_learning_rate > 0 and math.isfinite(self.server_learning_rate)):
            raise ConfigurationError("The server learning rate must be a positive number.")

    def apply(
        self,
        global_weights: FloatArray,
        weighted_delta_sum: npt.NDArray[np.float64],
        *,
        buffer_size: int,
    ) -> FloatArray:
        """``w + η · Σ s(τᵢ)Δᵢ / K`` as float32."""
        if weighted_delta_sum.shape != global_weights.shape:
            raise UpdateRejectedError("The buffer's sum does not fit the model.")
        step = self.server_learning_rate * weighted_delta_sum / buffer_size
        return (global_weights.astype(np.float64) + step).astype(np.float32)


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

    def apply(
        self,
        global_weights: FloatArray,
        trained_from: FloatArray,
        delta: FloatArray,
        *,
        staleness_weight: float,
    ) -> FloatArray:
        """``(1 - α s) w + α s (w_τ + Δ)`` as float32."""
        alpha = self.mixing * staleness_weight
        client_model = trained_from.astype(np.float64) + delta
        mixed = (1 - alpha) * global_weights.astype(np.float64) + alpha * client_model
        return mixed.astype(np.float32)
