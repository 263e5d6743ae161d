"""A Fully Linear PCP for square gadgets, in the base field, without NTTs.

Boneh, Boyle, Corrigan-Gibbs, Gilboa and Ishai ("Zero-Knowledge Proofs on
Secret-Shared Data via Fully Linear PCPs", CRYPTO 2019, §4.2; draft-irtf-cfrg-vdaf's
FLP) prove that a circuit built from P calls to a gadget G was evaluated correctly:

* wire polynomial f_w takes the value of wire w at call c on node c, c = 0..P-1, and
  random *seed* values on ``seeds`` further nodes P, P+1, ...;
* the gadget polynomial is G(f_1, ..., f_W); its values on the call nodes are the
  gadget outputs the circuit uses;
* the verifier checks G(f(r)) = p(r) at random points r. Every quantity it needs,
  f_w(r) and p(r), is a linear function of the input and the proof, so each
  aggregator computes it on its share, and the shares of the answers reconstruct.

Here G is a square: "summed" gadgets compute Σ_w w_w^2 (ParallelSum of squares, for a
norm) and "each" gadgets w_w^2 for every wire separately (one output per call and wire,
for bit checks w^2 = w). Nodes are the small integers 0, 1, ..., so the prover extends
every wire polynomial from its n = P + seeds nodes to the 2n - 1 nodes of the gadget
polynomial with an explicit Lagrange matrix, as an exact float64 matrix product.

Query points come from GF(p^2) \\ GF(p) (:mod:`veilfl.crypto.field_ext`): they are
never nodes, and a non-zero polynomial of degree D vanishes at one with probability at
most D / (p^2 - p). Zero knowledge needs two seed nodes per query point: f_w(r) lies in
GF(p^2), two base-field coordinates, and with 2k base-field seeds the map from seeds to
(f_w(r_1), ..., f_w(r_k)) is a bijection exactly when r_1, conj(r_1), ..., r_k,
conj(r_k) are 2k distinct values (a vanishing Σ_s w_s / (X - β_s) with real w_s would
vanish at all of them, a rational function with a numerator of degree < 2k). Then the
verifier's view, f(r) and p(r) = G(f(r)), is uniform and independent of the wires.

Exactness: float64 sums of integers are exact while every partial sum stays below
2**53. Field elements are centred (|v| <= 2**30), and coefficients are split into
signed limbs small enough for the number of rows summed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.crypto.field import MERSENNE_31, FieldArray, PrimeField
from veilfl.crypto.field_ext import MERSENNE_31_EXT, ExtArray, QuadraticExtension, base_inverse
from veilfl.errors import ConfigurationError

__all__ = [
    "SquareGadget",
    "centred",
    "combine_rows",
    "extension_matrix",
    "gadget_holds",
    "lagrange_basis",
    "prove_gadget",
]

_FLOAT_EXACT = 2**53
_CENTRED_MAX = 2**30  # |centred element| < 2**30 for p < 2**31


@dataclass(frozen=True)
class SquareGadget:
    """A block of square gadgets: ``wires`` wires, ``calls`` calls, ``seeds`` seed nodes.

    Attributes:
        wires: W, the wires (gadget arity for a summed gadget).
        calls: P, the gadget calls.
        seeds: Random seed nodes per wire polynomial (twice the query points).
        summed: One output per call (Σ_w w^2) if true; one per call and wire (w^2) if not.

    Raises:
        ConfigurationError: if a count is below 1.
    """

    wires: int
    calls: int
    seeds: int
    summed: bool

    def __post_init__(self) -> None:
        if min(self.wires, self.calls, self.seeds) < 1:
            raise ConfigurationError("A gadget needs at least one wire, call and seed node.")

    @property
    def nodes(self) -> int:
        """n, the nodes of each wire polynomial (calls, then seeds)."""
        return self.calls + self.seeds

    @property
    def gadget_nodes(self) -> int:
        """2n - 1, the nodes on which the proof gives each gadget polynomial."""
        return 2 * self.nodes - 1

    @property
    def outputs(self) -> int:
        """Gadget polynomials: 1 if summed, else one per wire."""
        return 1 if self.summed else self.wires

    @property
    def proof_length(self) -> int:
        """Field elements in the proof: the seeds, then the gadget polynomials' values."""
        return self.seeds * self.wires + self.outputs * self.gadget_nodes

    def soundness_error(self, *, points: int, field: PrimeField = MERSENNE_31) -> float:
        """P(a wrong gadget polynomial passes all ``points`` checks), BBCGGI19 Thm 4.3
        with points in GF(p^2) \\ GF(p): (2(n - 1) / (p^2 - p - 2·points))^points."""
        p = field.modulus
        return float((2 * (self.nodes - 1) / (p * p - p - 2 * points)) ** points)


