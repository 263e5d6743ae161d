"""Streaming Toeplitz encoder and decoder: the dense matrix products, and restarts
that resume exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.flp import reduce_signed
from veilfl.errors import ConfigurationError, StorageError
from veilfl.privacy.banded_toeplitz import toeplitz_matrix
from veilfl.privacy.mf_stream import StreamingDecoder, StreamingEncoder, StreamState

COEFFICIENTS = (7, -3, 2, 1)


def _signed(values: np.ndarray) -> np.ndarray:
    """Field elements read as integers in (-p/2, p/2)."""
    wide = np.asarray(values, dtype=np.int64)
    return np.where(wide > MERSENNE_31.modulus // 2, wide - MERSENNE_31.modulus, wide)


def _stream(rounds: int, length: int) -> np.ndarray:
    return np.random.default_rng(rounds).integers(-50, 50, size=(rounds, length))


@pytest.mark.parametrize(("rounds", "length"), [(1, 3), (3, 1), (12, 4)])
def test_the_encoder_multiplies_by_the_strategy_modulo_p(rounds: int, length: int) -> None:
    inputs = _stream(rounds, length)
    encoder = StreamingEncoder(coefficients=COEFFICIENTS, field=MERSENNE_31, length=length)

    encoded = np.stack([_signed(encoder.release(reduce_signed(row))) for row in inputs])

    strategy = toeplitz_matrix(COEFFICIENTS, rounds).astype(np.int64)
    assert np.array_equal(encoded.astype(np.int64), strategy @ inputs)
    assert encoder.steps == rounds


def test_the_encoder_adds_the_noise_share() -> None:
    encoder = StreamingEncoder(coefficients=(2,), field=MERSENNE_31, length=2)
    out = encoder.release(reduce_signed(np.array([3, -4])), reduce_signed(np.array([-10, 1])))
    assert np.array_equal(_signed(out), [-4.0, -7.0])


@pytest.mark.parametrize("coefficients", [(7.0, -3.0, 2.0, 1.0), (0.6, 0.3, 0.1), (1.0,)])
def test_the_decoder_solves_the_strategy(coefficients: tuple[float, ...]) -> None:
    rounds, length = 15, 3
    releases = _stream(rounds, length).astype(float)
    decoder = StreamingDecoder(coefficients=coefficients, length=length)

    decoded = np.stack([decoder.decode(row) for row in releases])

    assert np.allclose(toeplitz_matrix(coefficients, rounds) @ decoded, releases)


@pytest.mark.parametrize("stop", [0, 1, 2, 3, 7])
def test_a_restarted_encoder_and_decoder_continue_the_same_stream(stop: int) -> None:
    rounds, length = 10, 3
    inputs = _stream(rounds, length)
    encoder = StreamingEncoder(coefficients=COEFFICIENTS, field=MERSENNE_31, length=length)
    decoder = StreamingDecoder(coefficients=COEFFICIENTS, length=length)
    straight = [decoder.decode(_signed(encoder.release(reduce_signed(r)))) for r in inputs]

    encoder = StreamingEncoder(coefficients=COEFFICIENTS, field=MERSENNE_31, length=length)
    decoder = StreamingDecoder(coefficients=COEFFICIENTS, length=length)
    resumed = [decoder.decode(_signed(encoder.release(reduce_signed(r)))) for r in inputs[:stop]]
    encoder_state = StreamState.from_json(json.loads(json.dumps(encoder.state().to_json())))
    decoder_state = StreamState.from_json(json.loads(json.dumps(decoder.state().to_json())))
    encoder = StreamingEncoder.from_state(encoder_state, field=MERSENNE_31)
    decoder = StreamingDecoder.from_state(decoder_state)
    resumed += [decoder.decode(_signed(encoder.release(reduce_signed(r)))) for r in inputs[stop:]]

    assert encoder.steps == decoder.steps == rounds
    assert np.array_equal(np.stack(resumed), np.stack(straight))


def test_a_state_of_another_strategy_is_refused() -> None:
    decoder = StreamingDecoder(coefficients=(1.0, 0.5), length=2)
    decoder.decode(np.ones(2))
    with pytest.raises(StorageError, match="another run"):
        StreamingDecoder(coefficients=(1.0, 0.4), length=2, state=decoder.state())
    with pytest.raises(StorageError, match="not an encoder"):
        StreamingEncoder.from_state(decoder.state(), field=MERSENNE_31)


@pytest.mark.parametrize(
    "data", [{}, {"dtype": "int8"}, {"dtype": "float64", "shape": [1, 2], "window": "%%"}]
)
def test_a_malformed_stored_state_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(StorageError, match="malformed"):
        StreamState.from_json(data)


def test_vectors_of_the_wrong_shape_or_outside_the_field_are_refused() -> None:
    encoder = StreamingEncoder(coefficients=(1, 2), field=MERSENNE_31, length=2)
    with pytest.raises(ConfigurationError, match="field elements"):
        encoder.release(np.array([1, 2, 3], dtype=np.uint64))
    with pytest.raises(ConfigurationError, match="field elements"):
        encoder.release(np.array([1, 2**31], dtype=np.uint64))
    with pytest.raises(ConfigurationError, match="finite"):
        StreamingDecoder(coefficients=(1.0,), length=2).decode(np.array([np.nan, 1.0]))


@pytest.mark.parametrize("coefficients", [(), (0.0, 1.0), (np.inf,)])
def test_a_decoder_needs_an_invertible_strategy(coefficients: tuple[float, ...]) -> None:
    with pytest.raises(ConfigurationError):
        StreamingDecoder(coefficients=coefficients, length=1)


@settings(max_examples=40, deadline=None)
@given(
    tail=st.lists(st.integers(-(2**16), 2**16), max_size=5),
    margin=st.integers(1, 2**16),
    inputs=st.lists(
        st.lists(st.integers(-(2**8), 2**8), min_size=2, max_size=2), min_size=1, max_size=12
    ),
)
def test_encoding_then_decoding_is_the_identity_and_encoding_is_the_product(
    tail: list[int], margin: int, inputs: list[list[int]]
) -> None:
    # c_0 > sum |c_j|: C^-1's series is absolutely summable, so decoding is stable;
    # |sum c_j x_j| < 2^19 * 2^8 * 2 < p / 2: no wrap-around, the field result is exact.
    coefficients = [sum(abs(c) for c in tail) + margin, *tail]
    rows = np.array(inputs, dtype=np.int64)
    encoder = StreamingEncoder(coefficients=coefficients, field=MERSENNE_31, length=2)
    decoder = StreamingDecoder(coefficients=[float(c) for c in coefficients], length=2)

    encoded = np.stack([_signed(encoder.release(reduce_signed(row))) for row in rows])
    decoded = np.stack([decoder.decode(row) for row in encoded])

    strategy = toeplitz_matrix(coefficients, len(rows)).astype(np.int64)
    assert np.array_equal(encoded, strategy @ rows)
    assert np.allclose(decoded, rows, rtol=0, atol=1e-6)
