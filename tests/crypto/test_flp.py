"""The square-gadget FLP: Lagrange matrices, exact combinations and gadget polynomials
against Python-integer oracles; completeness, soundness and zero knowledge."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31, PrimeField
from veilfl.crypto.field_ext import MERSENNE_31_EXT, QuadraticExtension
from veilfl.crypto.flp import (
    SquareGadget,
    centred,
    combine_rows,
    extension_matrix,
    gadget_holds,
    lagrange_basis,
    prove_gadget,
    reduce_signed,
)
from veilfl.errors import ConfigurationError

P = MERSENNE_31.modulus
EXT = MERSENNE_31_EXT


def ext_mul(a: tuple[int, int], b: tuple[int, int], p: int = P) -> tuple[int, int]:
    return ((a[0] * b[0] - a[1] * b[1]) % p, (a[0] * b[1] + a[1] * b[0]) % p)


def interpolate_at(values: list[int], at: tuple[int, int], p: int = P) -> tuple[int, int]:
    """The polynomial through (c, values[c]) at an extension point, term by term."""
    n = len(values)
    total = (0, 0)
    for c, y in enumerate(values):
        term = (y % p, 0)
        for j in range(n):
            if j != c:
                term = ext_mul(term, ((at[0] - j) % p, at[1]), p)
                term = ext_mul(term, (pow(c - j, -1, p), 0), p)
        total = ((total[0] + term[0]) % p, (total[1] + term[1]) % p)
    return total


@settings(max_examples=25, deadline=None)
@given(nodes=st.integers(1, 12))
def test_extension_matrix_matches_lagrange_interpolation(nodes: int) -> None:
    # Arrange
    rng = CsprngStream()
    values = [int(v) for v in rng.uniform_field(MERSENNE_31, nodes)]
    # Act
    extended = extension_matrix(nodes) @ np.zeros(nodes, dtype=np.uint64)  # shape check
    rows = extension_matrix(nodes)
    # Assert
    assert extended.shape == (nodes - 1,)
    for i, x in enumerate(range(nodes, 2 * nodes - 1)):
        fast = sum(int(rows[i, c]) * values[c] for c in range(nodes)) % P
        assert fast == interpolate_at(values, (x, 0))[0]


@settings(max_examples=25, deadline=None)
@given(nodes=st.integers(1, 40), seed=st.binary(min_size=32, max_size=32))
def test_lagrange_basis_interpolates_at_extension_points(nodes: int, seed: bytes) -> None:
    # Arrange
    rng = CsprngStream(key=seed)
    values = [int(v) for v in rng.uniform_field(MERSENNE_31, nodes)]
    point = EXT.random(rng, 1, outside_base=True)[0]
    # Act
    basis = lagrange_basis(nodes, point)
    fast = EXT.dot_base(basis, np.array(values, dtype=np.uint64))
    # Assert
    assert tuple(int(v) for v in fast) == interpolate_at(values, (int(point[0]), int(point[1])))


def test_a_base_field_point_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="outside GF\\(p\\)"):
        lagrange_basis(5, EXT.from_base([3]))


@settings(max_examples=30, deadline=None)
@given(
    k=st.integers(1, 3),
    n=st.sampled_from([1, 2, 7, 255, 256, 257, 700]),
    width=st.integers(1, 5),
    seed=st.binary(min_size=32, max_size=32),
)
def test_combine_rows_is_exact(k: int, n: int, width: int, seed: bytes) -> None:
    # Arrange: extreme and random field elements on both sides.
    rng = CsprngStream(key=seed)
    coefficients = EXT.random(rng, k * n).reshape(k, n, 2)
    rows = rng.uniform_field(MERSENNE_31, n * width).reshape(n, width)
    rows[0] = P - 1
    coefficients[0, 0] = [(P - 1) // 2, (P + 1) // 2]
    # Act
    fast = combine_rows(coefficients, centred(rows))
    # Assert
    for ell, w in itertools.product(range(k), range(width)):
        for part in range(2):
            exact = sum(int(coefficients[ell, i, part]) * int(rows[i, w]) for i in range(n)) % P
            assert int(fast[ell, w, part]) == exact


def wire_polynomial_values(column: list[int], points: range) -> list[int]:
    return [interpolate_at(column, (x, 0))[0] for x in points]


@settings(max_examples=25, deadline=None)
@given(
    calls=st.integers(1, 6),
    width=st.integers(1, 4),
    seeds=st.integers(1, 4),
    summed=st.booleans(),
    data=st.data(),
)
def test_prove_gadget_gives_the_square_of_the_wire_polynomials_on_every_node(
    calls: int, width: int, seeds: int, summed: bool, data: st.DataObject
) -> None:
    # Arrange
    gadget = SquareGadget(wires=width, calls=calls, seeds=seeds, summed=summed)
    wires = np.array(
        data.draw(
            st.lists(st.integers(-2000, 2000), min_size=calls * width, max_size=calls * width)
        ),
        dtype=np.int64,
    ).reshape(calls, width)
    seed_values = CsprngStream().uniform_field(MERSENNE_31, seeds * width).reshape(seeds, width)
    # Act
    values = prove_gadget(gadget, wires, seed_values)
    # Assert: the oracle interpolates each wire and squares it on every gadget node.
    nodes = range(gadget.gadget_nodes)
    per_wire = [
        wire_polynomial_values(
            [int(v) % P for v in wires[:, w]] + [int(s) for s in seed_values[:, w]], nodes
        )
        for w in range(width)
    ]
    squares = [[f * f % P for f in wire] for wire in per_wire]
    expected = [[sum(col) % P for col in zip(*squares, strict=True)]] if summed else squares
    assert values.tolist() == expected


def run_check(
    gadget: SquareGadget,
    wires: np.ndarray,
    seeds: np.ndarray,
    proof: np.ndarray,
    point: np.ndarray,
) -> bool:
    rows = np.vstack([wires % P, seeds]).astype(np.uint64)
    f = combine_rows(lagrange_basis(gadget.nodes, point)[np.newaxis], centred(rows))[0]
    g = combine_rows(
        lagrange_basis(gadget.gadget_nodes, point)[np.newaxis], centred(proof.T.copy())
    )[0]
    return gadget_holds(gadget, f, g)


@settings(max_examples=20, deadline=None)
@given(summed=st.booleans(), seed=st.binary(min_size=32, max_size=32))
def test_an_honest_proof_passes_and_any_changed_gadget_value_fails(
    summed: bool, seed: bytes
) -> None:
    # Arrange
    rng = CsprngStream(key=seed)
    gadget = SquareGadget(wires=5, calls=9, seeds=4, summed=summed)
    wires = (rng.random_uint32(45).astype(np.int64) % 201 - 100).reshape(9, 5)
    seeds = rng.uniform_field(MERSENNE_31, 20).reshape(4, 5)
    proof = prove_gadget(gadget, wires, seeds)
    point = EXT.random(rng, 1, outside_base=True)[0]
    # Act / Assert
    assert run_check(gadget, wires, seeds, proof, point)
    for position in (0, 9, gadget.gadget_nodes - 1):  # a call node, a seed node, the last
        forged = proof.copy()
        forged[0, position] = (forged[0, position] + 1) % P
        assert not run_check(gadget, wires, seeds, forged, point)
    # A proof for other wires fails too.
    assert not run_check(gadget, wires + 1, seeds, proof, point)


def wire_value_map(p: int, points: list[tuple[int, int]], seeds: int) -> set[tuple[int, ...]]:
    """All values of (f(r_1), ..., f(r_k)) as the seeds range over GF(p)^seeds, for a
    wire with one call of value 1, computed with the production basis."""
    ext = QuadraticExtension(PrimeField(p))
    n = 1 + seeds
    bases = [lagrange_basis(n, ext.from_parts(*r), ext) for r in points]
    image = set()
    for seed_values in itertools.product(range(p), repeat=seeds):
        column = np.array([1, *seed_values], dtype=np.uint64)
        image.add(tuple(int(v) for b in bases for v in ext.dot_base(b, column)))
    return image


def test_two_seeds_per_point_make_the_answers_uniform_and_one_seed_does_not() -> None:
    # Over GF(7^2): with 2k seeds the map seeds -> (f(r_1..r_k)) hits every value of
    # GF(49)^k exactly once (a bijection), so answers reveal nothing about the wire.
    p = 7
    assert len(wire_value_map(p, [(2, 3)], seeds=2)) == p**2
    assert len(wire_value_map(p, [(2, 3), (5, 1)], seeds=4)) == p**4
    # One seed per point only reaches a line in GF(49): the wire value leaks.
    assert len(wire_value_map(p, [(2, 3)], seeds=1)) == p
    # A point and its conjugate together are worth one point: not a bijection.
    assert len(wire_value_map(p, [(2, 3), (2, 4)], seeds=4)) < p**4


def test_gadget_shapes_and_limits_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        SquareGadget(wires=0, calls=1, seeds=2, summed=True)
    gadget = SquareGadget(wires=2, calls=3, seeds=2, summed=True)
    assert gadget.proof_length == 2 * 2 + 1 * 9
    with pytest.raises(ConfigurationError, match="do not fit"):
        prove_gadget(gadget, np.zeros((2, 2), dtype=np.int64), np.zeros((2, 2), dtype=np.uint64))
    with pytest.raises(ConfigurationError, match="too large"):
        prove_gadget(gadget, np.full((3, 2), 2**27), np.zeros((2, 2), dtype=np.uint64))
    assert gadget.soundness_error(points=2) < 2.0**-110


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.integers(-(2**61) + 1, 2**61 - 1), st.sampled_from([0, -1, P, -P, 2**61 - 1])),
        min_size=1,
        max_size=40,
    ),
    small_prime=st.booleans(),
)
def test_reduce_signed_matches_python_modulo(values: list[int], small_prime: bool) -> None:
    field = PrimeField(65_537) if small_prime else MERSENNE_31
    reduced = reduce_signed(np.array(values, dtype=np.int64), field)
    assert [int(v) for v in reduced] == [v % field.modulus for v in values]
