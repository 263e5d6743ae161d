"""Verified bounds on secret-shared contributions: the client proves, t-of-m aggregators
verify on their shares, and the coordinator decides from t or more verifier shares.

The client's input to the proof system is one vector over GF(p), shared t-of-m
(:mod:`veilfl.crypto.seeded_shares`: aggregators 1..t-1 receive 32-byte seeds)::

    x (d update coordinates) | extras (e) | bits | norm gadget proof | bit gadget proof

The circuit (docs/verified-bounds.md) checks, with every output reduced by verifier
randomness:

* the squared norm Σ x_i^2 (mod p) equals Σ w_i s_i for bits s_i with weights that
  reach exactly [0, B^2] (:func:`~veilfl.secagg.bounds_parameters.range_weights`);
* for each of κ wraparound checks h (PINE, :mod:`veilfl.crypto.wraparound`),
  <z_h, x> + b equals a bit combination in [0, 2b], so <z_h, x> mod p is in [-b, b];
* each extra e_j minus lo_j is a bit combination in [0, hi_j - lo_j];
* every bit s satisfies s^2 = s.

Squares are gadget calls of a Fully Linear PCP (:mod:`veilfl.crypto.flp`). The z_h come
from a Fiat-Shamir seed over the update shares (Prio3's joint randomness, draft-irtf-
cfrg-vdaf: part_j = H(binding, j, blind_j, share_j of x), seed = H(binding, parts)), so
aggregators compute their projections when the share arrives (:func:`prepare_share`).
The FLP's query randomness comes from the verifier side afterwards (:func:`verifier_share`):
the client cannot grind it.

Trust: clients may be malicious. Aggregators and the coordinator follow the protocol
(honest but curious, fewer than t colluding): then an invalid contribution is accepted
with probability at most :meth:`BoundsParameters.soundness_error`, and fewer than t
aggregators together with the coordinator learn nothing about an honest contribution but
its validity, provided each aggregator answers one query per contribution.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31, FieldArray
from veilfl.crypto.field_ext import MERSENNE_31_EXT, ExtArray
from veilfl.crypto.flp import centred, combine_rows, gadget_holds, lagrange_basis, prove_gadget
from veilfl.crypto.seeded_shares import SeededShare, SeededSharing, expand_seed
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
from veilfl.secagg.bounds_parameters import BoundsParameters, range_weights

__all__ = [
    "DOMAIN",
    "PreparedShare",
    "decide",
    "prepare_share",
    "prove_contribution",
    "verifier_share",
]

DOMAIN = b"veilfl/bounds/v1"
"""The domain tag of every hash and expansion in this protocol."""

FIELD = MERSENNE_31
EXT = MERSENNE_31_EXT
_P = FIELD.modulus
_SHARE_DOMAIN = DOMAIN + b"/share"
_MAX_ATTEMPTS = 8


def _hash(label: bytes, *chunks: bytes) -> bytes:
    """SHA-256 over the domain, a label and length-prefixed chunks (an injective encoding)."""
    h = hashlib.sha256(DOMAIN + b"/" + label)
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "little"))
        h.update(chunk)
    return h.digest()


def _part(
    params: BoundsParameters, binding: bytes, index: int, blind: bytes, payload: bytes
) -> bytes:
    """part_j = H(parameters, binding, j, blind_j, share_j of the update or its seed)."""
    return _hash(b"part", params.digest, binding, bytes([index]), blind, payload)


def _joint_seed(params: BoundsParameters, binding: bytes, parts: Sequence[bytes]) -> bytes:
    """The Fiat-Shamir seed of the wraparound checks: H(parameters, binding, parts)."""
    return _hash(b"joint", params.digest, binding, *parts)


def _check_sharing(threshold: int, num_shares: int) -> SeededSharing:
    return SeededSharing(threshold=threshold, num_shares=num_shares, domain=_SHARE_DOMAIN)


def _decompose(values: npt.NDArray[np.int64], width: int) -> npt.NDArray[np.int64]:
    """Bits of each value in [0, width] for :func:`range_weights` (shape (len, nbits))."""
    weights = range_weights(width)
    n = len(weights)
    if n == 0:
        return np.zeros((len(values), 0), dtype=np.int64)
    top = (values >= (1 << (n - 1))).astype(np.int64)
    rest = values - top * weights[-1]
    low = (rest[:, np.newaxis] >> np.arange(n - 1)) & 1
    return np.hstack([low, top[:, np.newaxis]])


def _encode_bits(
    params: BoundsParameters,
    squared_norm: int,
    projections: npt.NDArray[np.int64],
    extras: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """The bits of the squared norm, the shifted projections, then the shifted extras."""
    b = params.wraparound_bound
    pieces = [
        _decompose(np.array([squared_norm], dtype=np.int64), params.norm_bound**2).ravel(),
        _decompose(projections + b, 2 * b).ravel(),
    ]
    for value, (lo, hi) in zip(extras, params.extra_ranges, strict=True):
        pieces.append(_decompose(np.array([int(value) - lo], dtype=np.int64), hi - lo).ravel())
    return np.concatenate(pieces)


def _prove(
    params: BoundsParameters,
    update: npt.NDArray[np.int64],
    bits: npt.NDArray[np.int64],
    rng: CsprngStream,
) -> FieldArray:
    """The proof: each gadget's seeds and gadget polynomial values."""
    pieces = []
    for gadget, wires in ((params.norm_gadget, update), (params.bit_gadget, bits)):
        matrix = np.zeros((gadget.calls, gadget.wires), dtype=np.int64)
        matrix.ravel()[: wires.size] = wires
        seeds = rng.uniform_field(FIELD, gadget.seeds * gadget.wires).reshape(
            gadget.seeds, gadget.wires
        )
        pieces += [seeds.ravel(), prove_gadget(gadget, matrix, seeds).ravel()]
    return np.concatenate(pieces)


