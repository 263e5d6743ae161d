"""The client's side of verified bounds: encode the bits, build the proof, share it all.

:func:`prove_contribution` turns a measurement (d update coordinates, e extras, centred
integers) into one :class:`~veilfl.secagg.bounds_messages.ContributionShare` per
aggregator: the input vector ``x | extras | bits | proofs`` of docs/verified-bounds.md,
shared t-of-m with seeds for aggregators 1..t-1 (:mod:`veilfl.crypto.seeded_shares`).
The measurement is shared first; its shares fix the Fiat-Shamir seed of the wraparound
checks, whose projections the bits then encode.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31, FieldArray
from veilfl.crypto.flp import prove_gadget
from veilfl.crypto.seeded_shares import expand_seed
from veilfl.crypto.wraparound import WraparoundChecks
from veilfl.errors import ConfigurationError, CryptoError
from veilfl.secagg.bounds_messages import HASH_LENGTH, ContributionShare
from veilfl.secagg.bounds_parameters import BoundsParameters, range_weights
from veilfl.secagg.bounds_transcript import SHARE_DOMAIN, joint_seed, part, sharing

__all__ = ["prove_contribution"]

FIELD = MERSENNE_31
_P = FIELD.modulus
_MAX_ATTEMPTS = 8


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
    """The bits of the squared norm, the shifted projections, the shifted extras (in
    units of their steps), then the ordered pairs' differences."""
    b = params.wraparound_bound
    pieces = [
        _decompose(np.array([squared_norm], dtype=np.int64), params.norm_bound**2).ravel(),
        _decompose(projections + b, 2 * b).ravel(),
    ]
    for value, step, (lo, hi) in zip(extras, params.steps, params.extra_ranges, strict=True):
        steps = np.array([(int(value) - lo) // step], dtype=np.int64)
        pieces.append(_decompose(steps, (hi - lo) // step).ravel())
    for i, j in params.extra_order:
        width = params.extra_ranges[j][1] - params.extra_ranges[i][0]
        difference = np.array([int(extras[j]) - int(extras[i])], dtype=np.int64)
        pieces.append(_decompose(difference, width).ravel())
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
    for j, (value, step, (lo, hi)) in enumerate(
        zip(extras, params.steps, params.extra_ranges, strict=True)
    ):
        if not lo <= int(value) <= hi or (int(value) - lo) % step:
            on_grid = "" if step == 1 else f" in steps of {step}"
            raise ConfigurationError(
                f"Extra coordinate {j} is {value}, outside [{lo}, {hi}]{on_grid}."
            )
    for i, j in params.extra_order:
        if int(extras[i]) > int(extras[j]):
            raise ConfigurationError(
                f"Extra coordinate {i} is {extras[i]}, above extra coordinate {j} "
                f"({extras[j]}); the proof requires it to be at most that."
            )
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
    seeded_sharing = sharing(threshold, num_shares)
    d, n = params.dimension, params.input_length
    secret = np.zeros(n, dtype=np.uint64)
    secret[: params.measurement_length] = measurement
    seeds = seeded_sharing.draw_seeds(rng=rng)
    seeded = [
        expand_seed(seed, index=i, length=n, domain=SHARE_DOMAIN)
        for i, seed in enumerate(seeds, start=1)
    ]
    full_update = seeded_sharing.deal(secret[:d], [s[:d] for s in seeded])
    if tamper is not None:
        tamper(full_update)
    payloads = [*seeds, *(share.astype("<u4").tobytes() for share in full_update)]
    for _ in range(_MAX_ATTEMPTS):
        blinds = [rng.random_bytes(HASH_LENGTH) for _ in range(num_shares)]
        parts = tuple(
            part(params, binding, j, blind, payload)
            for j, (blind, payload) in enumerate(zip(blinds, payloads, strict=True), start=1)
        )
        rest = complete(joint_seed(params, binding, parts))
        if rest is not None:
            break
    else:
        raise CryptoError("The wraparound checks kept failing for a valid measurement.")
    secret[params.bits_offset :] = rest
    full_rest = seeded_sharing.deal(secret[d:], [s[d:] for s in seeded])
    shares = [
        ContributionShare(index=i, blind=blinds[i - 1], parts=parts, seed=seed)
        for i, seed in enumerate(seeds, start=1)
    ]
    for j, (head, tail) in enumerate(zip(full_update, full_rest, strict=True), start=threshold):
        values = np.concatenate([head, tail])
        shares.append(ContributionShare(index=j, blind=blinds[j - 1], parts=parts, values=values))
    return shares
