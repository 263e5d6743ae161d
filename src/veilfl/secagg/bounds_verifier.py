"""The verifiers' side of verified bounds: aggregators prepare and query their shares,
the coordinator decides.

* :func:`prepare_share`, when a share arrives: expand a seed, check the public part,
  derive the Fiat-Shamir seed and compute the κ wraparound projections (κ·d work);
* :func:`verifier_share`, at round close: the FLP queries at the round's query points,
  one exact matrix product over the share (linear, so shares of the answers
  reconstruct);
* :func:`decide`: consistency of more than t answers, then the gadget and output checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.crypto.field import MERSENNE_31, FieldArray
from veilfl.crypto.field_ext import MERSENNE_31_EXT
from veilfl.crypto.flp import centred, combine_rows, gadget_holds
from veilfl.crypto.kernels import centred_floats
from veilfl.crypto.seeded_shares import SeededShare
from veilfl.crypto.shamir import MAX_SHARES, ShamirScheme, Share
from veilfl.crypto.wraparound import WraparoundChecks
from veilfl.errors import (
    ConfigurationError,
    CryptoError,
    ProtocolError,
    ReconstructionError,
    UpdateRejectedError,
)
from veilfl.secagg.bounds_messages import (
    HASH_LENGTH,
    ContributionShare,
    Verdict,
    VerdictReason,
    VerifierShare,
)
from veilfl.secagg.bounds_parameters import BoundsParameters
from veilfl.secagg.bounds_transcript import joint_seed, part, query_for, sharing

__all__ = [
    "PreparedShare",
    "decide",
    "measurement_share",
    "prepare_share",
    "restore_prepared",
    "verifier_share",
]

FIELD = MERSENNE_31
EXT = MERSENNE_31_EXT
_P = FIELD.modulus


@dataclass(frozen=True, eq=False)
class PreparedShare:
    """An aggregator's checked share of one contribution, ready to be queried and summed.

    Attributes:
        index: The aggregator's share index.
        joint_seed: The Fiat-Shamir seed of the wraparound checks.
        measurement_length: d + e.
        input_share: The whole input share (measurement, bits, proof).
        projections: This share's κ wraparound projections, reduced.
        norm_rows: The norm gadget's wire matrix on this share (update, zero padding,
            seeds), as centred floats for the verifier's exact matrix product.
    """

    index: int
    joint_seed: bytes
    measurement_length: int
    input_share: FieldArray
    projections: FieldArray
    norm_rows: npt.NDArray[np.float64]

    @property
    def measurement_share(self) -> FieldArray:
        """This aggregator's share of the d + e measurement coordinates, to be summed
        once the contribution is found valid."""
        return self.input_share[: self.measurement_length]

    def __repr__(self) -> str:  # never print share values
        return f"PreparedShare(index={self.index}, length={len(self.input_share)})"


def prepare_share(
    share: ContributionShare,
    *,
    params: BoundsParameters,
    threshold: int,
    num_shares: int,
    binding: bytes,
) -> PreparedShare:
    """Check a received share against its public part and precompute its projections.

    Run when the share arrives: it expands a seed share, recomputes this aggregator's
    part and refuses a mismatch, derives the Fiat-Shamir seed from the parts and
    computes the κ wraparound projections (κ·d work), so that :func:`verifier_share`
    at round close only evaluates the FLP queries.

    Raises:
        UpdateRejectedError: if the share is for another aggregator or sharing, has
            the wrong length or kind, or does not match its public part (it was
            altered, or the parts were made for other shares or another binding).
    """
    values = _expand(share, params=params, threshold=threshold, num_shares=num_shares)
    d = params.dimension
    payload = share.seed if share.seed is not None else values[:d].astype("<u4").tobytes()
    if part(params, binding, share.index, share.blind, payload) != share.parts[share.index - 1]:
        raise UpdateRejectedError(
            f"The share for aggregator {share.index} does not match its public part: it was "
            "altered, or made for another contribution, binding or set of parameters."
        )
    seed = joint_seed(params, binding, share.parts)
    rows = _norm_rows(values, params)
    checks = WraparoundChecks(count=params.wraparound_checks, dimension=d)
    projections = (checks.project(seed, rows.ravel()[:d]) % _P).astype(np.uint64)
    return PreparedShare(
        index=share.index,
        joint_seed=seed,
        measurement_length=params.measurement_length,
        input_share=values,
        projections=projections,
        norm_rows=rows,
    )


def restore_prepared(
    share: ContributionShare,
    *,
    params: BoundsParameters,
    threshold: int,
    num_shares: int,
    joint_seed: bytes,
    projections: FieldArray,
) -> PreparedShare:
    """A share :func:`prepare_share` already checked, rebuilt from its bytes and the
    seed and projections kept then (an aggregator keeps shares on disk, not in memory,
    and need not redo the κ·d projections at round close).

    Raises:
        UpdateRejectedError: if the share is malformed for these parameters.
    """
    values = _expand(share, params=params, threshold=threshold, num_shares=num_shares)
    return PreparedShare(
        index=share.index,
        joint_seed=joint_seed,
        measurement_length=params.measurement_length,
        input_share=values,
        projections=projections,
        norm_rows=_norm_rows(values, params),
    )


def measurement_share(
    share: ContributionShare, *, params: BoundsParameters, threshold: int, num_shares: int
) -> FieldArray:
    """A stored share's d + e measurement coordinates (to subtract it from a sum).

    Raises:
        UpdateRejectedError: if the share is malformed for these parameters.
    """
    values = _expand(share, params=params, threshold=threshold, num_shares=num_shares)
    return values[: params.measurement_length]


def _expand(
    share: ContributionShare, *, params: BoundsParameters, threshold: int, num_shares: int
) -> FieldArray:
    seeded_sharing = sharing(threshold, num_shares)
    if len(share.parts) != num_shares:
        raise UpdateRejectedError(
            f"The contribution carries {len(share.parts)} public parts; this sharing has "
            f"{num_shares} aggregators."
        )
    try:
        return seeded_sharing.expand(
            SeededShare(index=share.index, seed=share.seed, values=share.values),
            params.input_length,
        )
    except CryptoError as error:
        raise UpdateRejectedError(f"The contribution share is malformed: {error}") from None


def _norm_rows(values: FieldArray, params: BoundsParameters) -> npt.NDArray[np.float64]:
    """The norm gadget's wire matrix on a share (update, zero padding, seeds), centred."""
    d = params.dimension
    gadget = params.norm_gadget
    rows = np.empty((gadget.nodes, gadget.wires), dtype=np.float64)
    flat = rows.ravel()  # a view: rows is C-contiguous
    centred_floats(values[:d], _P, out=flat[:d])
    flat[d : gadget.calls * gadget.wires] = 0.0
    seeds = values[params.proof_offset : params.proof_offset + gadget.seeds * gadget.wires]
    centred_floats(seeds, _P, out=flat[gadget.calls * gadget.wires :])
    return rows