def _check_measurement(
    measurement: npt.ArrayLike, params: BoundsParameters
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    values = np.asarray(measurement)
    if values.shape != (params.measurement_length,) or not np.issubdtype(values.dtype, np.integer):
        raise ConfigurationError(
            f"A measurement is an integer vector of length {params.measurement_length} "
            f"(d = {params.dimension} update coordinates, then {params.extras} extras); got "
            f"shape {values.shape} and dtype {values.dtype}."
        )
    update = values[: params.dimension].astype(np.int64)
    extras = values[params.dimension :].astype(np.int64)
    if update.size and int(np.abs(update).max()) > params.norm_bound:
        raise ConfigurationError(
            f"An update coordinate exceeds the norm bound B = {params.norm_bound}; clip the "
            "update before encoding it."
        )
    squared_norm = int(np.dot(update, update))
    if squared_norm > params.norm_bound**2:
        raise ConfigurationError(
            f"The update's squared L2 norm {squared_norm} exceeds B^2 = {params.norm_bound**2};"
            " clip the update (including any noise) to the bound before encoding it."
        )
    for j, (value, (lo, hi)) in enumerate(zip(extras, params.extra_ranges, strict=True)):
        if not lo <= int(value) <= hi:
            raise ConfigurationError(f"Extra coordinate {j} is {value}, outside [{lo}, {hi}].")
    return update, extras, squared_norm


def prove_contribution(
    measurement: npt.ArrayLike,
    *,
    params: BoundsParameters,
    threshold: int,
    num_shares: int,
    binding: bytes,
    rng: CsprngStream,
) -> list[ContributionShare]:
    """Share a measurement t-of-m with a proof that it satisfies ``params``.

    Args:
        measurement: d + e integers (centred): the update coordinates, then the extras.
        params: The bounds.
        threshold: t.
        num_shares: m, one share per aggregator.
        binding: Bytes naming the context (run, round, client); the proof holds only
            for the same binding at the aggregators.
        rng: Randomness for the sharing, the blinds and the proof.

    Returns:
        Aggregator j's share at position j - 1; seeds for 1..t-1, full values for t..m.

    Raises:
        ConfigurationError: if the measurement violates the bounds (an honest client
            never sends an invalid contribution) or has the wrong shape.
        CryptoError: if the wraparound checks failed 8 times in a row (probability
            below 2^-500 for a valid measurement).
    """
    update, extras, squared_norm = _check_measurement(measurement, params)
    checks = WraparoundChecks(count=params.wraparound_checks, dimension=params.dimension)
    update_floats = update.astype(np.float64)

    def complete(joint_seed: bytes) -> FieldArray | None:
        projections = checks.project(joint_seed, update_floats)
        if int(np.abs(projections).max()) > params.wraparound_bound:
            return None  # probability below 2^-64: redraw the blinds
        bits = _encode_bits(params, squared_norm, projections, extras)
        return np.concatenate([bits.astype(np.uint64), _prove(params, update, bits, rng)])

    measurement_elements = np.concatenate([update, extras])
    measurement_elements[measurement_elements < 0] += _P
    return _deal(
        measurement_elements.astype(np.uint64),
        params=params,
        threshold=threshold,
        num_shares=num_shares,
        binding=binding,
        rng=rng,
        complete=complete,
    )


def _deal(
    measurement: FieldArray,
    *,
    params: BoundsParameters,
    threshold: int,
    num_shares: int,
    binding: bytes,
    rng: CsprngStream,
    complete: Callable[[bytes], FieldArray | None],
    tamper: Callable[[list[FieldArray]], None] | None = None,
) -> list[ContributionShare]:
    """Share an input whose measurement is known now and whose bits and proof
    (``complete(joint_seed)``) depend on the Fiat-Shamir seed.

    ``complete`` may return None to ask for fresh blinds (a new seed). ``tamper`` lets
    tests play a malicious client that alters the full update shares before hashing.
    """
    sharing = _check_sharing(threshold, num_shares)
    d, n = params.dimension, params.input_length
    secret = np.zeros(n, dtype=np.uint64)
    secret[: params.measurement_length] = measurement
    seeds = sharing.draw_seeds(rng=rng)
    seeded = [
        expand_seed(seed, index=i, length=n, domain=_SHARE_DOMAIN)
        for i, seed in enumerate(seeds, start=1)
    ]
    full_update = sharing.deal(secret[:d], [s[:d] for s in seeded])
    if tamper is not None:
        tamper(full_update)
    payloads = [*seeds, *(share.astype("<u4").tobytes() for share in full_update)]
    for _ in range(_MAX_ATTEMPTS):
        blinds = [rng.random_bytes(HASH_LENGTH) for _ in range(num_shares)]
        parts = tuple(
            _part(params, binding, j, blind, payload)
            for j, (blind, payload) in enumerate(zip(blinds, payloads, strict=True), start=1)
        )
        rest = complete(_joint_seed(params, binding, parts))
        if rest is not None:
            break
    else:
        raise CryptoError("The wraparound checks kept failing for a valid measurement.")
    secret[params.bits_offset :] = rest
    full_rest = sharing.deal(secret[d:], [s[d:] for s in seeded])
    shares = [
        ContributionShare(index=i, blind=blinds[i - 1], parts=parts, seed=seed)
        for i, seed in enumerate(seeds, start=1)
    ]
    for j, (head, tail) in enumerate(zip(full_update, full_rest, strict=True), start=threshold):
        values = np.concatenate([head, tail])
        shares.append(ContributionShare(index=j, blind=blinds[j - 1], parts=parts, values=values))
    return shares


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
    sharing = _check_sharing(threshold, num_shares)
    if len(share.parts) != num_shares:
        raise UpdateRejectedError(
            f"The contribution carries {len(share.parts)} public parts; this sharing has "
            f"{num_shares} aggregators."
        )
    try:
        values = sharing.expand(
            SeededShare(index=share.index, seed=share.seed, values=share.values),
            params.input_length,
        )
    except CryptoError as error:
        raise UpdateRejectedError(f"The contribution share is malformed: {error}") from None
    d = params.dimension
    payload = share.seed if share.seed is not None else values[:d].astype("<u4").tobytes()
    if _part(params, binding, share.index, share.blind, payload) != share.parts[share.index - 1]:
        raise UpdateRejectedError(
            f"The share for aggregator {share.index} does not match its public part: it was "
            "altered, or made for another contribution, binding or set of parameters."
        )
    joint_seed = _joint_seed(params, binding, share.parts)
    gadget = params.norm_gadget
    rows = np.zeros((gadget.nodes, gadget.wires), dtype=np.float64)
    rows.ravel()[:d] = centred(values[:d])
    seeds = values[params.proof_offset : params.proof_offset + gadget.seeds * gadget.wires]
    rows[gadget.calls :] = centred(seeds).reshape(gadget.seeds, gadget.wires)
    checks = WraparoundChecks(count=params.wraparound_checks, dimension=d)
    projections = (checks.project(joint_seed, rows.ravel()[:d]) % _P).astype(np.uint64)
    return PreparedShare(
        index=share.index,
        joint_seed=joint_seed,
        measurement_length=params.measurement_length,
        input_share=values,
        projections=projections,
        norm_rows=rows,
    )


@dataclass(frozen=True, eq=False)
class _Query:
    """The verifier randomness of one query seed: k points in GF(p^2) \\ GF(p) with
    r_1, conj(r_1), ..., r_k, conj(r_k) distinct, the coefficients that reduce the
    circuit outputs (k x outputs), and the Lagrange bases at the points."""

    points: ExtArray
    reducers: ExtArray
    bases: dict[int, ExtArray]


@functools.lru_cache(maxsize=4)
def _query(params: BoundsParameters, query_seed: bytes) -> _Query:
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
    return _Query(
        points=stacked,
        reducers=reducers.reshape(params.query_points, params.outputs, 2),
        bases=bases,
    )


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
    projections, e extras, then one per bit. Constants are added by every aggregator
    (Lagrange coefficients at 0 sum to 1)."""
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
    wires = params.bit_gadget.wires
    index = np.arange(params.bits)
    squares = bit_values[index % wires, index // wires]
    out[1 + kappa + params.extras :] = (squares + p - bits) % p
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
    query = _query(params, query_seed)
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
