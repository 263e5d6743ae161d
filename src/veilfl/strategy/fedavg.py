"""Federated averaging (McMahan et al. 2017) with a server learning rate.

A round's clients each send a model delta ``Δ_k`` (local minus global weights) and a
weight ``n_k`` (their sample count). The aggregate is the weighted mean
``Σ n_k Δ_k / Σ n_k`` and the new global model is ``w + η · mean`` for a server
learning rate ``η`` (``η = 1`` is plain FedAvg; Reddi et al. 2021 call this server
SGD). Under DP-FedAvg the denominator is the fixed expected cohort size instead
(McMahan et al. 2018); the aggregate carries it as its total weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from veilfl.errors import ConfigurationError, UpdateRejectedError
from veilfl.strategy.aggregate import Aggregate, Float64Array
from veilfl.strategy.base import ModelHistory
from veilfl.tensors import FloatArray

__all__ = ["FedAvg", "check_fits"]


def check_fits(current: FloatArray, aggregate: Aggregate) -> None:
    """Raise unless the aggregate's sum has the model's length.

    Raises:
        UpdateRejectedError: naming both lengths.
    """
    if aggregate.weighted_delta_sum.shape != current.shape:
        raise UpdateRejectedError(
            f"The aggregate has {aggregate.weighted_delta_sum.size} values but the model "
            f"{current.size}; it cannot be applied."
        )


def positive_rate(value: float, what: str) -> None:
    """Raise unless ``value`` is a positive finite number."""
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"The {what} must be a positive number; got {value}.")


@dataclass(frozen=True)
class FedAvg:
    """``w ← w + η · Σ w_k Δ_k / Σ w_k``.

    Attributes:
        server_learning_rate: η.
    """

    server_learning_rate: float = 1.0

    def __post_init__(self) -> None:
        positive_rate(self.server_learning_rate, "server learning rate")

    @property
    def name(self) -> str:
        """``fedavg``."""
        return "fedavg"

    def pseudo_gradient(self, aggregate: Aggregate) -> Float64Array:
        """The weighted mean delta ``Σ w_k Δ_k / Σ w_k``: the step at rate 1."""
        return aggregate.mean_delta()

    def apply(
        self, current: FloatArray, aggregate: Aggregate, *, history: ModelHistory
    ) -> FloatArray:
        """The next global model as float32."""
        check_fits(current, aggregate)
        step = self.server_learning_rate * self.pseudo_gradient(aggregate)
        return (current.astype(np.float64) + step).astype(np.float32)
