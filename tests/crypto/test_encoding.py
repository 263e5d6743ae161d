"""Fixed-point encoding: exact against a per-coordinate oracle, no wrap, bounded error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.encoding import MAX_SCALE, FixedPointEncoding
from veilfl.crypto.field import MERSENNE_31, PrimeField
from veilfl.errors import ConfigurationError, CryptoError

FIELD = MERSENNE_31

clip_ranges = st.floats(1e-4, 1e4, allow_nan=False, allow_infinity=False)
summand_counts = st.integers(1, 1_000_000)


def encoding_or_reject(clip_range: float, max_summands: int) -> FixedPointEncoding:
    """The encoding, or an example hypothesis discards when the field is too small."""
    try:
        return FixedPointEncoding(field=FIELD, clip_range=clip_range, max_summands=max_summands)
    except ConfigurationError:
        reject()


def encode_one_by_one(encoding: FixedPointEncoding, vector: np.ndarray) -> list[int]:
    """The slow, obviously correct encoding: clip, scale, round half to even, map."""
    scale, p = float(encoding.scale), encoding.field.modulus
    limit = scale * encoding.clip_range
    out = []
    for value in vector.tolist():
        scaled = min(max(float(value) * scale, -limit), limit)
        integer = round(scaled)  # Python rounds half to even, like numpy.rint
        out.append(integer % p)
    return out


def decode_one_by_one(encoding: FixedPointEncoding, elements: np.ndarray) -> list[float]:
    p = encoding.field.modulus
    return [(v - p if v > (p - 1) // 2 else v) / encoding.scale for v in elements.tolist()]


@settings(max_examples=200, deadline=None)
@given(clip_range=clip_ranges, max_summands=summand_counts)
def test_scale_is_the_largest_that_cannot_wrap(clip_range: float, max_summands: int) -> None:
    # Arrange
    encoding = encoding_or_reject(clip_range, max_summands)
    half = (FIELD.modulus - 1) // 2
    # Act
    largest_magnitude = int(encoding.encode(np.array([clip_range])).item())
    # Assert: the extreme encoding, summed max_summands times, stays below (p - 1) / 2 ...
    assert largest_magnitude <= encoding.max_encoded
    assert max_summands * encoding.max_encoded <= half
    # ... and one more unit of scale could wrap.
    if encoding.scale < MAX_SCALE:
        assert max_summands * math.ceil((encoding.scale + 1) * clip_range) > half


@settings(max_examples=200, deadline=None)
@given(clip_range=clip_ranges, max_summands=summand_counts, stochastic=st.booleans())
def test_sum_at_max_summands_of_extreme_coordinates_does_not_wrap(
    clip_range: float, max_summands: int, stochastic: bool
) -> None:
    # Arrange: coordinates at and beyond both ends of the clipping range.
    encoding = encoding_or_reject(clip_range, max_summands)
    extremes = np.array([1, -1, 3, -3, np.inf, -np.inf]) * clip_range
    rng = CsprngStream(key=bytes(32)) if stochastic else None
    encoded = encoding.encode(extremes, rng=rng)
    # Act: max_summands copies summed in the field (a scalar multiple is the same sum).
    total = encoding.decode_sum(FIELD.mul_scalar(encoded, max_summands))
    # Assert: a wrap would be off by about p / scale, far beyond the bound.
    expected = max_summands * np.clip(extremes, -clip_range, clip_range)
    bound = encoding.quantisation_bound(max_summands, stochastic=stochastic)
    np.testing.assert_allclose(total, expected, rtol=1e-12, atol=bound * (1 + 1e-9))


@pytest.mark.parametrize(("clip_range", "sign"), [(1.0, 1), (1.0, -1), (0.3, 1), (0.3, -1)])
def test_a_real_sum_of_max_summands_vectors_at_the_clipping_range_does_not_wrap(
    clip_range: float, sign: int
) -> None:
    # Arrange: 1,000 clients all at +clip_range (or all at -clip_range).
    encoding = FixedPointEncoding(field=FIELD, clip_range=clip_range, max_summands=1000)
    vectors = np.full((1000, 8), sign * clip_range, dtype=np.float32)
    # Act
    total = FIELD.sum(np.stack([encoding.encode(v) for v in vectors]))
    # Assert
    np.testing.assert_allclose(
        encoding.decode_sum(total),
        vectors.astype(np.float64).sum(axis=0),
        rtol=1e-12,
        atol=encoding.quantisation_bound(1000) * (1 + 1e-9),
    )


@settings(max_examples=100, deadline=None)
@given(
    clip_range=clip_ranges,
    max_summands=st.integers(1, 5000),
    vector=hnp.arrays(
        np.float32,
        st.integers(0, 50),
        elements=st.floats(-1e6, 1e6, width=32, allow_nan=False) | st.sampled_from([0.0, 0.5]),
    ),
)
def test_vectorised_encoding_matches_the_one_by_one_oracle(
    clip_range: float, max_summands: int, vector: np.ndarray
) -> None:
    encoding = encoding_or_reject(clip_range, max_summands)
    encoded = encoding.encode(vector)
    assert encoded.dtype == np.uint64
    assert encoded.tolist() == encode_one_by_one(encoding, vector)
    assert encoding.decode_sum(encoded).tolist() == decode_one_by_one(encoding, encoded)


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    clip_range=st.floats(0.0625, 128, width=32),
    clients=st.integers(1, 8),
    length=st.integers(1, 40),
    stochastic=st.booleans(),
)
def test_decoded_sum_is_within_the_quantisation_bound(
    data: st.DataObject, clip_range: float, clients: int, length: int, stochastic: bool
) -> None:
    # Arrange
    encoding = FixedPointEncoding(field=FIELD, clip_range=clip_range, max_summands=clients)
    elements = st.floats(-clip_range, clip_range, width=32)
    vectors = data.draw(hnp.arrays(np.float32, (clients, length), elements=elements))
    rng = CsprngStream() if stochastic else None
    # Act
    total = FIELD.sum(np.stack([encoding.encode(v, rng=rng) for v in vectors]))
    # Assert
    np.testing.assert_allclose(
        encoding.decode_sum(total),
        vectors.astype(np.float64).sum(axis=0),
        rtol=1e-12,  # float rounding of the decoded and the expected sums
        atol=encoding.quantisation_bound(clients, stochastic=stochastic) * (1 + 1e-9),
    )


def test_stochastic_rounding_is_unbiased() -> None:
    # Arrange: a value a quarter of the way between two encodable points.
    encoding = FixedPointEncoding(field=FIELD, clip_range=1.0, max_summands=1000)
    value = (12_345 + 0.25) / encoding.scale
    count = 200_000
    # Act
    decoded = encoding.decode_sum(
        encoding.encode(np.full(count, value), rng=CsprngStream(key=bytes(range(32))))
    )
    # Assert: only the two neighbours occur, the upper one a quarter of the time.
    steps = np.rint(decoded * encoding.scale) - 12_345
    assert set(np.unique(steps).tolist()) == {0.0, 1.0}
    up = float(steps.mean())
    assert abs(up - 0.25) < 5 * math.sqrt(0.25 * 0.75 / count)
    assert abs(float(decoded.mean()) - value) < 5 * math.sqrt(0.25 * 0.75 / count) / encoding.scale


def test_nan_is_refused_and_huge_values_are_clipped() -> None:
    encoding = FixedPointEncoding(field=FIELD, clip_range=2.0, max_summands=10)
    with pytest.raises(CryptoError, match="NaN"):
        encoding.encode(np.array([0.0, np.nan], dtype=np.float32))
    huge = np.finfo(np.float64).max
    vector = np.array([np.inf, -np.inf, huge, -huge, 1.0])
    decoded = encoding.decode_sum(encoding.encode(vector))  # no overflow warning either
    np.testing.assert_allclose(
        decoded, [2.0, -2.0, 2.0, -2.0, 1.0], rtol=1e-12, atol=encoding.quantisation_bound(1)
    )
    assert vector[0] == np.inf  # the caller's vector is left as it was


def test_too_small_a_field_is_refused_with_advice() -> None:
    with pytest.raises(ConfigurationError, match="lower max_summands or clip_range"):
        FixedPointEncoding(field=PrimeField(101), clip_range=1.0, max_summands=1000)


@pytest.mark.parametrize(
    ("clip_range", "max_summands"),
    [(0.0, 10), (-1.0, 10), (math.nan, 10), (math.inf, 10), (1.0, 0), (1.0, -3), (True, 10)],
)
def test_invalid_settings_are_refused(clip_range: float, max_summands: int) -> None:
    with pytest.raises(ConfigurationError):
        FixedPointEncoding(field=FIELD, clip_range=clip_range, max_summands=max_summands)


def test_bound_beyond_max_summands_and_values_outside_the_field_are_refused() -> None:
    encoding = FixedPointEncoding(field=FIELD, clip_range=1.0, max_summands=10)
    with pytest.raises(ConfigurationError, match="0 to 10 summands"):
        encoding.quantisation_bound(11)
    with pytest.raises(CryptoError, match="outside the field"):
        encoding.decode_sum(np.array([FIELD.modulus], dtype=np.uint64))
