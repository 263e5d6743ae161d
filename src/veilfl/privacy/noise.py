"""Noise for differential privacy, from a cryptographically secure source.

* :func:`gaussian` — continuous Gaussian N(0, σ²), by Box-Muller on uniforms from an
  AES-CTR stream keyed by ``os.urandom``.
* :func:`discrete_gaussian` — the discrete Gaussian N_Z(0, σ²) on the integers
  (Canonne, Kamath and Steinke 2020, "The Discrete Gaussian for Differential
  Privacy", Algorithm 3: discrete Laplace proposals with rejection), vectorised.
  Like TensorFlow Privacy's sampler it uses floating-point probabilities rather than
  the paper's exact rational arithmetic, so it is statistically faithful but not
  constant-time; documented as such.

Never ``numpy.random``: a predictable noise source voids the privacy guarantee.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ConfigurationError

__all__ = ["discrete_gaussian", "gaussian", "uniform_open"]

_TWO_TO_MINUS_53 = 2.0**-53


def uniform_open(rng: CsprngStream, count: int) -> npt.NDArray[np.float64]:
    """``count`` uniforms in the open interval (0, 1), 53 random bits each."""
    bits = rng.random_uint64(count) >> np.uint64(11)
    return (bits.astype(np.float64) + 0.5) * _TWO_TO_MINUS_53


def gaussian(rng: CsprngStream, *, sigma: float, count: int) -> npt.NDArray[np.float64]:
    """``count`` samples of N(0, sigma²) (Box-Muller).

    Raises:
        ConfigurationError: for a negative sigma.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise ConfigurationError("The noise standard deviation must be a finite number >= 0.")
    if sigma == 0 or count == 0:
        return np.zeros(count, dtype=np.float64)
    pairs = (count + 1) // 2
    radius = np.sqrt(-2.0 * np.log(uniform_open(rng, pairs)))
    angle = 2.0 * np.pi * uniform_open(rng, pairs)
    samples = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
    return sigma * samples


def _geometric(rng: CsprngStream, *, q: float, count: int) -> npt.NDArray[np.int64]:
    """Geometric on {0, 1, ...} with P(k) = (1 - q) q^k."""
    return np.floor(np.log(uniform_open(rng, count)) / math.log(q)).astype(np.int64)


def discrete_gaussian(rng: CsprngStream, *, sigma: float, count: int) -> npt.NDArray[np.int64]:
    """``count`` samples of the discrete Gaussian N_Z(0, sigma²) on the integers.

    Raises:
        ConfigurationError: for a negative sigma.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise ConfigurationError("The noise standard deviation must be a finite number >= 0.")
    if sigma == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    t = math.floor(sigma) + 1
    q = math.exp(-1.0 / t)
    out = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        batch = max(64, int((count - filled) * 1.6))
        # Discrete Laplace(t) proposal: the difference of two iid geometrics.
        proposal = _geometric(rng, q=q, count=batch) - _geometric(rng, q=q, count=batch)
        accept = uniform_open(rng, batch) < np.exp(
            -((np.abs(proposal) - sigma**2 / t) ** 2) / (2 * sigma**2)
        )
        kept = proposal[accept][: count - filled]
        out[filled : filled + len(kept)] = kept
        filled += len(kept)
    return out
