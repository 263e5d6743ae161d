"""Fixed-point encoding of float vectors into GF(p), and decoding of their sums.

Each coordinate is clipped to ``[-clip_range, clip_range]``, multiplied by an
integer ``scale`` and rounded; negatives are represented as ``p - |v|``. The scale
is the largest integer with ``max_summands * clip_range * scale <= (p - 1) / 2``, so
the field sum of up to ``max_summands`` encoded vectors lies in
``[-(p-1)/2, (p-1)/2]`` and decodes without wrapping. Each encoded coordinate is off
by at most ``0.5 / scale`` (nearest rounding), so a decoded sum of n vectors is off by
at most ``n * 0.5 / scale`` per coordinate (:meth:`quantisation_bound`).

With p = 2**31 - 1, clip range 1 and 1,000 summands the scale is 1,073,741 and the
per-coordinate step about 9.3e-7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.crypto.field import FieldArray, PrimeField
from veilfl.errors import ConfigurationError

__all__ = ["FixedPointEncoding"]


@dataclass(frozen=True)
class FixedPointEncoding:
    """Float vectors to field elements and back.

    Attributes:
        field: The prime field.
        clip_range: Coordinates are clipped to ``[-clip_range, clip_range]``.
        max_summands: The most encoded vectors that will ever be summed.
    """

    field: PrimeField
    clip_range: float
    max_summands: int

    def __post_init__(self) -> None:
        if not (self.clip_range > 0 and math.isfinite(self.clip_range)):
            raise ConfigurationError("The clipping range must be a positive number.")
        if self.max_summands < 1:
            raise ConfigurationError("max_summands must be at least 1.")
        if self.scale < 1:
            raise ConfigurationError(
                f"The field is too small for {self.max_summands} summands of range "
                f"{self.clip_range}: lower max_summands or clip_range."
            )

    @property
    def half(self) -> int:
        """``(p - 1) / 2``: the largest magnitude a decoded sum may have."""
        return (self.field.modulus - 1) // 2

    @property
    def scale(self) -> int:
        """The integer fixed-point scale."""
        return math.floor(self.half / (self.max_summands * self.clip_range))

    def encode(self, vector: npt.NDArray[np.floating]) -> FieldArray:
        """Clip, scale, round to nearest and map into the field."""
        limit = float(self.scale) * self.clip_range
        scaled = np.multiply(vector, float(self.scale), dtype=np.float64)
        np.clip(scaled, -limit, limit, out=scaled)
        np.rint(scaled, out=scaled)
        # |scaled| < p / 2, so scaled + p lies in (p/2, 3p/2): exact in float64.
        scaled += float(self.field.modulus)
        encoded: FieldArray = scaled.astype(np.uint64)
        # Reduce into [0, p) without a mask: for encoded < p, encoded - p wraps around
        # to a huge value and the minimum keeps encoded.
        np.minimum(encoded, encoded - self.field.p, out=encoded)
        return encoded

    def decode_sum(self, elements: FieldArray) -> npt.NDArray[np.float64]:
        """Map field elements (a sum of encodings) back to floats."""
        signed = elements.astype(np.int64)
        signed = np.where(signed > self.half, signed - np.int64(self.field.modulus), signed)
        return signed.astype(np.float64) / self.scale

    def quantisation_bound(self, num_summands: int) -> float:
        """Largest per-coordinate error of a decoded sum of ``num_summands`` vectors
        (inside the clipping range)."""
        return num_summands * 0.5 / self.scale
