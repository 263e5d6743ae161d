"""Vectorised arithmetic in a prime field GF(p), on numpy uint64 arrays.

The modulus must be a prime below 2**31: then the product of two reduced elements
is below 2**62 and a sum of up to four such products still fits in a uint64, so
every operation is exact in numpy's fixed-width integers with no Python loop over
coordinates. The default is the Mersenne prime 2**31 - 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError

__all__ = ["MERSENNE_31", "FieldArray", "PrimeField"]

FieldArray = npt.NDArray[np.uint64]


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    for small in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % small == 0:
            return n == small
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in (2, 3, 5, 7, 11, 13, 17):  # deterministic for n < 3.4e14
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


@dataclass(frozen=True)
class PrimeField:
    """GF(p) for a prime p < 2**31. Elements are uint64 values in [0, p).

    Attributes:
        modulus: The prime p.
    """

    modulus: int

    def __post_init__(self) -> None:
        if not 2 < self.modulus < 2**31 or not _is_prime(self.modulus):
            raise ConfigurationError(
                f"The field modulus must be a prime between 3 and 2**31 - 1; got {self.modulus}."
            )

    @property
    def p(self) -> np.uint64:
        """The modulus as a numpy scalar."""
        return np.uint64(self.modulus)

    def element(self, value: int) -> int:
        """``value`` reduced into [0, p)."""
        return value % self.modulus

    def add(self, a: FieldArray, b: FieldArray) -> FieldArray:
        """Elementwise ``a + b``."""
        return (a + b) % self.p

    def sub(self, a: FieldArray, b: FieldArray) -> FieldArray:
        """Elementwise ``a - b``."""
        return (a + (self.p - b)) % self.p

    def neg(self, a: FieldArray) -> FieldArray:
        """Elementwise ``-a``."""
        return (self.p - a) % self.p

    def mul_scalar(self, a: FieldArray, scalar: int) -> FieldArray:
        """Elementwise ``scalar * a``."""
        return (a * np.uint64(self.element(scalar))) % self.p

    def sum(self, arrays: FieldArray, *, axis: int = 0) -> FieldArray:
        """Sum along ``axis`` (safe for up to 2**32 terms: each term is below 2**31)."""
        return np.asarray(arrays.sum(axis=axis, dtype=np.uint64) % self.p, dtype=np.uint64)

    def inverse(self, value: int) -> int:
        """The multiplicative inverse of a non-zero scalar.

        Raises:
            ZeroDivisionError: for zero.
        """
        if self.element(value) == 0:
            raise ZeroDivisionError("Zero has no inverse in a field.")
        return pow(value, -1, self.modulus)


MERSENNE_31 = PrimeField(2**31 - 1)
