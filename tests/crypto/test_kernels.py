"""The compiled kernels equal their numpy twins and slow one-at-a-time oracles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from veilfl.crypto import kernels
from veilfl.crypto.field import MERSENNE_31

pytestmark = pytest.mark.skipif(not kernels.JIT_AVAILABLE, reason="numba is not installed")

P = MERSENNE_31.modulus
HALF = (P - 1) // 2


def _elements(size: st.SearchStrategy[int]) -> st.SearchStrategy[np.ndarray]:
    """Reduced field elements, extremes included."""
    values = st.one_of(st.integers(0, P - 1), st.sampled_from([0, 1, HALF, HALF + 1, P - 1]))
    return hnp.arrays(np.uint64, size, elements=values)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), rows=st.integers(1, 4), length=st.integers(1, 400))
def test_projections_compiled_equal_numpy_and_the_explicit_sum(
    data: st.DataObject, rows: int, length: int
) -> None:
    # Arrange: centred field elements (the aggregators' case) as int64 and as float64.
    words = data.draw(hnp.arrays(np.uint16, (rows, length)))
    values = data.draw(hnp.arrays(np.int64, length, elements=st.integers(-HALF, HALF)))
    # Act
    compiled = kernels.project_words(words, values, compiled=True)
    compiled_floats = kernels.project_words(words, values.astype(np.float64), compiled=True)
    twin = kernels.project_words(words, values.astype(np.float64), compiled=False)
    # Assert: against z = a - b, bit pair by bit pair, in Python integers.
    expected = [
        sum(
            (((int(w) >> (2 * u)) & 1) - ((int(w) >> (2 * u + 1)) & 1)) * int(v)
            for w, v in zip(words[r], values, strict=True)
        )
        for r in range(rows)
        for u in range(8)
    ]
    assert compiled.tolist() == expected
    assert compiled_floats.tolist() == expected
    assert twin.tolist() == expected


def test_projections_of_long_vectors_take_the_word_bins_path_identically() -> None:
    # Arrange: beyond the numpy twin's byte-bin length, at the largest centred values.
    rng = np.random.default_rng(5)
    words = rng.integers(0, 1 << 16, size=(2, 300_000), dtype=np.uint16)
    values = rng.integers(-HALF, HALF + 1, size=300_000)
    values[:2] = (-HALF, HALF)
    # Act
    compiled = kernels.project_words(words, values, compiled=True)
    twin = kernels.project_words(words, values.astype(np.float64), compiled=False)
    # Assert: both equal the explicit ±1 matrix product (|sum| < 2^51: exact in int64).
    z = np.stack(
        [
            ((words[r] >> (2 * u)) & 1).astype(np.int64) - ((words[r] >> (2 * u + 1)) & 1)
            for r in range(2)
            for u in range(8)
        ]
    )
    assert np.array_equal(compiled, z @ values)
    assert np.array_equal(twin, z @ values)


@settings(max_examples=60, deadline=None)
@given(values=_elements(st.integers(0, 300)))
def test_centring_compiled_equals_numpy(values: np.ndarray) -> None:
    compiled = kernels.centred_floats(values, P, compiled=True)
    twin = kernels.centred_floats(values, P, compiled=False)
    expected = [float(v - P if v > HALF else v) for v in values.tolist()]
    assert compiled.tolist() == expected
    assert twin.tolist() == expected


def test_centring_writes_into_a_view() -> None:
    target = np.full(6, 7.0)
    kernels.centred_floats(np.array([1, P - 1], dtype=np.uint64), P, out=target[2:4])
    assert target.tolist() == [7.0, 7.0, 1.0, -1.0, 7.0, 7.0]


@settings(max_examples=60, deadline=None)
@given(draw=hnp.arrays(np.uint32, st.integers(0, 300)), bits=st.sampled_from([31, 32]))
def test_masking_and_rejection_count_compiled_equal_numpy(draw: np.ndarray, bits: int) -> None:
    mask = (1 << bits) - 1
    compiled, compiled_rejected = kernels.uniform_below(draw, mask=mask, modulus=P, compiled=True)
    twin, twin_rejected = kernels.uniform_below(draw, mask=mask, modulus=P, compiled=False)
    expected = [int(v) & mask for v in draw.tolist()]
    assert compiled.dtype == twin.dtype == np.uint64
    assert compiled.tolist() == twin.tolist() == expected
    assert compiled_rejected == twin_rejected == sum(v >= P for v in expected)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), length=st.integers(0, 200), count=st.integers(1, 15))
def test_line_shares_compiled_equal_numpy_and_the_line(
    data: st.DataObject, length: int, count: int
) -> None:
    secret = data.draw(_elements(st.just(length)))
    seeded = data.draw(_elements(st.just(length)))
    compiled = kernels.line_shares(secret, seeded, count, modulus=P, compiled=True)
    twin = kernels.line_shares(secret, seeded, count, modulus=P, compiled=False)
    for k in range(count):  # f(k + 2) = f(0) + (k + 2)(f(1) - f(0))
        pairs = zip(secret.tolist(), seeded.tolist(), strict=True)
        expected = [(s + (k + 2) * (t - s)) % P for s, t in pairs]
        assert compiled[k].tolist() == twin[k].tolist() == [int(v) for v in expected]


def test_the_environment_turns_the_compiled_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEILFL_JIT", "0")
    assert not kernels.jit_enabled()
    monkeypatch.setenv("VEILFL_JIT", "1")
    assert kernels.jit_enabled()
