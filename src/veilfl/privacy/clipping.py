"""L2 clipping of client updates (McMahan et al. 2018, "Learning Differentially
Private Recurrent Language Models"), and adaptive clipping to a target quantile
(Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping").

Adaptive clipping releases, next to the update sum, a noised count of the clients
whose update needed no clipping. Each client contributes :func:`unclipped_bit`, its
bit shifted to +-1/2 as TensorFlow Privacy's quantile estimator does, so that adding
or removing one client moves the sum by at most 1/2: that is the sensitivity the
noise split in :meth:`veilfl.privacy.dp_config.DpConfig.update_noise_multiplier`
assumes. A bit in {0, 1} would have sensitivity 1 and be charged for half its cost.
The coordinator turns the noised sum back into a fraction with
:func:`unclipped_fraction`, using the fixed denominator (the expected number of
clients), never the actual count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError

__all__ = [
    "UNCLIPPED_BIT_SENSITIVITY",
    "AdaptiveClipping",
    "ClippedUpdate",
    "clip_l2",
    "unclipped_bit",
    "unclipped_fraction",
]

UNCLIPPED_BIT_SENSITIVITY = 0.5
"""L2 sensitivity of the noised unclipped count: one client's bit is +-1/2."""


@dataclass(frozen=True)
class ClippedUpdate:
    """An update scaled to L2 norm at most the clipping norm.

    Attributes:
        vector: The clipped update (float64).
        norm: The update's L2 norm before clipping.
        within_bound: Whether the norm was already at most the clipping norm.
    """

    vector: npt.NDArray[np.float64]
    norm: float
    within_bound: bool


def clip_l2(vector: npt.NDArray[np.floating], *, clip_norm: float) -> ClippedUpdate:
    """Scale ``vector`` down to L2 norm ``clip_norm`` if it is longer.

    Raises:
        ConfigurationError: if ``clip_norm`` is not positive.
    """
    if not (clip_norm > 0 and math.isfinite(clip_norm)):
        raise ConfigurationError("The clipping norm must be a positive number.")
    values = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(values))
    if norm <= clip_norm:
        return ClippedUpdate(vector=values.copy(), norm=norm, within_bound=True)
    return ClippedUpdate(vector=values * (clip_norm / norm), norm=norm, within_bound=False)


def unclipped_bit(within_bound: bool) -> float:
    """A client's contribution to the unclipped count: +1/2 if its update needed no
    clipping, -1/2 if it did (Andrew et al. 2021, Section 3; TensorFlow Privacy's
    ``QuantileEstimatorQuery``)."""
    return UNCLIPPED_BIT_SENSITIVITY if within_bound else -UNCLIPPED_BIT_SENSITIVITY


def unclipped_fraction(noised_bit_sum: float, *, expected_clients: float) -> float:
    """The fraction of unclipped updates estimated from the noised sum of
    :func:`unclipped_bit` values: ``(sum + n/2) / n``, clamped to [0, 1].

    Args:
        noised_bit_sum: The released (noised) sum of the clients' +-1/2 bits.
        expected_clients: n, the fixed denominator (the expected clients per round,
            the same one the update sum is divided by); the actual number of
            reports is never used, so the estimate reveals nothing more about it.

    Raises:
        ConfigurationError: if ``expected_clients`` is not positive.
    """
    if not (expected_clients > 0 and math.isfinite(expected_clients)):
        raise ConfigurationError("The expected number of clients must be a positive number.")
    estimate = (noised_bit_sum + expected_clients / 2) / expected_clients
    return min(max(estimate, 0.0), 1.0)


@dataclass(frozen=True)
class AdaptiveClipping:
    """Geometric update of the clipping norm toward a target quantile of update norms.

    After each round with a (noised) fraction ``b`` of clients whose update norm was
    within the bound, ``C ← C · exp(-η (b - γ))`` (Andrew et al. 2021, Algorithm 1).

    Attributes:
        target_quantile: γ, the fraction of updates that should be unclipped.
        learning_rate: η.
    """

    target_quantile: float = 0.5
    learning_rate: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.target_quantile < 1:
            raise ConfigurationError("The target quantile must be in (0, 1).")
        if not self.learning_rate > 0:
            raise ConfigurationError("The clipping learning rate must be positive.")

    def next_clip_norm(self, clip_norm: float, *, unclipped_fraction: float) -> float:
        """The clipping norm for the next round."""
        return clip_norm * math.exp(
            -self.learning_rate * (unclipped_fraction - self.target_quantile)
        )
