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
import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.crypto.field import MERSENNE_31, FieldArray, PrimeField
from veilfl.crypto.field_ext import MERSENNE_31_EXT, ExtArray, QuadraticExtension, base_inverse
from veilfl.crypto.kernels import centred_floats
from veilfl.errors import ConfigurationError

__all__ = [
    "SquareGadget",
    "centred",
    "combine_rows",
    "extension_matrix",
    "gadget_holds",
    "lagrange_basis",
    "prove_gadget",
    "reduce_signed",
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
    """Field elements as floats in (-p/2, p/2), in the shape of ``values``."""
    values = np.asarray(values, dtype=np.uint64)
    flat = centred_floats(np.ascontiguousarray(values).ravel(), field.modulus)
    return flat.reshape(values.shape)


def reduce_signed(values: npt.NDArray[np.int64], field: PrimeField = MERSENNE_31) -> FieldArray:
    """Signed integers with |v| < 2**61 reduced into [0, p) (Mersenne folding for 2**31 - 1)."""
    p = field.modulus
    if p != 2**31 - 1:
        return (np.asarray(values, dtype=np.int64) % p).astype(np.uint64)
    # v + 2^31·p is non-negative and below 2^63; x mod (2^31 - 1) folds as (x & p) + (x >> 31).
    x = (np.asarray(values, dtype=np.int64) + (p << 31)).astype(np.uint64)
    mask, shift = np.uint64(p), np.uint64(31)
    for _ in range(3):  # 2^63 -> 2^32 + 2^31 -> 2^31 + 3 -> at most p + 1
        x = (x & mask) + (x >> shift)
    np.minimum(x, x - mask, out=x)  # x - p wraps around when x < p
    return x


def _factorials(count: int, p: int) -> list[int]:
    out = [1] * count
    for i in range(1, count):
        out[i] = out[i - 1] * i % p
    return out


@functools.lru_cache(maxsize=64)
def _barycentric_weights(nodes: int, p: int) -> tuple[int, ...]:
    """w_c = 1 / Π_{j≠c} (c - j) = (-1)^(n-1-c) / (c! (n-1-c)!) for nodes 0..n-1."""
    fact = _factorials(nodes, p)
    return tuple(
        (-1) ** (nodes - 1 - c) * pow(fact[c] * fact[nodes - 1 - c], -1, p) % p
        for c in range(nodes)
    )


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


def _exact_matmul(
    coefficients: npt.NDArray[np.int64], rows: npt.NDArray[np.float64], field: PrimeField
) -> FieldArray:
    """``(coefficients @ rows) mod p`` exactly, for |coefficient| < 2**30 and centred rows.

    Coefficients are split into signed limbs so small that every float64 partial sum
    (at most n · 2^30 · 2^(b-1) in magnitude) stays below 2**53.
    """
    r, n = coefficients.shape
    if rows.shape[0] != n:
        raise ConfigurationError(f"{n} coefficients cannot combine {rows.shape[0]} rows.")
    limb_bits = 24 - max(1, math.ceil(math.log2(max(n, 2))))
    if limb_bits < 2:
        raise ConfigurationError(f"Too many rows ({n}) for an exact float64 combination.")
    limbs = _signed_limbs(coefficients, limb_bits)
    products = np.stack(limbs).reshape(-1, n).astype(np.float64) @ rows
    products = products.reshape(len(limbs), r, rows.shape[1])
    total = reduce_signed(products[-1].astype(np.int64), field)
    for i in range(len(limbs) - 2, -1, -1):  # Horner over the limbs
        shifted = (total << np.uint64(limb_bits)).astype(np.int64)  # < 2^31 · 2^22
        total = reduce_signed(shifted + products[i].astype(np.int64), field)
    return total


def _centred_ints(values: FieldArray, field: PrimeField) -> npt.NDArray[np.int64]:
    signed = np.asarray(values, dtype=np.uint64).astype(np.int64)
    return np.where(signed > (field.modulus - 1) // 2, signed - field.modulus, signed)


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
    flat = _centred_ints(coefficients.transpose(0, 2, 1).reshape(2 * k, n), field)
    combined = _exact_matmul(flat, rows, field).reshape(k, 2, rows.shape[1])
    return np.ascontiguousarray(combined.transpose(0, 2, 1))


def prove_gadget(
    gadget: SquareGadget,
    wires: npt.NDArray[np.int64],
    seeds: FieldArray,
    field: PrimeField = MERSENNE_31,
) -> FieldArray:
    """The gadget polynomials' values on the 2n - 1 gadget nodes, shape (outputs, 2n - 1).

    A summed gadget's polynomial is p(x) = Σ_w f_w(x)^2 = v(x)^T G v(x), with G = V V^T
    the n x n Gram matrix of the wire matrix V = [wires; seeds] and v(x) the Lagrange
    basis at x: G costs one symmetric product of the wires (d · calls / 2 multiply-adds,
    exact in float64 because its partial sums are bounded by ||wires||^2 by
    Cauchy-Schwarz), and the extension is then n x n work per node. A gadget with
    one output per wire extends every wire polynomial instead (meant for few wires).

    Args:
        gadget: The gadget block.
        wires: Shape (calls, wires): the wire values, small integers (the prover's
            plaintext: update coordinates or bits), padded with zeros.
        seeds: Shape (seeds, wires): uniformly random seed values.
        field: The field.

    Raises:
        ConfigurationError: if the shapes are wrong or the wire values too large for
            exact float64 products.
    """
    n, calls, width = gadget.nodes, gadget.calls, gadget.wires
    if wires.shape != (calls, width) or seeds.shape != (gadget.seeds, width):
        raise ConfigurationError("The wire and seed matrices do not fit the gadget.")
    wires = np.asarray(wires, dtype=np.int64)
    magnitude = int(np.abs(wires).sum())
    if magnitude * 2**16 >= _FLOAT_EXACT or int(np.einsum("ij,ij->", wires, wires)) >= _FLOAT_EXACT:
        raise ConfigurationError("The wire values are too large for exact float64 products.")
    seeds = np.asarray(seeds, dtype=np.uint64)
    matrix = _centred_ints(extension_matrix(n, field), field)
    if gadget.summed:
        gram = _gram(wires, seeds, field)
        on_nodes = np.diagonal(gram).copy()
        halfway = _exact_matmul(matrix, centred(gram, field), field)  # M G, (n - 1) x n
        p = np.uint64(field.modulus)
        products = halfway * (matrix % field.modulus).astype(np.uint64) % p  # (n - 1) x n
        extended = products.sum(axis=1, dtype=np.uint64) % p
        return np.concatenate([on_nodes, extended])[np.newaxis, :]
    values = np.empty((2 * n - 1, width), dtype=np.uint64)
    values[:calls] = reduce_signed(wires, field)
    values[calls:n] = seeds
    values[n:] = _exact_matmul(matrix, centred(values[:n], field), field)
    return np.ascontiguousarray((values * values % np.uint64(field.modulus)).T)


def _gram(wires: npt.NDArray[np.int64], seeds: FieldArray, field: PrimeField) -> FieldArray:
    """G = V V^T mod p for V = [wires; seeds], exactly."""
    calls, p = wires.shape[0], field.modulus
    n = calls + seeds.shape[0]
    x = wires.astype(np.float64)
    gram = np.empty((n, n), dtype=np.uint64)
    # |Σ_w x_cw x_c'w| and its partial sums are at most ||X||^2 < 2^53 (checked).
    gram[:calls, :calls] = reduce_signed((x @ x.T).astype(np.int64), field)
    low = (seeds & np.uint64(0xFFFF)).astype(np.float64)
    high = (seeds >> np.uint64(16)).astype(np.float64)
    # |Σ_w x_cw s_w| <= Σ|x| · 2^16 < 2^53 for 16-bit halves of the seeds (checked).
    cross_low = reduce_signed((x @ low.T).astype(np.int64), field)
    cross_high = reduce_signed((x @ high.T).astype(np.int64), field)
    cross = reduce_signed((cross_low + (cross_high << np.uint64(16))).astype(np.int64), field)
    gram[:calls, calls:] = cross
    gram[calls:, :calls] = cross.T
    for i, j in itertools.product(range(seeds.shape[0]), repeat=2):
        products = seeds[i] * seeds[j] % np.uint64(p)  # below 2^62 before reducing
        gram[calls + i, calls + j] = int(products.sum(dtype=np.uint64) % np.uint64(p))
    return gram


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
