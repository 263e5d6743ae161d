"""GF(p) arithmetic: vectorised operations against Python's exact integers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.crypto.field import MERSENNE_31, PrimeField
from veilfl.errors import ConfigurationError, CryptoError

PRIMES = [3, 257, 65_537, 1_000_000_007, 2**31 - 1]


@st.composite
def field_and_vectors(draw: st.DrawFn, count: int = 2) -> tuple[PrimeField, list[list[int]]]:
    field = PrimeField(draw(st.sampled_from(PRIMES)))
    length = draw(st.integers(0, 30))
    element = st.one_of(
        st.integers(0, field.modulus - 1), st.sampled_from([0, 1, field.modulus - 1])
    )
    vectors = [draw(st.lists(element, min_size=length, max_size=length)) for _ in range(count)]
    return field, vectors


def as_array(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


@settings(max_examples=150, deadline=None)
@given(case=field_and_vectors())
def test_add_sub_and_neg_match_python_integers(
    case: tuple[PrimeField, list[list[int]]],
) -> None:
    # Arrange
    field, (a, b) = case
    p = field.modulus
    # Act
    added = field.add(as_array(a), as_array(b))
    subtracted = field.sub(as_array(a), as_array(b))
    negated = field.neg(as_array(a))
    # Assert
    assert added.tolist() == [(x + y) % p for x, y in zip(a, b, strict=True)]
    assert subtracted.tolist() == [(x - y) % p for x, y in zip(a, b, strict=True)]
    assert negated.tolist() == [-x % p for x in a]
    assert added.dtype == subtracted.dtype == negated.dtype == np.uint64


@settings(max_examples=150, deadline=None)
@given(case=field_and_vectors(count=1), scalar=st.integers(-(2**40), 2**40))
def test_scalar_multiplication_matches_python_integers(
    case: tuple[PrimeField, list[list[int]]], scalar: int
) -> None:
    field, (a,) = case
    product = field.mul_scalar(as_array(a), scalar)
    assert product.tolist() == [x * scalar % field.modulus for x in a]


@settings(max_examples=100, deadline=None)
@given(case=field_and_vectors(count=7))
def test_sum_along_an_axis_matches_python_integers(
    case: tuple[PrimeField, list[list[int]]],
) -> None:
    field, rows = case
    stacked = np.array(rows, dtype=np.uint64).reshape(len(rows), -1)
    total = field.sum(stacked, axis=0)
    by_row = field.sum(stacked, axis=1)
    assert total.tolist() == [sum(column) % field.modulus for column in zip(*rows, strict=True)]
    assert by_row.tolist() == [sum(row) % field.modulus for row in rows]


def test_largest_elements_do_not_overflow() -> None:
    # Arrange: the worst case for every operation is p - 1 everywhere.
    field = MERSENNE_31
    p = field.modulus
    top = np.full(1000, p - 1, dtype=np.uint64)
    # Act / Assert
    assert set(field.mul_scalar(top, p - 1).tolist()) == {(p - 1) ** 2 % p}
    assert set(field.add(top, top).tolist()) == {(2 * p - 2) % p}
    assert set(field.sum(np.stack([top] * 64)).tolist()) == {64 * (p - 1) % p}
    # The headroom the module documents: four products of elements fit in a uint64.
    assert 4 * (p - 1) ** 2 < 2**64


@settings(max_examples=200, deadline=None)
@given(modulus=st.sampled_from(PRIMES), value=st.integers(-(2**40), 2**40))
def test_inverse_is_a_multiplicative_inverse(modulus: int, value: int) -> None:
    field = PrimeField(modulus)
    if value % modulus == 0:
        with pytest.raises(CryptoError, match="no multiplicative inverse"):
            field.inverse(value)
    else:
        assert value * field.inverse(value) % modulus == 1


@pytest.mark.parametrize("bad", [0, 1, 2, 4, 100, 2**31, 2**31 + 11, 2**61 - 1, -7, True])
def test_moduli_that_are_not_odd_primes_below_2_to_31_are_refused(bad: int) -> None:
    with pytest.raises(ConfigurationError, match="prime below 2\\*\\*31"):
        PrimeField(bad)


def test_default_field_is_the_mersenne_prime() -> None:
    assert MERSENNE_31.modulus == 2**31 - 1
    assert int(MERSENNE_31.p) == MERSENNE_31.modulus
