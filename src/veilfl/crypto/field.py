"""Vectorised arithmetic in a prime field GF(p), on numpy uint64 arrays.

Why p < 2**31: every reduced element is below 2**31, so

* the product of two elements is below 2**62, and a sum of up to four such products
  is below 2**64: Lagrange interpolation and Horner evaluation can multiply and add
  in uint64 and reduce once every few terms, with no overflow and no Python loop over
  coordinates;
* a sum of up to 2**33 elements fits in a uint64, so an aggregator can keep an
  unreduced running sum of shares and reduce once at the end;
* an element fits in a little-endian uint32 on the wire (4 bytes per coordinate).

The default is the Mersenne prime 2**31 - 1. Every function here expects its inputs
reduced (in [0, p)) and returns reduced outputs; none does I/O or keeps state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError, CryptoError

__all__ = ["MAX_SUM_TERMS", "MERSENNE_31", "FieldArray", "PrimeField"]

FieldArray = npt.NDArray[np.uint64]
"""A numpy array of field elements, dtype uint64, every value in [0, p)."""

MAX_SUM_TERMS = 2**33
"""How many reduced elements (each below 2**31) can be added in a uint64 without overflow."""

_MAX_MODULUS = 2**31


def _is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin: bases 2..17 are exact for n < 3.4e14 (Jaeschke 1993)."""
    if n < 2:
        return False
    for small in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % small == 0:
            return n == small
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in (2, 3, 5, 7, 11, 13, 17):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _as_elements(a: npt.ArrayLike) -> FieldArray:
    """``a`` as a uint64 array (no copy when it already is one)."""
    return np.asarray(a, dtype=np.uint64)


@dataclass(frozen=True)
class PrimeField:
    """GF(p) for a prime 2 < p < 2**31. Elements are uint64 values in [0, p).

    Attributes:
        modulus: The prime p.

    Raises:
        ConfigurationError: if the modulus is not a prime in (2, 2**31).
    """

    modulus: int

    def __post_init__(self) -> None:
        if (
            isinstance(self.modulus, bool)
            or not isinstance(self.modulus, int)
            or not 2 < self.modulus < _MAX_MODULUS
            or not _is_prime(self.modulus)
        ):
            raise ConfigurationError(
                "The field modulus must be an odd prime below 2**31 (so that products of "
                f"elements fit in 64 bits); got {self.modulus!r}. Use MERSENNE_31."
            )

    @property
    def p(self) -> np.uint64:
        """The modulus as a numpy scalar."""
        return np.uint64(self.modulus)

    def element(self, value: int) -> int:
        """``value`` (any Python int, negative too) reduced into [0, p)."""
        return value % self.modulus

    def add(self, a: FieldArray, b: FieldArray) -> FieldArray:
        """Elementwise ``a + b``."""
        return (_as_elements(a) + _as_elements(b)) % self.p

    def sub(self, a: FieldArray, b: FieldArray) -> FieldArray:
        """Elementwise ``a - b``."""
        return (_as_elements(a) + (self.p - _as_elements(b))) % self.p

    def neg(self, a: FieldArray) -> FieldArray:
        """Elementwise ``-a``."""
        return (self.p - _as_elements(a)) % self.p

    def mul_scalar(self, a: FieldArray, scalar: int) -> FieldArray:
        """Elementwise ``scalar * a`` (the product is below 2**62 before reduction)."""
        return (_as_elements(a) * np.uint64(self.element(scalar))) % self.p

    def sum(self, arrays: FieldArray, *, axis: int = 0) -> FieldArray:
        """The field sum along ``axis``, reduced once at the end.

        Raises:
            ConfigurationError: for more than :data:`MAX_SUM_TERMS` terms, which could
                overflow the uint64 accumulator.
        """
        arrays = _as_elements(arrays)
        if arrays.shape[axis] > MAX_SUM_TERMS:
            raise ConfigurationError(
                f"Cannot sum more than 2**33 field vectors at once; got {arrays.shape[axis]}."
            )
        return np.asarray(np.remainder(arrays.sum(axis=axis, dtype=np.uint64), self.p))

    def inverse(self, value: int) -> int:
        """The multiplicative inverse of a non-zero scalar (``pow(value, -1, p)``).

        Raises:
            CryptoError: for a value that is zero modulo p.
        """
        if self.element(value) == 0:
            raise CryptoError("Zero has no multiplicative inverse in a prime field.")
        return pow(value, -1, self.modulus)


MERSENNE_31 = PrimeField(2**31 - 1)
"""GF(2**31 - 1), the field veilfl shares in."""
