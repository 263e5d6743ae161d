"""A Toeplitz strategy with integer coefficients, for noise dealt under secure aggregation.

Under distributed placement nobody, the coordinator included, may see a round's sum
without noise, and the sums live in a prime field GF(p) as Shamir shares held by m
aggregators (:mod:`veilfl.crypto.field`, :mod:`veilfl.crypto.shamir`). Field
arithmetic is integer arithmetic, so the aggregators apply an integer strategy:

    c_int = round(2^bits · c),   c_int[0] > 0,

which is the strategy C' = C_int / 2^bits (the *rounded* C, not C): every
sensitivity and epsilon must be computed for C' (:meth:`IntegerToeplitzStrategy.sensitivity`).

The design, round t = 0, 1, ... (rounds released in order, each once):

1. The clients' fixed-point updates are summed under secure aggregation; aggregator
   i holds [a_t]_i, its Shamir share of the integer aggregate a_t (each client's
   update bounded by Delta in integer units: clip·scale + sqrt(d)/2).
2. The aggregators deal the round's noise as today's ``"fresh"`` dealt noise
   (:mod:`veilfl.secagg.tree_noise`): each of the m dealers draws a discrete
   Gaussian vector of variance sigma_int^2 / h (h = m - t + 1 for threshold t) and
   Shamir-shares it; aggregator i sums the shares it receives into [z_t]_i. Fewer
   than t colluders know fewer than h of the vectors, so the rest add variance at
   least sigma_int^2.
3. Aggregator i keeps its shares of the last b - 1 aggregates and releases

       [r_t]_i = sum_{j=0}^{b-1} c_int[j] · [a_(t-j)]_i + [z_t]_i   (mod p),

   its share of r_t = (C_int a)_t + z_t: Shamir shares are linear, so a fixed
   integer combination of shares is a share of that combination
   (:class:`~veilfl.privacy.mf_stream.StreamingEncoder`, O(b·d) state).
4. The coordinator reconstructs r_t from any t aggregators, reads it as a signed
   integer (|r_t| < p / 2 coordinate-wise: :meth:`IntegerToeplitzStrategy.release_bound`
   must stay below (p - 1) / 2), and decodes

       xhat_t = (r_t - sum_{j>=1} c_int[j] · xhat_(t-j)) / c_int[0]
              = a_t + (C_int^-1 z)_t

   (:class:`~veilfl.privacy.mf_stream.StreamingDecoder`, floats, O(b·d) state),
   then divides by the fixed-point scale. Decoding is post-processing of the
   released r, so it costs no privacy.

Privacy. The aggregators release r = C_int a + z = 2^bits (C' a + z / 2^bits), so the
release is the matrix mechanism with strategy C' and per-release noise standard
deviation sigma_int / 2^bits in integer units. A client moves C' a by at most
Delta · sens(C') in L2 (:mod:`veilfl.privacy.min_separation`), so with
sigma_int = z · Delta · 2^bits (:meth:`IntegerToeplitzStrategy.noise_stddev`) the
release is one Gaussian mechanism of multiplier z / sens(C')
(:func:`~veilfl.privacy.mf_accounting.matrix_mechanism_epsilon`). The noise is a sum
of discrete Gaussians rather than a Gaussian; Kairouz, Liu and Steinke 2021 ("The
Distributed Discrete Gaussian Mechanism") bound the difference, negligible at these
scales, exactly as for the tree's dealt noise. Epsilon against the coordinator and
against the public is one number.

Safety rules for whoever drives the encoder (the aggregator's state machine): a
round is released with one aggregate only (two releases of round t with different
aggregates under the same noise would give away their difference without noise),
rounds are released in order, and the encoder's state (shares of past aggregates) is
stored like the share spool, durably and owner-only, before a release leaves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError
from veilfl.privacy.banded_toeplitz import banded_toeplitz_sensitivity, toeplitz_matrix
from veilfl.privacy.min_separation import minsep_sensitivity

__all__ = ["MAX_SCALE_BITS", "IntegerToeplitzStrategy", "scaled_coefficients"]

MAX_SCALE_BITS = 30
"""The most bits of scale: an integer coefficient then still fits below 2^31, the
field veilfl shares in (:data:`veilfl.crypto.field.MERSENNE_31`)."""


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= MAX_SCALE_BITS:
        raise ConfigurationError(
            f"The coefficients' scale must be 0 to {MAX_SCALE_BITS} bits; got {bits!r}."
        )


def scaled_coefficients(coefficients: Sequence[float], bits: int) -> tuple[int, ...]:
    """round(2^bits · c_j) for each coefficient.

    Raises:
        ConfigurationError: for bits outside 0..30, coefficients that are empty or not
            finite, or a c_0 that rounds to 0 or below (the strategy would not be
            invertible: use more bits).
    """
    _check_bits(bits)
    values = [float(c) for c in coefficients]
    if not values or not all(math.isfinite(c) for c in values):
        raise ConfigurationError("The strategy needs at least one finite coefficient.")
    scaled = tuple(round(c * 2**bits) for c in values)
    if scaled[0] <= 0:
        raise ConfigurationError(
            f"c_0 = {values[0]:g} rounds to {scaled[0]} at {bits} bits; the integer strategy "
            "needs c_0 > 0: use more bits."
        )
    if any(abs(c) >= 2**31 for c in scaled):
        raise ConfigurationError(
            f"At {bits} bits a coefficient reaches 2^31; use fewer bits or normalise the "
            "coefficients."
        )
    return scaled


@dataclass(frozen=True)
class IntegerToeplitzStrategy:
    """The lower-triangular Toeplitz strategy C' = C_int / 2^bits (module docstring).

    Attributes:
        coefficients: c_int, the integer coefficients (c_int[0] > 0).
        bits: The scale: C' = C_int / 2^bits.

    Raises:
        ConfigurationError: for empty coefficients, c_int[0] <= 0, non-integers or
            bits outside 0..30.
    """

    coefficients: tuple[int, ...]
    bits: int

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if (
            not self.coefficients
            or any(isinstance(c, bool) or not isinstance(c, int) for c in self.coefficients)
            or self.coefficients[0] <= 0
        ):
            raise ConfigurationError("An integer strategy needs integer coefficients with c_0 > 0.")

    @classmethod
    def rounded(cls, coefficients: Sequence[float], bits: int) -> IntegerToeplitzStrategy:
        """The strategy :func:`scaled_coefficients` makes of float coefficients."""
        return cls(scaled_coefficients(coefficients, bits), bits)

    @property
    def bands(self) -> int:
        """b, the number of coefficients (and the window the encoder keeps)."""
        return len(self.coefficients)

    def strategy_coefficients(self) -> npt.NDArray[np.float64]:
        """C''s coefficients: c_int / 2^bits."""
        return np.array(self.coefficients, dtype=np.float64) / 2.0**self.bits

    def sensitivity(self, *, rounds: int, max_participations: int, min_separation: int) -> float:
        """The min-separation sensitivity of C' (of the rounded strategy), in units
        of the per-update bound: closed form when b <= separation, else the general
        :func:`~veilfl.privacy.min_separation.minsep_sensitivity`.

        Raises:
            ConfigurationError: for invalid rounds or participation limits.
        """
        coefficients = self.strategy_coefficients()
        if self.bands <= min_separation:
            return banded_toeplitz_sensitivity(
                coefficients,
                rounds=rounds,
                max_participations=max_participations,
                min_separation=min_separation,
            )
        return minsep_sensitivity(
            toeplitz_matrix(coefficients, rounds),
            max_participations=max_participations,
            min_separation=min_separation,
        )

    def noise_stddev(self, *, noise_multiplier: float, per_update_bound: float) -> float:
        """sigma_int = z · Delta · 2^bits: the total standard deviation of each
        release's integer noise for noise multiplier z, where one client's update is
        at most Delta (``per_update_bound``) in integer units.

        Raises:
            ConfigurationError: for a negative or non-finite argument.
        """
        if not (noise_multiplier >= 0 and per_update_bound >= 0) or not math.isfinite(
            noise_multiplier * per_update_bound
        ):
            raise ConfigurationError(
                "The noise multiplier and the per-update bound must be finite and >= 0."
            )
        return noise_multiplier * per_update_bound * 2.0**self.bits

    def release_bound(self, *, aggregate_bound: int, noise_bound: int) -> int:
        """The largest |r_t| a coordinate can reach: sum_j |c_int[j]| · aggregate_bound
        + noise_bound. Keep it at most (p - 1) / 2 so that the signed release does
        not wrap around the field.

        Raises:
            ConfigurationError: for a negative bound.
        """
        if aggregate_bound < 0 or noise_bound < 0:
            raise ConfigurationError("The aggregate and noise bounds must be >= 0.")
        return sum(abs(c) for c in self.coefficients) * aggregate_bound + noise_bound
