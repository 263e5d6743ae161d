"""Wraparound checks: fast projections against explicit vectors, and Lemma W against
exact pass probabilities computed by dynamic programming over Z_q."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.wraparound import (
    WraparoundChecks,
    check_pass_bound,
    honest_failure_bound,
    smallest_honest_bound,
)
from veilfl.errors import ConfigurationError

SMALL_PRIMES = [101, 211, 1009, 4099]


def exact_pass_probability(x: list[int], q: int, b: int) -> float:
    """P(<z, x> mod q in [-b, b]) exactly: the distribution of the sum, one coordinate
    at a time (z_i = 0 w.p. 1/2, ±1 w.p. 1/4 each)."""
    dist = np.zeros(q)
    dist[0] = 1.0
    for value in x:
        shift = value % q
        dist = 0.5 * dist + 0.25 * np.roll(dist, shift) + 0.25 * np.roll(dist, -shift)
    window = [y % q for y in range(-b, b + 1)]
    return float(dist[window].sum())


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 20),
    dimension=st.integers(1, 300),
    data=st.data(),
)
def test_fast_projections_equal_explicit_dot_products(
    count: int, dimension: int, data: st.DataObject
) -> None:
    # Arrange: centred field elements (the aggregators' case), extremes included.
    checks = WraparoundChecks(count=count, dimension=dimension)
    half = (2**31 - 2) // 2
    values = np.array(
        data.draw(
            st.lists(
                st.one_of(st.integers(-half, half), st.sampled_from([-half, 0, half])),
                min_size=dimension,
                max_size=dimension,
            )
        ),
        dtype=np.int64,
    )
    seed = data.draw(st.binary(min_size=32, max_size=32))
    # Act
    fast = checks.project(seed, values.astype(np.float64))
    explicit = checks.vectors(seed).astype(np.int64)
    # Assert: one dot product at a time, in Python integers.
    for h in range(count):
        row = zip(explicit[h], values, strict=True)
        assert int(fast[h]) == sum(int(z) * int(v) for z, v in row)


@pytest.mark.parametrize("dimension", [40_000, 300_000])  # 2 x 256 bins; 65,536 bins
def test_the_bincount_paths_for_long_vectors_equal_explicit_dot_products(dimension: int) -> None:
    # Arrange: long enough for a binned path, with a check count not a multiple of 8.
    checks = WraparoundChecks(count=11, dimension=dimension)
    half = (2**31 - 2) // 2
    values = CsprngStream(key=bytes(32)).uniform_field(MERSENNE_31, dimension).astype(np.int64)
    values -= half
    values[:3] = (-half, half, 0)
    # Act
    fast = checks.project(bytes(range(32)), values.astype(np.float64))
    # |<z, x>| <= d * 2^30 < 2^63: exact in int64.
    explicit = checks.vectors(bytes(range(32))).astype(np.int64) @ values
    # Assert
    assert [int(v) for v in fast] == [int(v) for v in explicit]


def test_entries_are_minus_one_zero_one_with_probabilities_quarter_half_quarter() -> None:
    # Arrange
    z = WraparoundChecks(count=16, dimension=20_000).vectors(bytes(32))
    # Act
    counts = np.array([(z == v).sum() for v in (-1, 0, 1)])
    pairs = np.bincount(((z[0] + 1) * 3 + (z[1] + 1)).astype(np.int64), minlength=9)
    # Assert: the marginal, and independence of two checks on the same coordinates.
    assert stats.chisquare(counts, counts.sum() * np.array([0.25, 0.5, 0.25])).pvalue > 1e-4
    expected = np.outer([0.25, 0.5, 0.25], [0.25, 0.5, 0.25]).ravel() * z.shape[1]
    assert stats.chisquare(pairs, expected).pvalue > 1e-4


def test_projections_depend_on_the_seed_and_only_on_it() -> None:
    checks = WraparoundChecks(count=8, dimension=100)
    values = np.arange(100, dtype=np.float64)
    a = checks.project(bytes(32), values)
    assert np.array_equal(a, checks.project(bytes(32), values))
    assert not np.array_equal(a, checks.project(bytes(31) + b"\x01", values))


def test_projection_input_is_checked() -> None:
    checks = WraparoundChecks(count=8, dimension=4)
    with pytest.raises(ConfigurationError, match="length 4"):
        checks.project(bytes(32), np.zeros(5))
    with pytest.raises(ConfigurationError, match="exact"):
        checks.project(bytes(32), np.full(4, 2.0**52))
    with pytest.raises(ConfigurationError):
        WraparoundChecks(count=0, dimension=4)


@settings(max_examples=120, deadline=None)
@given(q=st.sampled_from(SMALL_PRIMES), data=st.data())
def test_lemma_w_bounds_the_exact_pass_probability_of_every_wrapped_vector(
    q: int, data: st.DataObject
) -> None:
    # Arrange: any x over Z_q (centred) whose integer norm is at least q.
    b = data.draw(st.integers(1, q // 4), label="b")
    length = data.draw(st.integers(1, 12), label="d")
    x = data.draw(
        st.lists(st.integers(-(q // 2), q // 2), min_size=length, max_size=length).filter(
            lambda v: sum(c * c for c in v) >= q
        ),
        label="x",
    )
    # Act
    exact = exact_pass_probability(x, q, b)
    # Assert
    assert exact <= check_pass_bound(modulus=q, bound=b)


def test_one_half_is_attained_by_four_halves_and_the_bound_grows_with_b() -> None:
    q = 1009
    half = (q + 1) // 2
    # Field norm 4 · (1/2)^2 = 1, integer norm about q^2: passes iff Σ z_i is even.
    assert exact_pass_probability([half] * 4, q, 2) == pytest.approx(0.5)
    bounds = [check_pass_bound(modulus=2**31 - 1, bound=b) for b in (1_000, 9_000, 20_000)]
    assert bounds[0] == bounds[1] == 0.5 < bounds[2]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_honest_vectors_fail_a_check_no_more_often_than_the_hoeffding_bound(
    data: st.DataObject,
) -> None:
    # Arrange: integer x with ||x|| <= B, far from wrapping (q large).
    q = 4099
    x = data.draw(st.lists(st.integers(-6, 6), min_size=1, max_size=14))
    norm_bound = max(1, math.isqrt(sum(c * c for c in x)) + data.draw(st.integers(0, 2)))
    if norm_bound * norm_bound < sum(c * c for c in x):
        norm_bound += 1
    b = data.draw(st.integers(0, 30))
    # Act
    failure = 1 - exact_pass_probability(x, q, b)
    # Assert
    assert failure <= honest_failure_bound(norm_bound=norm_bound, bound=b) + 1e-12


def test_smallest_honest_bound_is_the_smallest_that_meets_the_target() -> None:
    b = smallest_honest_bound(norm_bound=1_000, checks=128, failure=2.0**-64)
    assert 128 * honest_failure_bound(norm_bound=1_000, bound=b) <= 2.0**-64
    assert 128 * honest_failure_bound(norm_bound=1_000, bound=b - 1) > 2.0**-64


def test_pine_field_conditions_alone_admit_a_wrapped_vector_at_31_bits() -> None:
    # PINE's reference conditions at q = 2**31 - 1 allow B = 26,754 with b = 2**18
    # (q > 3B^2 + 2, q >= 2600 b, q >= b^2 / 4000). A vector of 2,148 coordinates
    # equal to 1,000 has integer norm above q, a field norm inside [0, B^2], and
    # passes a check unless |Σ z_i| > 262: almost never.
    q, big_b, b = 2**31 - 1, 26_754, 2**18
    assert q > 3 * big_b**2 + 2 and q >= 2600 * b and q >= b * b / 4000
    norm = 2_148 * 1_000**2
    assert norm > q and norm % q <= big_b**2
    sums = np.zeros(2 * 2_148 + 1)  # the exact distribution of Σ z_i, offset by 2,148
    sums[2_148] = 1.0
    for _ in range(2_148):
        sums = 0.5 * sums + 0.25 * np.roll(sums, 1) + 0.25 * np.roll(sums, -1)
    inside = sums[2_148 - b // 1_000 : 2_148 + b // 1_000 + 1].sum()
    assert inside > 1 - 1e-9
    assert check_pass_bound(modulus=q, bound=b) > 1  # Lemma W gives nothing there


def _parity_dependency(patterns: np.ndarray) -> list[np.ndarray]:
    """Sets S of columns whose 0/1 columns sum to zero over GF(2) (a null-space basis)."""
    rows, cols = patterns.shape
    matrix = patterns.astype(np.uint8) % 2
    pivots: list[int] = []
    row = 0
    for col in range(cols):
        hits = np.nonzero(matrix[row:, col])[0]
        if row == rows or not hits.size:
            continue
        matrix[[row, row + hits[0]]] = matrix[[row + hits[0], row]]
        others = np.nonzero(matrix[:, col])[0]
        matrix[others[others != row]] ^= matrix[row]
        pivots.append(col)
        row += 1
    basis = []
    for free in (c for c in range(cols) if c not in pivots):
        member = np.zeros(cols, dtype=bool)
        member[free] = True
        for r, pivot in enumerate(pivots):
            member[pivot] = bool(matrix[r, free])
        basis.append(member)
    return basis


def test_checks_known_before_the_update_is_fixed_are_evaded_by_linear_algebra() -> None:
    # Why the checks' vectors must be drawn after a client's shares are fixed (per
    # client, by Fiat-Shamir) and cannot be one set per round known in advance: given
    # the 136 vectors, a client finds a set S, |S| divisible by 4, on which every z_h
    # has an even number of non-zero entries (a GF(2) dependency among d > 136
    # patterns), and sends x = (p+1)/2 on S.
    p, d, kappa, b = MERSENNE_31.modulus, 600, 136, 10_313
    z = WraparoundChecks(count=kappa, dimension=d).vectors(bytes(32)).astype(np.int64)
    basis = _parity_dependency(z != 0)
    chosen = next(a ^ c for a in basis for c in basis if (a ^ c).any() and (a ^ c).sum() % 4 == 0)
    x = np.where(chosen, (p + 1) // 2, 0).astype(np.int64)
    # Act
    projections = [int(v) for v in (z @ x) % p]
    centred = [(v + p // 2) % p - p // 2 for v in projections]
    field_norm = int(sum(int(v) * int(v) for v in x) % p)
    # Assert: every check passes and the field norm is tiny, but the integer norm is
    # |S| · 2^60, far beyond any bound.
    assert max(abs(v) for v in centred) <= b
    assert field_norm == int(chosen.sum()) // 4 <= 1_459**2
    assert int(chosen.sum()) * ((p + 1) // 2) ** 2 > 2**64
