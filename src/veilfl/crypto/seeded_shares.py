"""t-of-m Shamir sharing in which t - 1 of the shares are 32-byte seeds.

A Shamir sharing of a secret s is a random polynomial f of degree t - 1 with f(0) = s;
party j holds f(j). Any t - 1 of the values f(1), ..., f(m) are uniformly random and
independent of s, so nothing forces them to be sent in full: parties 1..t-1 get a
32-byte seed each, and their share is the seed's expansion into uniform field elements
(AES-256-CTR keyed by a hash of the seed, :class:`~veilfl.crypto.csprng.CsprngStream`).
The values f(0) = s and f(1..t-1) then fix f, and parties t..m get the full values
f(j) = Σ_i L_{j,i} f(i), with the Lagrange coefficients L of the points 0..t-1 at j.

Privacy is unchanged (Shamir 1979): for a uniform seed expansion, f is a uniformly
random polynomial of degree t - 1 through (0, s), so any t - 1 shares are uniform
(computationally, as long as AES-256-CTR is a pseudorandom function). Only the upload
shrinks: t-of-m costs m - t + 1 full shares instead of m. Prio3 sends its helpers'
shares as seeds the same way (draft-irtf-cfrg-vdaf, "Sharding").

A seed share is bound to its index and to a caller's domain tag, so the same seed never
expands to the same values for two parties or two protocols.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31, FieldArray, PrimeField
from veilfl.crypto.kernels import line_shares
from veilfl.crypto.shamir import MAX_SHARES
from veilfl.errors import ConfigurationError, CryptoError

__all__ = ["SEED_LENGTH", "SeededShare", "SeededSharing", "expand_seed"]

SEED_LENGTH = 32
"""Bytes in a share seed."""

_DOMAIN = b"veilfl/seeded-share/v1"


def expand_seed(
    seed: bytes, *, index: int, length: int, domain: bytes, field: PrimeField = MERSENNE_31
) -> FieldArray:
    """The share of party ``index`` that ``seed`` stands for: ``length`` uniform elements.

    Args:
        seed: The 32-byte seed.
        index: The party, 1..16 (bound into the expansion).
        length: How many field elements.
        domain: The caller's domain tag (bound into the expansion).
        field: The field.

    Raises:
        CryptoError: if the seed is not 32 bytes.
    """
    if len(seed) != SEED_LENGTH:
        raise CryptoError(f"A share seed must be {SEED_LENGTH} bytes; got {len(seed)}.")
    key = hashlib.sha256(
        _DOMAIN + len(domain).to_bytes(2, "little") + domain + bytes([index]) + seed
    ).digest()
    return CsprngStream(key=key).uniform_field(field, length)


@dataclass(frozen=True, eq=False)
class SeededShare:
    """Party ``index``'s share: a seed (parties 1..t-1) or the full values (t..m).

    Attributes:
        index: The evaluation point, 1..16.
        seed: The 32-byte seed, or None for a full share.
        values: The share values, or None for a seed share.

    Raises:
        CryptoError: unless exactly one of ``seed`` and ``values`` is given.
    """

    index: int
    seed: bytes | None = None
    values: FieldArray | None = None

    def __post_init__(self) -> None:
        if (self.seed is None) == (self.values is None):
            raise CryptoError("A seeded share holds either a seed or values, not both or none.")
        if not 1 <= self.index <= MAX_SHARES:
            raise CryptoError(f"A share index must be in 1..{MAX_SHARES}; got {self.index}.")

    def __repr__(self) -> str:  # never print a seed or share values
        kind = "seed" if self.values is None else f"values[{len(self.values)}]"
        return f"SeededShare(index={self.index}, {kind})"


@dataclass(frozen=True)
class SeededSharing:
    """t-of-m Shamir sharing with parties 1..t-1 holding seeds.

    Attributes:
        threshold: t, the shares that reconstruct.
        num_shares: m.
        domain: A tag naming the protocol that uses the shares.
        field: The prime field.

    Raises:
        ConfigurationError: unless ``1 <= threshold <= num_shares <= 16``.
    """

    threshold: int
    num_shares: int
    domain: bytes
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

    def is_seeded(self, index: int) -> bool:
        """Whether party ``index`` holds a seed (it is one of 1..t-1)."""
        return 1 <= index < self.threshold

    def expand(self, share: SeededShare, length: int) -> FieldArray:
        """The values of ``share``: its seed's expansion, or its values as they are.

        Raises:
            CryptoError: if a seed is held by a party that should hold values, or the
                other way round, or the values do not have ``length`` elements.
        """
        if self.is_seeded(share.index) != (share.seed is not None):
            raise CryptoError(
                f"Party {share.index} of a {self.threshold}-of-{self.num_shares} seeded sharing "
                f"must hold {'a seed' if self.is_seeded(share.index) else 'full values'}."
            )
        if share.seed is not None:
            return expand_seed(
                share.seed, index=share.index, length=length, domain=self.domain, field=self.field
            )
        assert share.values is not None
        if len(share.values) != length:
            raise CryptoError(f"The share has {len(share.values)} values; {length} were expected.")
        return share.values

    def draw_seeds(self, *, rng: CsprngStream) -> list[bytes]:
        """Fresh seeds for parties 1..t-1."""
        return [rng.random_bytes(SEED_LENGTH) for _ in range(self.threshold - 1)]

    def deal(self, secret: FieldArray, seeded: Sequence[FieldArray]) -> list[FieldArray]:
        """The full shares f(t), ..., f(m) of the polynomial through (0, secret) and
        (i, seeded[i - 1]) for i = 1..t-1.

        Works coordinate-wise, so a caller may deal a vector in slices.

        Raises:
            CryptoError: if the number or lengths of the seeded shares are wrong.
        """
        t, p = self.threshold, self.field.p
        secret = np.asarray(secret, dtype=np.uint64)
        if len(seeded) != t - 1 or any(len(s) != len(secret) for s in seeded):
            raise CryptoError(f"Dealing needs {t - 1} seeded shares as long as the secret.")
        points = [secret, *(np.asarray(s, dtype=np.uint64) for s in seeded)]
        if t == 1:
            return [secret.copy() for _ in range(self.num_shares)]
        if t == 2:  # f(j + 1) = f(j) + slope: additions only
            return line_shares(
                points[0], points[1], self.num_shares - 1, modulus=self.field.modulus
            )
        shares = []
        for j in range(t, self.num_shares + 1):
            total = np.zeros_like(secret)
            for count, (point, weight) in enumerate(
                zip(points, _lagrange_at(t, j, self.field), strict=True), start=1
            ):
                total += point * np.uint64(weight)  # below 2**62
                if count % 3 == 0:
                    total %= p
            shares.append(total % p)
        return shares

    def split(self, secret: FieldArray, *, rng: CsprngStream) -> list[SeededShare]:
        """Share ``secret``: seeds for parties 1..t-1, values for t..m (in index order)."""
        secret = np.asarray(secret, dtype=np.uint64)
        seeds = self.draw_seeds(rng=rng)
        seeded = [
            self.expand(SeededShare(index=i, seed=seed), len(secret))
            for i, seed in enumerate(seeds, start=1)
        ]
        full = self.deal(secret, seeded)
        return [SeededShare(index=i, seed=s) for i, s in enumerate(seeds, start=1)] + [
            SeededShare(index=j, values=v) for j, v in enumerate(full, start=self.threshold)
        ]


def _lagrange_at(t: int, at: int, field: PrimeField) -> list[int]:
    """``L_i`` with ``f(at) = Σ_{i=0}^{t-1} L_i f(i)`` for every f of degree below t."""
    p = field.modulus
    weights = []
    for i in range(t):
        numerator, denominator = 1, 1
        for k in range(t):
            if k != i:
                numerator = numerator * (at - k) % p
                denominator = denominator * (i - k) % p
        weights.append(numerator * pow(denominator, -1, p) % p)
    return weights
