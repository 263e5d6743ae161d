"""The messages of verified bounds, and their binary formats (little-endian).

* :class:`ContributionShare`, client -> aggregator j (sealed to j by the caller)::

      b"VFC1" | index: u8 | shares: u8 | kind: u8 (0 seed, 1 values) | length: u32
      | blind: 32 bytes | parts: shares x 32 bytes | seed: 32 bytes  or  length x u32

* :class:`VerifierShare`, aggregator j -> coordinator::

      b"VFV1" | index: u8 | points: u8 | length: u32 | joint seed: 32 | query seed: 32
      | values: points x length x 2 x u32

Decoding never raises anything but :class:`~veilfl.errors.WireFormatError`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

from veilfl.crypto.field import MERSENNE_31, FieldArray
from veilfl.crypto.field_ext import ExtArray
from veilfl.crypto.shamir import MAX_SHARES
from veilfl.errors import WireFormatError

__all__ = ["HASH_LENGTH", "ContributionShare", "Verdict", "VerdictReason", "VerifierShare"]

HASH_LENGTH = 32
"""Bytes in a seed, blind, public part or joint-randomness seed."""

_CONTRIBUTION = struct.Struct("<4sBBBI")
_VERIFIER = struct.Struct("<4sBBI")
_MAX_UINT32 = 2**32 - 1


def _field_values(data: bytes, offset: int, count: int, what: str) -> FieldArray:
    values = np.frombuffer(data, dtype="<u4", count=count, offset=offset)
    if count and int(values.max()) >= MERSENNE_31.modulus:
        raise WireFormatError(f"The {what} holds values outside the field.")
    return values.astype(np.uint64)


@dataclass(frozen=True, eq=False)
class ContributionShare:
    """What aggregator ``index`` receives from a client.

    Attributes:
        index: The aggregator's share index, 1..m.
        blind: 32 secret bytes that hide this share's public part.
        parts: The public parts of all m aggregators, in index order.
        seed: The 32-byte seed of the share (aggregators 1..t-1), or None.
        values: The full input share (aggregators t..m), or None.
    """

    index: int
    blind: bytes
    parts: tuple[bytes, ...]
    seed: bytes | None = None
    values: FieldArray | None = None

    def __post_init__(self) -> None:
        if (self.seed is None) == (self.values is None):
            raise WireFormatError("A contribution share holds either a seed or values.")
        if not 1 <= self.index <= len(self.parts) <= MAX_SHARES:
            raise WireFormatError("A contribution share's index must be one of its parts.")
        if len(self.blind) != HASH_LENGTH or any(len(p) != HASH_LENGTH for p in self.parts):
            raise WireFormatError("Blinds and parts are 32 bytes each.")
        if self.seed is not None and len(self.seed) != HASH_LENGTH:
            raise WireFormatError("A share seed is 32 bytes.")

    def __repr__(self) -> str:  # never print a seed, blind or values
        kind = "seed" if self.values is None else f"values[{len(self.values)}]"
        return f"ContributionShare(index={self.index}, {kind})"

    def to_bytes(self) -> bytes:
        """The binary form (module docstring)."""
        if self.seed is not None:
            kind, length, payload = 0, 0, self.seed
        else:
            assert self.values is not None
            values = np.asarray(self.values)
            if values.size and int(values.max()) > _MAX_UINT32:
                raise WireFormatError("Share values must be reduced field elements.")
            kind, length, payload = 1, values.size, values.astype("<u4").tobytes()
        header = _CONTRIBUTION.pack(b"VFC1", self.index, len(self.parts), kind, length)
        return header + self.blind + b"".join(self.parts) + payload

    @classmethod
    def from_bytes(cls, data: bytes) -> ContributionShare:
        """Parse :meth:`to_bytes` output.

        Raises:
            WireFormatError: naming what is malformed.
        """
        if len(data) < _CONTRIBUTION.size:
            raise WireFormatError("The contribution share is too short to hold its header.")
        magic, index, shares, kind, length = _CONTRIBUTION.unpack_from(data)
        if magic != b"VFC1":
            raise WireFormatError("The data is not a version-1 veilfl contribution share.")
        if not 1 <= index <= shares <= MAX_SHARES or kind not in (0, 1):
            raise WireFormatError("The contribution share's index, share count or kind is invalid.")
        offset = _CONTRIBUTION.size
        body = HASH_LENGTH * (1 + shares) + (HASH_LENGTH if kind == 0 else 4 * length)
        if len(data) != offset + body or (kind == 0 and length != 0):
            raise WireFormatError(
                f"The contribution share is {len(data)} bytes; {offset + body} were expected."
            )
        blind = data[offset : offset + HASH_LENGTH]
        offset += HASH_LENGTH
        parts = tuple(
            data[offset + i * HASH_LENGTH : offset + (i + 1) * HASH_LENGTH] for i in range(shares)
        )
        offset += shares * HASH_LENGTH
        if kind == 0:
            return cls(index=index, blind=blind, parts=parts, seed=data[offset:])
        values = _field_values(data, offset, length, "contribution share")
        return cls(index=index, blind=blind, parts=parts, values=values)


@dataclass(frozen=True, eq=False)
class VerifierShare:
    """Aggregator ``index``'s share of the verifier message for one contribution.

    Attributes:
        index: The aggregator's share index.
        joint_seed: The Fiat-Shamir seed this aggregator derived; all must agree.
        query_seed: The query randomness it answered; all must agree.
        values: Shape (points, length, 2): per query point, the wire polynomials' and
            gadget polynomials' values and the reduced circuit output, in GF(p^2).
    """

    index: int
    joint_seed: bytes
    query_seed: bytes
    values: ExtArray

    def to_bytes(self) -> bytes:
        """The binary form (module docstring)."""
        points, length, _ = self.values.shape
        header = _VERIFIER.pack(b"VFV1", self.index, points, length)
        body = np.asarray(self.values).astype("<u4").tobytes()
        return header + self.joint_seed + self.query_seed + body

    @classmethod
    def from_bytes(cls, data: bytes) -> VerifierShare:
        """Parse :meth:`to_bytes` output.

        Raises:
            WireFormatError: naming what is malformed.
        """
        if len(data) < _VERIFIER.size:
            raise WireFormatError("The verifier share is too short to hold its header.")
        magic, index, points, length = _VERIFIER.unpack_from(data)
        if magic != b"VFV1":
            raise WireFormatError("The data is not a version-1 veilfl verifier share.")
        if not 1 <= index <= MAX_SHARES or points < 1:
            raise WireFormatError("The verifier share's index or point count is invalid.")
        offset = _VERIFIER.size
        expected = offset + 2 * HASH_LENGTH + 8 * points * length
        if len(data) != expected:
            raise WireFormatError(f"The verifier share is {len(data)} bytes; {expected} expected.")
        joint_seed = data[offset : offset + HASH_LENGTH]
        query_seed = data[offset + HASH_LENGTH : offset + 2 * HASH_LENGTH]
        values = _field_values(
            data, offset + 2 * HASH_LENGTH, 2 * points * length, "verifier share"
        )
        return cls(
            index=index,
            joint_seed=joint_seed,
            query_seed=query_seed,
            values=values.reshape(points, length, 2),
        )


class VerdictReason(enum.Enum):
    """Why a contribution was refused."""

    JOINT_SEED_MISMATCH = "the aggregators derived different Fiat-Shamir seeds"
    QUERY_MISMATCH = "the aggregators answered different queries"
    INCONSISTENT_SHARES = "the verifier shares do not lie on one polynomial of degree t - 1"
    NORM_GADGET = "the norm proof's gadget polynomial is wrong"
    BIT_GADGET = "the bit proof's gadget polynomial is wrong"
    CIRCUIT_OUTPUT = "a range, norm or bit check is not satisfied"


@dataclass(frozen=True)
class Verdict:
    """The decision on one contribution.

    Attributes:
        valid: Whether the contribution is accepted.
        reason: Why not, for a refused one.
        aggregators: The aggregators whose verifier shares were used; a valid
            contribution's measurement is verified exactly for (any t of) these.
    """

    valid: bool
    reason: VerdictReason | None
    aggregators: tuple[int, ...]
