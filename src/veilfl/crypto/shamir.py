"""Shamir secret sharing of vectors over GF(p) (Shamir 1979, "How to share a secret").

A vector secret s is shared t-of-m by drawing, per coordinate, a random polynomial
``f(x) = s + c_1 x + ... + c_{t-1} x^{t-1}`` and giving party j the values ``f(j)``,
j = 1..m. Any t shares determine f and so s (Lagrange interpolation at 0); any t - 1
shares are uniformly distributed whatever s is, so they reveal nothing about it.

Sharing is linear: the coordinate-wise sum of several secrets' shares (same j) is a
share of the sum of the secrets. Secure aggregation rests on this.

The coefficients come from a :class:`~veilfl.crypto.csprng.CsprngStream`, never from
``numpy.random``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import FieldArray, PrimeField
from veilfl.errors import ConfigurationError, ReconstructionError

__all__ = ["MAX_SHARES", "ShamirScheme", "Share", "lagrange_coefficients_at_zero", "sum_shares"]

MAX_SHARES = 16


@dataclass(frozen=True)
class Share:
    """Party ``index``'s share: the sharing polynomials evaluated at x = index.

    Attributes:
        index: The evaluation point, 1..m.
        values: One field element per coordinate of the secret.
    """

    index: int
    values: FieldArray

    def __repr__(self) -> str:  # never print share values
        return f"Share(index={self.index}, length={len(self.values)})"


def lagrange_coefficients_at_zero(indices: Sequence[int], field: PrimeField) -> list[int]:
    """Coefficients ``λ_j`` with ``f(0) = Σ λ_j f(x_j)`` for distinct points ``x_j``.

    Raises:
        ReconstructionError: if the points are not distinct and non-zero.
    """
    if len(set(indices)) != len(indices) or any(field.element(i) == 0 for i in indices):
        raise ReconstructionError("Share indices must be distinct and non-zero.")
    coefficients = []
    for j in indices:
        numerator, denominator = 1, 1
        for k in indices:
            if k != j:
                numerator = numerator * k % field.modulus
                denominator = denominator * (k - j) % field.modulus
        coefficients.append(numerator * field.inverse(denominator) % field.modulus)
    return coefficients


def sum_shares(shares: Sequence[Share], field: PrimeField) -> Share:
    """The coordinate-wise sum of shares held by one party.

    Raises:
        ReconstructionError: if the shares belong to different parties or lengths differ.
    """
    if not shares:
        raise ReconstructionError("There are no shares to add.")
    index = shares[0].index
    length = len(shares[0].values)
    if any(s.index != index or len(s.values) != length for s in shares):
        raise ReconstructionError("Only shares of the same party and length can be added.")
    total = np.zeros(length, dtype=np.uint64)
    for share in shares:
        total = field.add(total, share.values)
    return Share(index=index, values=total)


@dataclass(frozen=True)
class ShamirScheme:
    """t-of-m sharing of field vectors.

    Attributes:
        threshold: t, shares needed to reconstruct (1 <= t <= m).
        num_shares: m, shares made (m <= 16).
        field: The prime field.
    """

    threshold: int
    num_shares: int
    field: PrimeField

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= self.num_shares <= MAX_SHARES:
            raise ConfigurationError(
                f"Shamir sharing needs 1 <= threshold <= shares <= {MAX_SHARES}; got "
                f"threshold {self.threshold} of {self.num_shares}."
            )

    def split(self, secret: FieldArray, *, rng: CsprngStream) -> list[Share]:
        """Share ``secret`` (elements in [0, p)) into ``num_shares`` shares.

        Args:
            secret: The vector to share.
            rng: Source of the polynomial coefficients.
        """
        field = self.field
        secret = np.asarray(secret, dtype=np.uint64)
        if secret.size and int(secret.max()) >= field.modulus:
            raise ConfigurationError("The secret has values outside the field.")
        coefficients = [rng.uniform_field(field, len(secret)) for _ in range(self.threshold - 1)]
        if len(coefficients) == 1:
            return self._split_linear(secret, coefficients[0])
        shares = []
        for x in range(1, self.num_shares + 1):
            # Horner's rule in place: every intermediate stays below 2**31 * 17.
            if not coefficients:  # t = 1: every share is the secret itself
                shares.append(Share(index=x, values=secret.copy()))
                continue
            value = np.multiply(coefficients[-1], np.uint64(x))
            for coefficient in reversed(coefficients[:-1]):
                value += coefficient
                np.remainder(value, field.p, out=value)
                value *= np.uint64(x)
            value += secret
            np.remainder(value, field.p, out=value)
            shares.append(Share(index=x, values=value))
        return shares

    def _split_linear(self, secret: FieldArray, slope: FieldArray) -> list[Share]:
        """t = 2: f(x) = s + c·x, so f(x + 1) = f(x) + c; additions only."""
        p = self.field.p
        scratch = np.empty_like(secret)
        shares = []
        previous = secret
        for x in range(1, self.num_shares + 1):
            value = np.add(previous, slope)  # both below p: the sum is below 2p
            np.subtract(value, p, out=scratch)  # wraps around when value < p ...
            np.minimum(value, scratch, out=value)  # ... so the minimum is value mod p
            shares.append(Share(index=x, values=value))
            previous = value
        return shares

    def reconstruct(self, shares: Sequence[Share]) -> FieldArray:
        """The secret from any ``threshold`` or more shares of distinct parties.

        Uses all the shares given (more than t is fine: they lie on the same
        polynomial when they are honest).

        Raises:
            ReconstructionError: with fewer than t shares, repeated parties, indices
                outside 1..m, or unequal lengths.
        """
        if len(shares) < self.threshold:
            raise ReconstructionError(
                f"Reconstruction needs {self.threshold} shares; got {len(shares)}."
            )
        indices = [s.index for s in shares]
        if any(not 1 <= i <= self.num_shares for i in indices):
            raise ReconstructionError(f"Share indices must lie in 1..{self.num_shares}.")
        lengths = {len(s.values) for s in shares}
        if len(lengths) != 1:
            raise ReconstructionError("The shares have different lengths.")
        field = self.field
        total = np.zeros(lengths.pop(), dtype=np.uint64)
        term = np.empty_like(total)
        for share, weight in zip(
            shares, lagrange_coefficients_at_zero(indices, field), strict=True
        ):
            np.multiply(share.values, np.uint64(weight), out=term)  # below 2**62
            np.remainder(term, field.p, out=term)
            total += term  # at most 16 terms below 2**31: no overflow
        np.remainder(total, field.p, out=total)
        return total
