"""GF(p^2) arithmetic: vectorised operations against exact Python-integer oracles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31, PrimeField
from veilfl.crypto.field_ext import MERSENNE_31_EXT, QuadraticExtension, base_inverse
from veilfl.errors import ConfigurationError, CryptoError

PRIMES_3_MOD_4 = [3, 7, 10_007, 2**31 - 1]


def oracle_mul(a: tuple[int, int], b: tuple[int, int], p: int) -> tuple[int, int]:
    """(a0 + a1 i)(b0 + b1 i) with i^2 = -1, one pair at a time."""
    return ((a[0] * b[0] - a[1] * b[1]) % p, (a[0] * b[1] + a[1] * b[0]) % p)


Case = tuple[QuadraticExtension, list[tuple[int, int]], list[tuple[int, int]]]


@st.composite
def pairs(draw: st.DrawFn) -> Case:
    ext = QuadraticExtension(PrimeField(draw(st.sampled_from(PRIMES_3_MOD_4))))
    p = ext.base.modulus
    element = st.tuples(
        st.one_of(st.integers(0, p - 1), st.sampled_from([0, 1, p - 1])),
        st.one_of(st.integers(0, p - 1), st.sampled_from([0, 1, p - 1])),
    )
    length = draw(st.integers(1, 20))
    a = draw(st.lists(element, min_size=length, max_size=length))
    b = draw(st.lists(element, min_size=length, max_size=length))
    return ext, a, b


def as_ext(values: list[tuple[int, int]]) -> np.ndarray:
    return np.array(values, dtype=np.uint64).reshape(-1, 2)


@settings(max_examples=150, deadline=None)
@given(case=pairs())
def test_add_sub_mul_conj_norm_match_the_one_at_a_time_oracle(
    case: Case,
) -> None:
    # Arrange
    ext, a, b = case
    p = ext.base.modulus
    # Act
    added, subbed = ext.add(as_ext(a), as_ext(b)), ext.sub(as_ext(a), as_ext(b))
    product, conj, norm = ext.mul(as_ext(a), as_ext(b)), ext.conj(as_ext(a)), ext.norm(as_ext(a))
    # Assert
    for n, (x, y) in enumerate(zip(a, b, strict=True)):
        assert tuple(added[n]) == ((x[0] + y[0]) % p, (x[1] + y[1]) % p)
        assert tuple(subbed[n]) == ((x[0] - y[0]) % p, (x[1] - y[1]) % p)
        assert tuple(product[n]) == oracle_mul(x, y, p)
        assert tuple(conj[n]) == (x[0], -x[1] % p)
        assert norm[n] == oracle_mul(x, ((x[0]), (-x[1]) % p), p)[0]


@settings(max_examples=100, deadline=None)
@given(case=pairs())
def test_inverse_times_element_is_one_and_zero_is_refused(
    case: Case,
) -> None:
    # Arrange
    ext, a, _ = case
    nonzero = [x if x != (0, 0) else (1, 0) for x in a]
    # Act
    inverse = ext.inverse(as_ext(nonzero))
    # Assert
    np.testing.assert_array_equal(ext.mul(inverse, as_ext(nonzero)), ext.from_base([1] * len(a)))
    with pytest.raises(CryptoError):
        ext.inverse(as_ext([(0, 0)]))


def test_i_squared_is_minus_one_and_the_field_has_no_zero_divisors_on_a_sample() -> None:
    # Arrange
    ext = QuadraticExtension(PrimeField(7))
    elements = as_ext([(x, y) for x in range(7) for y in range(7) if (x, y) != (0, 0)])
    # Act: all 48 x 48 products
    left = np.repeat(elements, len(elements), axis=0)
    right = np.tile(elements, (len(elements), 1))
    products = ext.mul(left, right)
    # Assert
    assert tuple(ext.mul(as_ext([(0, 1)]), as_ext([(0, 1)]))[0]) == (6, 0)
    assert not np.any((products[:, 0] == 0) & (products[:, 1] == 0))


def test_a_prime_that_is_one_mod_four_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="3 \\(mod 4\\)"):
        QuadraticExtension(PrimeField(13))


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(0, 2**31 - 2), min_size=1, max_size=30),
    data=st.data(),
)
def test_dot_base_and_sum_match_python_integers(values: list[int], data: st.DataObject) -> None:
    # Arrange
    ext, p = MERSENNE_31_EXT, 2**31 - 1
    coefficients = data.draw(
        st.lists(
            st.tuples(st.integers(0, p - 1), st.integers(0, p - 1)),
            min_size=len(values),
            max_size=len(values),
        )
    )
    # Act
    dot = ext.dot_base(as_ext(coefficients), np.array(values, dtype=np.uint64))
    total = ext.sum(as_ext(coefficients))
    # Assert
    assert tuple(dot) == (
        sum(c[0] * v for c, v in zip(coefficients, values, strict=True)) % p,
        sum(c[1] * v for c, v in zip(coefficients, values, strict=True)) % p,
    )
    assert tuple(total) == (
        sum(c[0] for c in coefficients) % p,
        sum(c[1] for c in coefficients) % p,
    )


def test_base_inverse_matches_pow_and_refuses_zero() -> None:
    values = np.array([1, 2, 3, 2**31 - 2, 123_456_789], dtype=np.uint64)
    inverses = base_inverse(MERSENNE_31, values)
    assert [int(v) for v in inverses] == [pow(int(v), -1, 2**31 - 1) for v in values]
    with pytest.raises(CryptoError):
        base_inverse(MERSENNE_31, np.array([5, 0], dtype=np.uint64))


def test_random_outside_base_never_draws_a_base_element() -> None:
    # A tiny field makes a zero imaginary part common, so the redraw path runs.
    ext = QuadraticExtension(PrimeField(3))
    drawn = ext.random(CsprngStream(key=bytes(32)), 2_000, outside_base=True)
    assert not ext.is_base(drawn).any()
    assert set(map(tuple, drawn.tolist())) == {(x, y) for x in range(3) for y in (1, 2)}
