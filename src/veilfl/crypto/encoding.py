"""Fixed-point encoding of float vectors into GF(p), and decoding of their sums.

Encoding, as in secure-aggregation practice (Bonawitz et al. 2017, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning", CCS; Kairouz et al. 2021, "The
Distributed Discrete Gaussian Mechanism", ICML):

1. **Clip** each coordinate to ``[-clip_range, clip_range]``. Clipping is the only
   lossy step besides rounding: a coordinate outside the range is encoded as the
   nearest end of it, and the error bounds below hold for the clipped vector.
2. **Scale** by the integer ``scale`` and **round** to an integer: to the nearest one
   (default), or stochastically (up with probability equal to the fractional part,
   so the rounding is unbiased) when a :class:`~veilfl.crypto.csprng.CsprngStream` is
   given.
3. **Map** an integer v into the field as ``v`` if v >= 0 and ``p - |v|`` otherwise.

``scale`` is the largest integer s (capped at 2**53, where floats stop being exact)
with ``max_summands * ceil(s * clip_range) <= (p - 1) / 2``. Every encoded integer
has magnitude at most ``ceil(s * clip_range)`` whichever rounding is used, so the sum
of up to ``max_summands`` encodings lies in ``[-(p-1)/2, (p-1)/2]``: the field sum
never wraps and decodes to the integer sum exactly. Nearest rounding moves each
coordinate by at most ``0.5 / scale``, stochastic rounding by less than ``1 / scale``,
so a decoded sum of n vectors is off by at most n times that per coordinate
(:meth:`FixedPointEncoding.quantisation_bound`).

With p = 2**31 - 1, clip range 1 and 1,000 summands the scale is 1,073,741 and the
per-coordinate step about 9.3e-7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import FieldArray, PrimeField
from veilfl.errors import ConfigurationError, CryptoError

__all__ = ["MAX_SCALE", "FixedPointEncoding"]

MAX_SCALE = 2**53
"""The largest scale used: beyond it, integers are not all exact in float64."""


def _largest_scale(*, bound: int, clip_range: float) -> int:
    """The largest integer s <= MAX_SCALE with ``ceil(float(s) * clip_range) <= bound``.

    Computed with the same float64 product that :meth:`FixedPointEncoding.encode` clips
    to, so the guarantee holds for the floats actually used, not only in exact arithmetic.
    """
    estimate = bound / clip_range
    scale = MAX_SCALE if estimate >= MAX_SCALE else math.floor(estimate)
    while scale > 0 and math.ceil(float(scale) * clip_range) > bound:
        scale -= 1
    while scale < MAX_SCALE and math.ceil(float(scale + 1) * clip_range) <= bound:
        scale += 1
    return scale


@dataclass(frozen=True)
class FixedPointEncoding:
    """Float vectors to field elements, and sums of them back to floats.

    Attributes:
        field: The prime field.
        clip_range: Each coordinate is clipped to ``[-clip_range, clip_range]``.
        max_summands: The most encoded vectors that will ever be summed; the scale is
            chosen so that such a sum never wraps around the field.

    Raises:
        ConfigurationError: if ``clip_range`` is not a positive finite number,
            ``max_summands`` is below 1, or the field is too small for any scale >= 1.
    """

    field: PrimeField
    clip_range: float
    max_summands: int

    def __post_init__(self) -> None:
        if isinstance(self.clip_range, bool) or not isinstance(self.clip_range, int | float):
            raise ConfigurationError("The clipping range must be a number.")
        if not (math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ConfigurationError(
                f"The clipping range must be a positive finite number; got {self.clip_range}."
            )
        if (
            isinstance(self.max_summands, bool)
            or not isinstance(self.max_summands, int)
            or self.max_summands < 1
        ):
            raise ConfigurationError(
                f"max_summands must be a whole number of at least 1; got {self.max_summands!r}."
            )
        if self.scale < 1:
            raise ConfigurationError(
                f"GF({self.field.modulus}) is too small to sum {self.max_summands} vectors "
                f"clipped to ±{self.clip_range} without wrapping: lower max_summands or "
                "clip_range."
            )

    @property
    def half(self) -> int:
        """``(p - 1) / 2``: the largest magnitude a decoded sum may have."""
        return (self.field.modulus - 1) // 2

    @property
    def scale(self) -> int:
        """The integer fixed-point scale: one unit of an encoding is ``1 / scale``."""
        return _largest_scale(bound=self.half // self.max_summands, clip_range=self.clip_range)

    @property
    def max_encoded(self) -> int:
        """The largest magnitude of one encoded coordinate, ``ceil(scale * clip_range)``."""
        return math.ceil(float(self.scale) * self.clip_range)

    def encode(
        self, vector: npt.NDArray[np.floating], *, rng: CsprngStream | None = None
    ) -> FieldArray:
        """Clip, scale, round and map a float vector into the field.

        Args:
            vector: The floats (any shape; the result has the same shape).
            rng: With a stream, round stochastically (unbiased, error below
                ``1 / scale``); without, round to the nearest integer (half to even,
                error at most ``0.5 / scale``).

        Raises:
            CryptoError: if the vector holds a NaN (infinities are clipped).
        """
        # Clip before scaling, in float64: nothing overflows, and |v| <= clip_range
        # gives |v * scale| <= clip_range * scale, the float product the scale was
        # chosen for (multiplication by a positive float is monotone).
        scaled = np.array(vector, dtype=np.float64)  # a copy: the caller's vector stays
        np.clip(scaled, -self.clip_range, self.clip_range, out=scaled)
        scaled *= float(self.scale)
        if np.isnan(scaled).any():
            raise CryptoError(
                f"Cannot encode a vector holding {int(np.isnan(scaled).sum())} NaN "
                "coordinates; the update is broken (check the learning rate or loss)."
            )
        if rng is None:
            np.rint(scaled, out=scaled)
        else:
            rounded = np.floor(scaled)
            scaled -= rounded  # the fractional parts, in [0, 1)
            rounded += rng.uniform_unit(scaled.size).reshape(scaled.shape) < scaled
            scaled = rounded
        # |scaled| <= max_encoded < p / 2, so scaled + p lies in (p/2, 3p/2): exact in
        # float64, and non-negative, so the cast to uint64 is exact.
        scaled += float(self.field.modulus)
        encoded: FieldArray = scaled.astype(np.uint64)
        # Reduce into [0, p) without a division: for encoded < p, encoded - p wraps
        # around to a huge value and the minimum keeps encoded.
        np.minimum(encoded, encoded - self.field.p, out=encoded)
        return encoded

    def decode_sum(self, elements: FieldArray) -> npt.NDArray[np.float64]:
        """Map field elements (a sum of encodings) back to floats.

        Elements above ``(p - 1) / 2`` stand for negative numbers.

        Raises:
            CryptoError: if an element is not in [0, p).
        """
        signed = np.asarray(elements, dtype=np.uint64).astype(np.int64)
        if signed.size and int(signed.max()) >= self.field.modulus:
            raise CryptoError("Cannot decode values outside the field; reduce them mod p first.")
        np.subtract(signed, self.field.modulus, out=signed, where=signed > self.half)
        return signed / float(self.scale)

    def quantisation_bound(self, num_summands: int, *, stochastic: bool = False) -> float:
        """The largest per-coordinate error of a decoded sum of ``num_summands`` vectors.

        The error is measured against the sum of the clipped vectors. It is
        ``num_summands * 0.5 / scale`` for nearest rounding and ``num_summands / scale``
        (a strict bound) for stochastic rounding.

        Raises:
            ConfigurationError: if ``num_summands`` is negative or above
                ``max_summands`` (such a sum may wrap, and then no bound holds).
        """
        if not 0 <= num_summands <= self.max_summands:
            raise ConfigurationError(
                f"The quantisation bound holds for 0 to {self.max_summands} summands; "
                f"got {num_summands}."
            )
        per_coordinate = 1.0 if stochastic else 0.5
        return num_summands * per_coordinate / self.scale
