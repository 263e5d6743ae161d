"""Shamir secret sharing of vectors over GF(p) (Shamir 1979, "How to share a secret").

A vector secret s is shared t-of-m by drawing, for each coordinate, a uniformly random
polynomial ``f(x) = s + c_1 x + ... + c_{t-1} x^{t-1}`` and giving party j the value
``f(j)``, j = 1..m. Any t shares determine f and so s (Lagrange interpolation at 0);
any t - 1 shares are uniformly distributed whatever s is, so they reveal nothing about
it (information-theoretically, not just computationally).

Sharing is linear: the coordinate-wise sum of several secrets' shares held by one
party is that party's share of the sum of the secrets. Secure aggregation rests on
this: each aggregator sums the shares it holds, and t aggregate shares reconstruct
the sum of the clients' vectors and nothing else.

Threat model: the parties are honest-but-curious. Plain Shamir sharing detects no
cheating: a wrong share reconstructs a wrong secret. Give :meth:`ShamirScheme.reconstruct`
more than t shares with ``verify=True`` to detect inconsistent shares (it cannot tell
which share is wrong); protecting against malicious dealers would need verifiable
secret sharing (Feldman 1987).

The coefficients come from a :class:`~veilfl.crypto.csprng.CsprngStream`, never from
``numpy.random``. Every operation is vectorised over the coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MAX_SUM_TERMS, MERSENNE_31, FieldArray, PrimeField
from veilfl.errors import ConfigurationError, CryptoError, ReconstructionError

__all__ = [
    "MAX_SHARES",
    "ShamirScheme",
    "Share",
    "add_shares",
    "lagrange_coefficients_at_zero",
    "sum_shares",
]

MAX_SHARES = 16
"""The most shares (aggregators) a scheme may have; share indices are 1..16."""

# (p - 1)**2 * 4 < 2**64: four products of reduced elements can be summed before reducing.
_PRODUCTS_PER_REDUCTION = 3  # plus the reduced running total: still below 2**64


@dataclass(frozen=True, eq=False)
class Share:
    """Party ``index``'s share: the sharing polynomials evaluated at x = ``index``.

    Attributes:
        index: The evaluation point, 1..16.
        values: One field element per coordinate of the secret.

    Raises:
        ReconstructionError: if ``index`` is not an integer in 1..16.
    """

    index: int
    values: FieldArray

    def __post_init__(self) -> None:
        if (
            isinstance(self.index, bool)
            or not isinstance(self.index, int | np.integer)
            or not 1 <= self.index <= MAX_SHARES
        ):
            raise ReconstructionError(
                f"A share index must be an integer in 1..{MAX_SHARES}; got {self.index!r}."
            )

    def __repr__(self) -> str:  # never print share values
        return f"Share(index={self.index}, length={len(self.values)})"


def _lagrange_coefficients(indices: Sequence[int], at: int, field: PrimeField) -> list[int]:
    """``λ_j`` with ``f(at) = Σ λ_j f(x_j)`` for every polynomial f of degree < len(indices)."""
    points = [field.element(i) for i in indices]
    if len(set(points)) != len(points):
        raise ReconstructionError("Share indices must be distinct (modulo p).")
    coefficients = []
    for j, x_j in enumerate(points):
        numerator, denominator = 1, 1
        for k, x_k in enumerate(points):
            if k != j:
                numerator = numerator * (at - x_k) % field.modulus
                denominator = denominator * (x_j - x_k) % field.modulus
        coefficients.append(numerator * field.inverse(denominator) % field.modulus)
    return coefficients


def lagrange_coefficients_at_zero(
    indices: Sequence[int], field: PrimeField = MERSENNE_31
) -> list[int]:
    """The Lagrange coefficients ``λ_j`` with ``f(0) = Σ λ_j f(x_j)``.

    ``λ_j = Π_{k≠j} x_k / (x_k - x_j)``, for distinct, non-zero points ``x_j``. They
    hold for every polynomial of degree below ``len(indices)``.

    Args:
        indices: The points x_j (share indices).
        field: The prime field.

    Raises:
        ReconstructionError: if the points are not distinct and non-zero modulo p.
    """
    if any(field.element(i) == 0 for i in indices):
        raise ReconstructionError("Share indices must be non-zero: f(0) is the secret.")
    return _lagrange_coefficients(indices, 0, field)


def _check_same_party(shares: Sequence[Share]) -> tuple[int, int]:
    if not shares:
        raise ReconstructionError("There are no shares to add.")
    index, length = shares[0].index, len(shares[0].values)
    if any(s.index != index for s in shares):
        raise ReconstructionError(
            "Only shares held by the same party (same index) can be added; got indices "
            f"{sorted({s.index for s in shares})}."
        )
    if any(len(s.values) != length for s in shares):
        raise ReconstructionError("Only shares of the same length can be added.")
    return index, length


def add_shares(a: Share, b: Share, field: PrimeField = MERSENNE_31) -> Share:
    """The coordinate-wise sum of two shares held by one party (a share of a + b).

    Raises:
        ReconstructionError: if the indices or the lengths differ.
    """
    index, _ = _check_same_party([a, b])
    return Share(index=index, values=field.add(a.values, b.values))


def sum_shares(shares: Sequence[Share], field: PrimeField = MERSENNE_31) -> Share:
    """The coordinate-wise sum of shares held by one party (a share of the sum).

    Accumulates in uint64 without reducing (each term is below 2**31) and reduces once.

    Raises:
        ReconstructionError: if there are no shares, or their indices or lengths differ.
    """
    index, length = _check_same_party(shares)
    if len(shares) > MAX_SUM_TERMS:
        raise ReconstructionError("Cannot add more than 2**33 shares in one sum.")
    total = np.zeros(length, dtype=np.uint64)
    for share in shares:
        total += share.values
    np.remainder(total, field.p, out=total)
    return Share(index=index, values=total)


@dataclass(frozen=True)
class ShamirScheme:
    """t-of-m Shamir sharing of field vectors; share j is the evaluation at x = j.

    Attributes:
        threshold: t, the shares needed to reconstruct (1 <= t <= m). Any t - 1
            shares reveal nothing about the secret.
        num_shares: m, the shares made (m <= 16).
        field: The prime field.

    Raises:
        ConfigurationError: unless ``1 <= threshold <= num_shares <= 16``.
    """

    threshold: int
    num_shares: int
    field: PrimeField = MERSENNE_31

    def __post_init__(self) -> None:
        numbers = (self.threshold, self.num_shares)
        if any(isinstance(n, bool) or not isinstance(n, int) for n in numbers) or not (
            1 <= self.threshold <= self.num_shares <= MAX_SHARES
        ):
            raise ConfigurationError(
                f"Shamir sharing needs 1 <= threshold <= shares <= {MAX_SHARES}; got "
                f"threshold {self.threshold!r} of {self.num_shares!r}."
            )

    def split(self, secret: FieldArray, *, rng: CsprngStream) -> list[Share]:
        """Share ``secret`` into ``num_shares`` shares, any ``threshold`` of which rebuild it.

        Args:
            secret: The 1-D vector to share, every element in [0, p).
            rng: The source of the polynomials' random coefficients.

        Returns:
            Shares 1..m, in order.

        Raises:
            CryptoError: if the secret is not a 1-D vector of field elements.
        """
        field = self.field
        secret = np.asarray(secret, dtype=np.uint64)
        if secret.ndim != 1:
            raise CryptoError(f"Only 1-D vectors can be shared; got shape {secret.shape}.")
        if secret.size and int(secret.max()) >= field.modulus:
            raise CryptoError("The secret has values outside the field; reduce them mod p.")
        if self.threshold == 1:  # a constant polynomial: every share is the secret
            return [Share(index=x, values=secret.copy()) for x in range(1, self.num_shares + 1)]
        coefficients = [rng.uniform_field(field, secret.size) for _ in range(self.threshold - 1)]
        if self.threshold == 2:
            return self._split_linear(secret, coefficients[0])
        shares = []
        for x in range(1, self.num_shares + 1):
            # Horner's rule, in place: f(x) = ((c_{t-1} x + c_{t-2}) x + ... + c_1) x + s.
            # Every intermediate is below 2**31 * 17 before it is reduced.
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
        """t = 2: f(x) = s + c·x, so f(x + 1) = f(x) + c; additions only, no division."""
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

    def _check(self, shares: Sequence[Share]) -> int:
        """Validate shares for reconstruction; return their common length."""
        if len(shares) < self.threshold:
            raise ReconstructionError(
                f"Reconstruction needs {self.threshold} shares; got {len(shares)}."
            )
        indices = [s.index for s in shares]
        if any(not 1 <= i <= self.num_shares for i in indices):
            raise ReconstructionError(
                f"Share indices must lie in 1..{self.num_shares}; got {sorted(indices)}."
            )
        if len(set(indices)) != len(indices):
            raise ReconstructionError(
                f"Each share must come from a distinct party; got indices {sorted(indices)}."
            )
        lengths = {len(s.values) for s in shares}
        if len(lengths) != 1:
            raise ReconstructionError(
                f"The shares have different lengths ({sorted(lengths)}); they are not shares "
                "of one secret."
            )
        return lengths.pop()

    def _interpolate(self, shares: Sequence[Share], at: int, length: int) -> FieldArray:
        """``f(at)`` from exactly ``threshold`` shares, vectorised."""
        field = self.field
        weights = _lagrange_coefficients([s.index for s in shares], at, field)
        total = np.zeros(length, dtype=np.uint64)
        term = np.empty_like(total)
        for count, (share, weight) in enumerate(zip(shares, weights, strict=True), start=1):
            np.multiply(share.values, np.uint64(weight), out=term)  # below 2**62
            total += term
            if count % _PRODUCTS_PER_REDUCTION == 0:
                np.remainder(total, field.p, out=total)
        np.remainder(total, field.p, out=total)
        return total

    def reconstruct(self, shares: Sequence[Share], *, verify: bool = False) -> FieldArray:
        """The secret from ``threshold`` or more shares of distinct parties.

        Interpolates from exactly the first ``threshold`` shares given; any further
        shares are ignored unless ``verify`` is true, in which case each is checked to
        lie on the same polynomials (which costs one interpolation per extra share).

        Args:
            shares: At least t shares with distinct indices in 1..m and equal lengths.
            verify: Check the shares beyond the first t for consistency.

        Raises:
            ReconstructionError: with fewer than t shares, repeated parties, indices
                outside 1..m, unequal lengths, or (with ``verify``) a share that
                disagrees with the others.
        """
        length = self._check(shares)
        basis = list(shares[: self.threshold])
        if verify:
            for extra in shares[self.threshold :]:
                if not np.array_equal(
                    self._interpolate(basis, extra.index, length),
                    np.asarray(extra.values, dtype=np.uint64),
                ):
                    raise ReconstructionError(
                        f"Share {extra.index} disagrees with the other shares: at least one "
                        "share is corrupt or comes from another secret."
                    )
        return self._interpolate(basis, 0, length)
