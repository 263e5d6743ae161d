"""Vectorised arithmetic in the quadratic extension GF(p^2) = GF(p)[i] / (i^2 + 1).

For a prime p = 3 (mod 4), -1 is not a square modulo p, so i^2 + 1 is irreducible and
GF(p)[i] / (i^2 + 1) is the field with p^2 elements, "complex numbers modulo p". The
Mersenne prime 2**31 - 1 is 3 modulo 4.

The verifiers of :mod:`veilfl.crypto.flp` draw their query points from GF(p^2) minus
GF(p): such a point is never one of the (base-field) interpolation nodes, and a
polynomial of degree D vanishes at a uniformly random one with probability at most
D / (p^2 - p) instead of D / p (Schwartz-Zippel), so each query point is worth about
62 bits at p = 2**31 - 1 where a base-field point is worth 31.

Representation: an array of extension elements is a uint64 array whose last axis has
length 2, ``[..., 0]`` the real and ``[..., 1]`` the imaginary part, each in [0, p).
Every function expects reduced inputs and returns reduced outputs; none keeps state.
Products of two reduced parts are below 2**62, so a product of extension elements needs
one reduction per partial product and no wider integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31, FieldArray, PrimeField
from veilfl.errors import ConfigurationError, CryptoError

__all__ = ["MERSENNE_31_EXT", "ExtArray", "QuadraticExtension", "base_inverse"]

ExtArray = npt.NDArray[np.uint64]
"""Extension-field elements: uint64, last axis of length 2 (real, imaginary), each in [0, p)."""


@dataclass(frozen=True)
class QuadraticExtension:
    """GF(p^2) as GF(p)[i] / (i^2 + 1), for a prime p = 3 (mod 4).

    Attributes:
        base: The prime field GF(p).

    Raises:
        ConfigurationError: if p is not 3 modulo 4 (then i^2 + 1 factors and the
            quotient is not a field).
    """

    base: PrimeField = MERSENNE_31

    def __post_init__(self) -> None:
        if self.base.modulus % 4 != 3:
            raise ConfigurationError(
                f"GF(p)[i]/(i^2 + 1) is a field only for p = 3 (mod 4); got p = "
                f"{self.base.modulus}. Use MERSENNE_31."
            )

    @property
    def p(self) -> np.uint64:
        """The base modulus as a numpy scalar."""
        return self.base.p

    def from_parts(self, real: npt.ArrayLike, imag: npt.ArrayLike) -> ExtArray:
        """Elements ``real + imag·i`` from (reduced) real and imaginary parts."""
        real_array = np.asarray(real, dtype=np.uint64)
        imag_array = np.asarray(imag, dtype=np.uint64)
        return np.stack(np.broadcast_arrays(real_array, imag_array), axis=-1)

    def from_base(self, values: npt.ArrayLike) -> ExtArray:
        """Base-field elements embedded in the extension (imaginary part 0)."""
        return self.from_parts(values, np.zeros_like(np.asarray(values, dtype=np.uint64)))

    def add(self, a: ExtArray, b: ExtArray) -> ExtArray:
        """Elementwise ``a + b``."""
        return (np.asarray(a, dtype=np.uint64) + np.asarray(b, dtype=np.uint64)) % self.p

    def sub(self, a: ExtArray, b: ExtArray) -> ExtArray:
        """Elementwise ``a - b``."""
        return (np.asarray(a, dtype=np.uint64) + (self.p - np.asarray(b, dtype=np.uint64))) % (
            self.p
        )

    def neg(self, a: ExtArray) -> ExtArray:
        """Elementwise ``-a``."""
        return (self.p - np.asarray(a, dtype=np.uint64)) % self.p

    def conj(self, a: ExtArray) -> ExtArray:
        """Elementwise conjugate ``re - im·i`` (the Frobenius map x -> x^p)."""
        a = np.asarray(a, dtype=np.uint64)
        return self.from_parts(a[..., 0], (self.p - a[..., 1]) % self.p)

    def mul(self, a: ExtArray, b: ExtArray) -> ExtArray:
        """Elementwise ``a · b`` = (ac - bd) + (ad + bc)i."""
        a = np.asarray(a, dtype=np.uint64)
        b = np.asarray(b, dtype=np.uint64)
        p = self.p
        ac = a[..., 0] * b[..., 0] % p
        bd = a[..., 1] * b[..., 1] % p
        ad = a[..., 0] * b[..., 1] % p
        bc = a[..., 1] * b[..., 0] % p
        return self.from_parts((ac + p - bd) % p, (ad + bc) % p)

    def square(self, a: ExtArray) -> ExtArray:
        """Elementwise ``a^2``."""
        return self.mul(a, a)

    def mul_base(self, a: ExtArray, scalars: FieldArray | int) -> ExtArray:
        """Elementwise product with base-field elements (broadcast over the last axis)."""
        a = np.asarray(a, dtype=np.uint64)
        s = np.asarray(scalars, dtype=np.uint64)
        return a * s[..., np.newaxis] % self.p

    def norm(self, a: ExtArray) -> FieldArray:
        """The norm ``a · conj(a) = re^2 + im^2``, a base-field element."""
        a = np.asarray(a, dtype=np.uint64)
        return (a[..., 0] * a[..., 0] % self.p + a[..., 1] * a[..., 1] % self.p) % self.p

    def inverse(self, a: ExtArray) -> ExtArray:
        """Elementwise multiplicative inverse ``conj(a) / norm(a)``.

        Raises:
            CryptoError: if an element is zero.
        """
        norms = self.norm(a)
        if np.any(norms == 0):
            raise CryptoError("Zero has no multiplicative inverse in GF(p^2).")
        return self.mul_base(self.conj(a), base_inverse(self.base, norms))

    def is_base(self, a: ExtArray) -> npt.NDArray[np.bool_]:
        """Whether each element lies in GF(p) (its imaginary part is zero)."""
        imaginary: npt.NDArray[np.bool_] = np.asarray(a, dtype=np.uint64)[..., 1] == 0
        return imaginary

    def sum(self, a: ExtArray, *, axis: int = 0) -> ExtArray:
        """The sum along ``axis`` (which must not be the last, the parts axis)."""
        a = np.asarray(a, dtype=np.uint64)
        if axis in (-1, a.ndim - 1):
            raise ConfigurationError("The last axis holds the real and imaginary parts.")
        # Each part is below 2**31, so up to 2**33 of them fit in a uint64.
        return np.asarray(a.sum(axis=axis, dtype=np.uint64) % self.p)

    def dot_base(self, coefficients: ExtArray, values: FieldArray) -> ExtArray:
        """``Σ_n coefficients[..., n] · values[n]`` for base-field ``values``.

        ``coefficients`` has shape (..., n, 2) and ``values`` shape (n,); each product
        is reduced before the sum, so n may be up to 2**33.
        """
        c = np.asarray(coefficients, dtype=np.uint64)
        v = np.asarray(values, dtype=np.uint64)[:, np.newaxis]
        return np.asarray((c * v % self.p).sum(axis=-2, dtype=np.uint64) % self.p)

    def random(self, rng: CsprngStream, count: int, *, outside_base: bool = False) -> ExtArray:
        """``count`` independent uniform elements, or uniform over GF(p^2) minus GF(p).

        Args:
            rng: The source of randomness.
            count: How many elements.
            outside_base: Draw from GF(p^2) \\ GF(p): the imaginary part is redrawn
                until it is non-zero (rejection sampling keeps it exactly uniform).
        """
        real = rng.uniform_field(self.base, count)
        imag = rng.uniform_field(self.base, count)
        while outside_base and np.any(imag == 0):
            zero = np.flatnonzero(imag == 0)
            imag[zero] = rng.uniform_field(self.base, zero.size)
        return self.from_parts(real, imag)


def base_inverse(field: PrimeField, values: FieldArray) -> FieldArray:
    """Elementwise inverses of non-zero base-field elements, ``v^(p-2)`` by squaring.

    Raises:
        CryptoError: if a value is zero modulo p.
    """
    values = np.asarray(values, dtype=np.uint64) % field.p
    if np.any(values == 0):
        raise CryptoError("Zero has no multiplicative inverse in a prime field.")
    result = np.ones_like(values)
    power = values.copy()
    exponent = field.modulus - 2
    while exponent:
        if exponent & 1:
            result = result * power % field.p
        power = power * power % field.p
        exponent >>= 1
    return result


MERSENNE_31_EXT = QuadraticExtension(MERSENNE_31)
"""GF((2**31 - 1)^2), where the verifiers of veilfl's proofs draw their query points."""
