"""L2 clipping of client updates (McMahan et al. 2018, "Learning Differentially
Private Recurrent Language Models"), and adaptive clipping to a target quantile
(Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError

__all__ = ["AdaptiveClipping", "ClippedUpdate", "clip_l2"]


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