def centred(values: FieldArray, field: PrimeField = MERSENNE_31) -> npt.NDArray[np.float64]:
    """Field elements as floats in (-p/2, p/2)."""
    signed = np.asarray(values, dtype=np.uint64).astype(np.int64)
    signed[signed > (field.modulus - 1) // 2] -= field.modulus
    return signed.astype(np.float64)


def _factorials(count: int, p: int) -> list[int]:
    out = [1] * count
    for i in range(1, count):
        out[i] = out[i - 1] * i % p
    return out


def _barycentric_weights(nodes: int, p: int) -> list[int]:
    """w_c = 1 / Π_{j≠c} (c - j) = (-1)^(n-1-c) / (c! (n-1-c)!) for nodes 0..n-1."""
    fact = _factorials(nodes, p)
    return [
        (-1) ** (nodes - 1 - c) * pow(fact[c] * fact[nodes - 1 - c], -1, p) % p
        for c in range(nodes)
    ]


@functools.lru_cache(maxsize=32)
def extension_matrix(nodes: int, field: PrimeField = MERSENNE_31) -> FieldArray:
    """The Lagrange basis of nodes 0..n-1 evaluated at n..2n-2, shape (n - 1, n).

    Row x - n, column c holds L_c(x) = A_x · w_c / (x - c), with A_x = Π_j (x - j).

    Raises:
        ConfigurationError: unless 1 <= n and 2n - 1 < p (nodes must be distinct mod p).
    """
    p = field.modulus
    if not 1 <= nodes <= (p - 1) // 2:
        raise ConfigurationError(f"Cannot interpolate on {nodes} integer nodes modulo {p}.")
    if nodes == 1:
        return np.zeros((0, 1), dtype=np.uint64)
    targets = range(nodes, 2 * nodes - 1)
    fact = _factorials(2 * nodes, p)
    a = np.array([fact[x] * pow(fact[x - nodes], -1, p) % p for x in targets], dtype=np.uint64)
    w = np.array(_barycentric_weights(nodes, p), dtype=np.uint64)
    inverses = base_inverse(field, np.arange(1, 2 * nodes - 1, dtype=np.uint64))
    differences = np.arange(nodes, 2 * nodes - 1)[:, np.newaxis] - np.arange(nodes)
    matrix: FieldArray = (
        a[:, np.newaxis] * w[np.newaxis, :] % field.p * inverses[differences - 1] % field.p
    )
    matrix.flags.writeable = False
    return matrix


def lagrange_basis(
    nodes: int, points: ExtArray, ext: QuadraticExtension = MERSENNE_31_EXT
) -> ExtArray:
    """L_c(r) for the nodes 0..n-1 at points r of GF(p^2) \\ GF(p).

    Args:
        nodes: n.
        points: One point, shape (2,), or k points, shape (k, 2).
        ext: The extension field.

    Returns:
        Shape (n, 2) for one point, (k, n, 2) for k points.

    Raises:
        ConfigurationError: if a point lies in GF(p) (it could be a node, and its
            answers would reveal wire values).
    """
    points = np.asarray(points, dtype=np.uint64)
    single = points.ndim == 1
    points = points.reshape(-1, 2)
    if np.any(points[:, 1] == 0):
        raise ConfigurationError("A query point must lie outside GF(p); refusing to answer.")
    p = ext.base.modulus
    offsets = ext.from_base(np.arange(nodes, dtype=np.uint64) % p)
    differences = ext.sub(points[:, np.newaxis, :], offsets[np.newaxis])  # r - c, never 0
    product = differences
    while product.shape[1] > 1:  # Π_c (r - c) by pairwise products
        if product.shape[1] % 2:
            one = np.zeros((len(points), 1, 2), dtype=np.uint64)
            one[..., 0] = 1
            product = np.concatenate([product, one], axis=1)
        product = ext.mul(product[:, 0::2], product[:, 1::2])
    weights = np.array(_barycentric_weights(nodes, p), dtype=np.uint64)
    basis: ExtArray = ext.mul_base(ext.mul(ext.inverse(differences), product), weights)
    return basis[0] if single else basis


def _signed_limbs(values: npt.NDArray[np.int64], limb_bits: int) -> list[npt.NDArray[np.int64]]:
    """Signed digits d_i in [-2^(b-1), 2^(b-1)) with values = Σ d_i 2^(b·i)."""
    base, half = 1 << limb_bits, 1 << (limb_bits - 1)
    rest, limbs = values.copy(), []
    while True:
        low = (rest + half) % base - half
        limbs.append(low)
        rest = (rest - low) // base
        if not rest.any():
            return limbs


def combine_rows(
    coefficients: ExtArray,
    rows: npt.NDArray[np.float64],
    field: PrimeField = MERSENNE_31,
) -> ExtArray:
    """``Σ_n coefficients[..., n] · rows[n, :]`` exactly, for extension coefficients.

    Args:
        coefficients: Shape (k, n, 2): k extension-field coefficient vectors.
        rows: Shape (n, W): centred field elements as floats (|v| < 2**30), for
            example from :func:`centred`.
        field: The base field.

    Returns:
        Shape (k, W, 2): the k combinations, reduced.
    """
    coefficients = np.asarray(coefficients, dtype=np.uint64)
    k, n, _ = coefficients.shape
    if rows.shape[0] != n:
        raise ConfigurationError(f"{n} coefficients cannot combine {rows.shape[0]} rows.")
    p = field.modulus
    # Signed limbs with n · 2^30 · 2^(b-1) < 2^53 keep every partial sum exact.
    limb_bits = 24 - max(1, math.ceil(math.log2(max(n, 2))))
    if limb_bits < 2:
        raise ConfigurationError(f"Too many rows ({n}) for an exact float64 combination.")
    signed = coefficients.astype(np.int64)
    signed[signed > (p - 1) // 2] -= p
    limbs = _signed_limbs(signed.reshape(k * n * 2), limb_bits)
    stacked = np.stack([limb.reshape(k, n, 2).transpose(0, 2, 1) for limb in limbs])
    # (limbs, k, 2, n) @ (n, W) -> (limbs, k, 2, W)
    products = (stacked.reshape(-1, n).astype(np.float64) @ rows).reshape(
        len(limbs), k, 2, rows.shape[1]
    )
    total = np.zeros((k, 2, rows.shape[1]), dtype=np.int64)
    for i in range(len(limbs) - 1, -1, -1):  # Horner over limbs, reducing each step
        total = (total * (1 << limb_bits) + products[i].astype(np.int64) % p) % p
    return np.ascontiguousarray(total.transpose(0, 2, 1)).astype(np.uint64)


def prove_gadget(
    gadget: SquareGadget,
    wires: npt.NDArray[np.int64],
    seeds: FieldArray,
    field: PrimeField = MERSENNE_31,
) -> FieldArray:
    """The gadget polynomials' values on the 2n - 1 gadget nodes, shape (outputs, 2n - 1).

    Args:
        gadget: The gadget block.
        wires: Shape (calls, wires): the wire values, small integers (the prover's
            plaintext: update coordinates or bits), padded with zeros.
        seeds: Shape (seeds, wires): uniformly random seed values.
        field: The field.

    Raises:
        ConfigurationError: if the shapes are wrong or the wire values too large for
            an exact float64 extension.
    """
    p = field.modulus
    n, calls, width = gadget.nodes, gadget.calls, gadget.wires
    if wires.shape != (calls, width) or seeds.shape != (gadget.seeds, width):
        raise ConfigurationError("The wire and seed matrices do not fit the gadget.")
    largest = int(np.abs(wires).max()) if wires.size else 0
    if calls * _CENTRED_MAX * largest + gadget.seeds * _CENTRED_MAX * 2**16 >= _FLOAT_EXACT:
        raise ConfigurationError("The wire values are too large for an exact extension.")
    matrix = centred(extension_matrix(n, field), field)
    seeds = np.asarray(seeds, dtype=np.uint64)
    low = (seeds & np.uint64(0xFFFF)).astype(np.float64)
    high = (seeds >> np.uint64(16)).astype(np.float64)
    # E = M [X; S] with S = S_low + 2^16 S_high; each product below is exact.
    first = matrix @ np.vstack([wires.astype(np.float64), low])
    second = matrix[:, calls:] @ high
    extended = (first.astype(np.int64) % p + (second.astype(np.int64) % p << 16) % p) % p
    values = np.empty((2 * n - 1, width), dtype=np.uint64)
    values[:calls] = wires % p
    values[calls:n] = seeds
    values[n:] = extended
    squares = values * values % np.uint64(p)
    if gadget.summed:
        return np.asarray((squares.sum(axis=1, dtype=np.uint64) % np.uint64(p))[np.newaxis, :])
    return np.ascontiguousarray(squares.T)


def gadget_holds(
    gadget: SquareGadget,
    wire_values: ExtArray,
    gadget_values: ExtArray,
    ext: QuadraticExtension = MERSENNE_31_EXT,
) -> bool:
    """The decision: G(f(r)) = p(r) for reconstructed f(r) (W, 2) and p(r) (outputs, 2)."""
    squares = ext.square(wire_values)
    expected = ext.sum(squares)[np.newaxis, :] if gadget.summed else squares
    return bool(np.array_equal(expected, np.asarray(gadget_values, dtype=np.uint64)))