def _weighted(bits: FieldArray, weights: Sequence[int]) -> int:
    """Σ w_i · bit_i mod p, for shares of bits."""
    products = bits * (np.array(weights, dtype=np.uint64) % np.uint64(_P)) % np.uint64(_P)
    return int(products.sum(dtype=np.uint64) % np.uint64(_P))


def _outputs(
    params: BoundsParameters,
    share: FieldArray,
    projections: FieldArray,
    norm_values: FieldArray,
    bit_values: FieldArray,
) -> FieldArray:
    """Shares of the circuit outputs, each zero for a valid input: the norm, κ
    projections, e extras, the ordered pairs, then one per bit. Constants are added by
    every aggregator (Lagrange coefficients at 0 sum to 1).

    An extra's output ``e_j - lo_j - Σ s_j·w_i·bit_i`` is zero only for e_j in
    {lo_j, lo_j + s_j, ..., hi_j}: the bits are 0/1 (their own outputs) and the weights
    reach exactly [0, (hi_j - lo_j) / s_j]
    (:func:`~veilfl.secagg.bounds_parameters.range_weights`), and as every such
    value lies in (-p/2, p/2) the field equation is the integer one. A pair (i, j)'s
    output ``e_j - e_i - Σ w·bit`` is zero only if e_j - e_i is in [0, hi_j - lo_i]:
    e_i and e_j are the integers of their ranges, and the parameters require
    (hi_j - lo_i) + |hi_i - lo_j| < p, so the only multiple of p their difference minus
    the bit sum can equal is 0."""
    p = np.uint64(_P)
    bits = share[params.bits_offset : params.proof_offset]
    out = np.empty(params.outputs, dtype=np.uint64)
    n_norm = len(params.norm_weights)
    norm = int(norm_values[: params.norm_gadget.calls].sum(dtype=np.uint64) % p)
    out[0] = (norm - _weighted(bits[:n_norm], params.norm_weights)) % _P
    kappa, n_wrap = params.wraparound_checks, len(params.wraparound_weights)
    wrap_bits = bits[n_norm : n_norm + kappa * n_wrap].reshape(kappa, n_wrap)
    wrap_weights = np.array(params.wraparound_weights, dtype=np.uint64)
    combined = (wrap_bits * wrap_weights % p).sum(axis=1, dtype=np.uint64) % p
    out[1 : 1 + kappa] = (projections + np.uint64(params.wraparound_bound) + p - combined) % p
    offset = n_norm + kappa * n_wrap
    for j, ((lo, _), weights) in enumerate(
        zip(params.extra_ranges, params.extra_weights, strict=True)
    ):
        value = int(share[params.dimension + j]) - lo
        out[1 + kappa + j] = (value - _weighted(bits[offset : offset + len(weights)], weights)) % _P
        offset += len(weights)
    first = 1 + kappa + params.extras
    for k, ((i, j), weights) in enumerate(
        zip(params.extra_order, params.order_weights, strict=True)
    ):
        difference = int(share[params.dimension + j]) - int(share[params.dimension + i])
        combined = _weighted(bits[offset : offset + len(weights)], weights)
        out[first + k] = (difference - combined) % _P
        offset += len(weights)
    wires = params.bit_gadget.wires
    index = np.arange(params.bits)
    squares = bit_values[index % wires, index // wires]
    out[first + len(params.extra_order) :] = (squares + p - bits) % p
    return out


def verifier_share(
    prepared: PreparedShare, *, query_seed: bytes, params: BoundsParameters
) -> VerifierShare:
    """This aggregator's share of the verifier message for the query ``query_seed``.

    Answer one query seed per contribution: answers to two different queries together
    reveal wire values (each query uses up the randomness of 2k seed nodes per wire).
    Re-answering the same seed is harmless (the answer is the same).

    Raises:
        ConfigurationError: if ``query_seed`` is not 32 bytes.
    """
    if len(query_seed) != HASH_LENGTH:
        raise ConfigurationError("A query seed is 32 bytes; draw it with os.urandom(32).")
    query = query_for(params, query_seed)
    norm_gadget, bit_gadget = params.norm_gadget, params.bit_gadget
    share = prepared.input_share
    proof = share[params.proof_offset :]
    start = norm_gadget.seeds * norm_gadget.wires
    norm_values = proof[start : start + norm_gadget.gadget_nodes]
    rest = proof[start + norm_gadget.gadget_nodes :]
    bit_seeds = rest[: bit_gadget.seeds * bit_gadget.wires]
    bit_values = rest[bit_gadget.seeds * bit_gadget.wires :].reshape(
        bit_gadget.wires, bit_gadget.gadget_nodes
    )
    bit_rows = np.zeros(bit_gadget.nodes * bit_gadget.wires, dtype=np.uint64)
    bit_rows[: params.bits] = share[params.bits_offset : params.proof_offset]
    bit_rows[bit_gadget.calls * bit_gadget.wires :] = bit_seeds
    bases = query.bases
    pieces = [
        combine_rows(bases[norm_gadget.nodes], prepared.norm_rows),
        combine_rows(bases[norm_gadget.gadget_nodes], centred(norm_values)[:, np.newaxis]),
        combine_rows(
            bases[bit_gadget.nodes], centred(bit_rows).reshape(bit_gadget.nodes, bit_gadget.wires)
        ),
        combine_rows(bases[bit_gadget.gadget_nodes], np.ascontiguousarray(centred(bit_values).T)),
    ]
    outputs = _outputs(params, share, prepared.projections, norm_values, bit_values)
    reduced = EXT.dot_base(query.reducers, outputs)[:, np.newaxis, :]
    return VerifierShare(
        index=prepared.index,
        joint_seed=prepared.joint_seed,
        query_seed=query_seed,
        values=np.concatenate([*pieces, reduced], axis=1),
    )


def decide(
    verifier_shares: Sequence[VerifierShare], *, params: BoundsParameters, threshold: int
) -> Verdict:
    """Accept or refuse one contribution from t or more aggregators' verifier shares.

    With more than t shares, all must lie on one polynomial of degree t - 1 (this is
    what catches a client whose input shares are inconsistent). A valid verdict means
    the measurement that any t of ``Verdict.aggregators`` hold is within the bounds.

    Raises:
        ProtocolError: for fewer than t shares, repeated indices, shares of the wrong
            shape, or shares answering different queries (not the client's fault).
    """
    if len(verifier_shares) < threshold:
        raise ProtocolError(
            f"A decision needs {threshold} verifier shares; got {len(verifier_shares)}."
        )
    indices = [s.index for s in verifier_shares]
    if len(set(indices)) != len(indices) or not all(1 <= i <= MAX_SHARES for i in indices):
        raise ProtocolError(f"Verifier shares must come from distinct aggregators; got {indices}.")
    shape = (params.query_points, params.verifier_length, 2)
    if any(s.values.shape != shape for s in verifier_shares):
        raise ProtocolError("A verifier share does not have the shape these parameters give.")
    if len({s.query_seed for s in verifier_shares}) != 1:
        raise ProtocolError("The verifier shares answer different queries; ask again with one.")
    ordered = sorted(verifier_shares, key=lambda s: s.index)
    aggregators = tuple(s.index for s in ordered)
    if len({s.joint_seed for s in ordered}) != 1:
        return Verdict(False, VerdictReason.JOINT_SEED_MISMATCH, aggregators)
    scheme = ShamirScheme(threshold=threshold, num_shares=MAX_SHARES, field=FIELD)
    try:
        message = scheme.reconstruct(
            [Share(index=s.index, values=s.values.ravel()) for s in ordered], verify=True
        ).reshape(shape)
    except ReconstructionError:
        return Verdict(False, VerdictReason.INCONSISTENT_SHARES, aggregators)
    norm_wires, bit_wires = params.norm_gadget.wires, params.bit_gadget.wires
    for point in message:
        f_norm, p_norm = point[:norm_wires], point[norm_wires : norm_wires + 1]
        rest = point[norm_wires + 1 :]
        f_bits, p_bits, reduced = rest[:bit_wires], rest[bit_wires : 2 * bit_wires], rest[-1]
        if not gadget_holds(params.norm_gadget, f_norm, p_norm):
            return Verdict(False, VerdictReason.NORM_GADGET, aggregators)
        if not gadget_holds(params.bit_gadget, f_bits, p_bits):
            return Verdict(False, VerdictReason.BIT_GADGET, aggregators)
        if reduced.any():
            return Verdict(False, VerdictReason.CIRCUIT_OUTPUT, aggregators)
    return Verdict(True, None, aggregators)
