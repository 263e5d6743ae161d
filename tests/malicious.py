"""Test support: a malicious client. It builds the bits and proof of its contribution
for any measurement (any field elements), so that every part it publishes matches its
shares and only the proof can catch it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.flp import SquareGadget, extension_matrix
from veilfl.crypto.wraparound import WraparoundChecks
from veilfl.secagg import bounds_prover
from veilfl.secagg.bounds_messages import ContributionShare
from veilfl.secagg.bounds_parameters import BoundsParameters, range_weights

__all__ = ["centred_ints", "cheat", "cheating_rest", "decompose"]

P = MERSENNE_31.modulus


def centred_ints(values: np.ndarray) -> list[int]:
    return [int(v) - P if int(v) > P // 2 else int(v) for v in values]


def decompose(value: int, width: int) -> list[int]:
    """The honest bits of a value clamped into [0, width] (a cheater's best effort)."""
    value = min(max(value, 0), width)
    weights = range_weights(width)
    if not weights:
        return []
    top = int(value >= 1 << (len(weights) - 1))
    rest = value - top * weights[-1]
    return [(rest >> i) & 1 for i in range(len(weights) - 1)] + [top]


def exact_gadget_values(gadget: SquareGadget, wires: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Gadget polynomial values for arbitrary field-element wires, in Python integers."""
    n = gadget.nodes
    columns = np.vstack([wires % P, seeds]).astype(object)
    extended = (extension_matrix(n).astype(object) @ columns) % P
    values = np.vstack([columns, extended])
    squares = (values * values) % P
    out = squares.sum(axis=1) % P if gadget.summed else squares.T
    return np.array(out, dtype=np.uint64).reshape(gadget.outputs, gadget.gadget_nodes)


def cheating_rest(
    params: BoundsParameters,
    measurement: np.ndarray,
    joint_seed: bytes,
    *,
    adjust_bits: Callable[[list[int]], None] | None = None,
    forge_bit_squares: bool = False,
) -> np.ndarray:
    """Bits and proof of a malicious client for any measurement (field elements): bits
    of its true values clamped into range, honest gadget polynomials for the wires it
    claims. ``adjust_bits`` may then change bits; ``forge_bit_squares`` claims s^2 = s."""
    rng = CsprngStream()
    d = params.dimension
    update = centred_ints(measurement[:d])
    z = WraparoundChecks(count=params.wraparound_checks, dimension=d).vectors(joint_seed)
    b = params.wraparound_bound
    bits = decompose(sum(x * x for x in update) % P, params.norm_bound**2)
    for row in z:
        projection = sum(int(c) * x for c, x in zip(row, update, strict=True)) % P
        bits += decompose((projection + P // 2) % P - P // 2 + b, 2 * b)
    extras = centred_ints(measurement[d:])
    for value, step, (lo, hi) in zip(extras, params.steps, params.extra_ranges, strict=True):
        bits += decompose((value - lo) // step, (hi - lo) // step)
    for i, j in params.extra_order:
        width = params.extra_ranges[j][1] - params.extra_ranges[i][0]
        bits += decompose(extras[j] - extras[i], width)
    if adjust_bits is not None:
        adjust_bits(bits)
    bit_elements = np.array([v % P for v in bits], dtype=np.uint64)
    pieces = []
    for gadget, wires in ((params.norm_gadget, measurement[:d]), (params.bit_gadget, bit_elements)):
        matrix = np.zeros((gadget.calls, gadget.wires), dtype=np.uint64)
        matrix.ravel()[: len(wires)] = wires
        seeds = rng.uniform_field(MERSENNE_31, gadget.seeds * gadget.wires).reshape(
            gadget.seeds, gadget.wires
        )
        values = exact_gadget_values(gadget, matrix, seeds)
        if forge_bit_squares and not gadget.summed:
            for i, bit in enumerate(bit_elements):
                values[i % gadget.wires, i // gadget.wires] = bit
        pieces += [seeds.ravel(), values.ravel()]
    return np.concatenate([bit_elements, *pieces])


def cheat(
    params: BoundsParameters,
    measurement: list[int],
    *,
    threshold: int = 2,
    num_shares: int = 3,
    binding: bytes,
    tamper: Callable[[list[np.ndarray]], None] | None = None,
    **options: object,
) -> list[ContributionShare]:
    """Shares of ``measurement`` (integers, reduced mod p) with the cheater's bits and
    proof; ``tamper`` may change the full shares before their parts are made."""
    elements = np.array([v % P for v in measurement], dtype=np.uint64)
    return bounds_prover._deal(
        elements,
        params=params,
        threshold=threshold,
        num_shares=num_shares,
        binding=binding,
        rng=CsprngStream(),
        complete=lambda seed: cheating_rest(params, elements, seed, **options),  # type: ignore[arg-type]
        tamper=tamper,
    )
