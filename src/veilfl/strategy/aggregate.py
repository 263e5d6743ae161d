"""What aggregation produces and every strategy consumes: one :class:`Aggregate`.

Plaintext aggregation builds it from updates as they arrive (:class:`WeightedSum`, in
O(model size) memory); secure aggregation reconstructs it from the aggregators' sums,
so no party sees the individual terms; differential privacy adds noise to it and fixes
its denominator. FedAvg, FedBuff and FedAsync all read the same fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.errors import ProtocolError, UpdateRejectedError
from veilfl.strategy.federated_evaluation import FederatedEvaluation
from veilfl.tensors import FloatArray

__all__ = ["Aggregate", "Float64Array", "WeightedSum"]

Float64Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Aggregate:
    """The weighted sum of one round's (or one buffer's) client deltas.

    Attributes:
        weighted_delta_sum: ``Σ w_k Δ_k`` as a flat vector.
        total_weight: ``Σ w_k`` (under DP-FedAvg, the fixed denominator); positive.
        participants: The clients the sum covers.
        trained_versions: The model version each participant trained from, in the order
            of ``participants``.
        mean_loss: The weighted mean training loss, when known.
        within_bound_count: Under DP clipping, the (noised, under adaptive clipping)
            sum of the participants' unclipped bits, each +1/2 if the update needed
            no clipping and -1/2 if it did (``veilfl.privacy.clipping.unclipped_bit``).
        epsilon: Under DP, the privacy spent once this aggregate is released.
        evaluation: The participants' federated evaluation of the model they received,
            summed; None when none evaluated (or, under DP with secure aggregation,
            where it is not reported).
    """

    weighted_delta_sum: Float64Array
    total_weight: float
    participants: tuple[str, ...]
    trained_versions: tuple[int, ...]
    mean_loss: float | None = None
    within_bound_count: float | None = None
    epsilon: float | None = None
    evaluation: FederatedEvaluation | None = None

    def __post_init__(self) -> None:
        if not (self.total_weight > 0 and math.isfinite(self.total_weight)):
            raise ProtocolError("An aggregate needs a positive, finite total weight.")
        if not self.participants:
            raise ProtocolError("An aggregate needs at least one participant.")
        if len(self.trained_versions) != len(self.participants):
            raise ProtocolError("An aggregate needs one trained version per participant.")

    @property
    def num_contributors(self) -> int:
        """How many clients the sum covers."""
        return len(self.participants)

    def mean_delta(self) -> Float64Array:
        """The weighted mean delta ``Σ w_k Δ_k / Σ w_k``."""
        return self.weighted_delta_sum / self.total_weight


class WeightedSum:
    """Running ``Σ w_k Δ_k`` and ``Σ w_k`` in float64, in O(model size) memory.

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

    @property
    def total_weight(self) -> float:
        """``Σ w_k`` so far."""
        return self._weight

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

    def vector(self) -> Float64Array:
        """A copy of ``Σ w_k Δ_k``.

        Raises:
            ProtocolError: if nothing was added.
        """
        if self._count == 0:
            raise ProtocolError("No update was added; there is nothing to aggregate.")
        return self._sum.copy()
