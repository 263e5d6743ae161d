"""The public randomness of verified bounds: domain-separated hashes, the Fiat-Shamir
seed of the wraparound checks (Prio3's joint randomness, draft-irtf-cfrg-vdaf) and the
verifiers' query randomness.

* part_j = H(parameters, binding, j, blind_j, payload_j), where the payload is aggregator
  j's seed (aggregators 1..t-1) or the u32 encoding of its share of the update;
* joint seed = H(parameters, binding, part_1, ..., part_m);
* the query of a 32-byte query seed: k points of GF(p^2) \\ GF(p) with r_1, conj(r_1),
  ..., r_k, conj(r_k) distinct, and the coefficients that reduce the circuit outputs.

Every hash is SHA-256 over a domain tag, a label and length-prefixed chunks, so no two
inputs share an encoding.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.field_ext import MERSENNE_31_EXT, ExtArray
from veilfl.crypto.flp import lagrange_basis
from veilfl.crypto.seeded_shares import SeededSharing
from veilfl.secagg.bounds_parameters import BoundsParameters

__all__ = ["DOMAIN", "SHARE_DOMAIN", "Query", "joint_seed", "part", "query_for", "sharing"]

DOMAIN = b"veilfl/bounds/v1"
"""The domain tag of every hash and expansion in this protocol."""
SHARE_DOMAIN = DOMAIN + b"/share"
"""The domain tag of the seed shares' expansion."""

FIELD = MERSENNE_31
EXT = MERSENNE_31_EXT


def _hash(label: bytes, *chunks: bytes) -> bytes:
    """SHA-256 over the domain, a label and length-prefixed chunks (an injective encoding)."""
    h = hashlib.sha256(DOMAIN + b"/" + label)
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "little"))
        h.update(chunk)
    return h.digest()


def part(
    params: BoundsParameters, binding: bytes, index: int, blind: bytes, payload: bytes
) -> bytes:
    """part_j = H(parameters, binding, j, blind_j, share_j of the update or its seed)."""
    return _hash(b"part", params.digest, binding, bytes([index]), blind, payload)


def joint_seed(params: BoundsParameters, binding: bytes, parts: Sequence[bytes]) -> bytes:
    """The Fiat-Shamir seed of the wraparound checks: H(parameters, binding, parts)."""
    return _hash(b"joint", params.digest, binding, *parts)


def sharing(threshold: int, num_shares: int) -> SeededSharing:
    """The t-of-m seeded sharing of contributions."""
    return SeededSharing(threshold=threshold, num_shares=num_shares, domain=SHARE_DOMAIN)


@dataclass(frozen=True, eq=False)
class Query:
    """The verifier randomness of one query seed: k points in GF(p^2) \\ GF(p) with
    r_1, conj(r_1), ..., r_k, conj(r_k) distinct, the coefficients that reduce the
    circuit outputs (k x outputs), and the Lagrange bases at the points."""

    points: ExtArray
    reducers: ExtArray
    bases: dict[int, ExtArray]


@functools.lru_cache(maxsize=4)
def query_for(params: BoundsParameters, query_seed: bytes) -> Query:
    """The query of a seed; one seed serves every contribution of a round (each proof
    was fixed before the seed was drawn), so the bases are computed once per round."""
    rng = CsprngStream(key=_hash(b"query", params.digest, query_seed))
    points: list[ExtArray] = []
    while len(points) < params.query_points:
        point = EXT.random(rng, 1, outside_base=True)[0]
        taken = [tuple(q) for q in points] + [tuple(EXT.conj(q)) for q in points]
        if tuple(point) not in taken:
            points.append(point)
    reducers = EXT.random(rng, params.query_points * params.outputs)
    stacked = np.stack(points)
    nodes = {
        params.norm_gadget.nodes,
        params.norm_gadget.gadget_nodes,
        params.bit_gadget.nodes,
        params.bit_gadget.gadget_nodes,
    }
    bases = {n: lagrange_basis(n, stacked) for n in nodes}
    for array in (stacked, reducers, *bases.values()):
        array.flags.writeable = False
    return Query(
        points=stacked,
        reducers=reducers.reshape(params.query_points, params.outputs, 2),
        bases=bases,
    )
