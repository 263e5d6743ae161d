"""The integer strategy for dealt noise: rounding, the rounded strategy's sensitivity,
and Shamir-shared encoding + dealt noise + decoding reconstructing exactly x + C^-1 z."""

from __future__ import annotations

import math

import numpy as np
import pytest

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.flp import reduce_signed
from veilfl.crypto.shamir import ShamirScheme
from veilfl.errors import ConfigurationError
from veilfl.privacy.banded_toeplitz import (
    banded_toeplitz_sensitivity,
    optimize_banded_toeplitz,
    toeplitz_matrix,
)
from veilfl.privacy.integer_strategy import IntegerToeplitzStrategy, scaled_coefficients
from veilfl.privacy.mf_stream import StreamingDecoder, StreamingEncoder
from veilfl.privacy.min_separation import minsep_sensitivity
from veilfl.privacy.noise import discrete_gaussian


def _signed(values: np.ndarray) -> np.ndarray:
    """Field elements read as integers in (-p/2, p/2)."""
    wide = np.asarray(values, dtype=np.int64)
    return np.where(wide > MERSENNE_31.modulus // 2, wide - MERSENNE_31.modulus, wide)


@pytest.mark.parametrize("bits", [0, 3, 8, 20])
def test_scaling_rounds_to_the_nearest_multiple_of_two_to_the_minus_bits(bits: int) -> None:
    coefficients = [1.3, 0.61, -0.27, 0.049]
    scaled = scaled_coefficients(coefficients, bits)
    assert all(isinstance(c, int) for c in scaled)
    assert np.max(np.abs(np.array(scaled) / 2**bits - coefficients)) <= 2.0 ** -(bits + 1)


@pytest.mark.parametrize(("coefficients", "bits"), [([0.4, 0.3], 0), ([1.0, 0.5], 31), ([], 4)])
def test_a_strategy_that_rounds_badly_is_refused(coefficients: list[float], bits: int) -> None:
    with pytest.raises(ConfigurationError):
        scaled_coefficients(coefficients, bits)


@pytest.mark.parametrize("bits", [2, 4, 12])
def test_the_sensitivity_is_the_rounded_strategys(bits: int) -> None:
    rounds, most, separation = 40, 3, 8
    floats = optimize_banded_toeplitz(rounds=rounds, bands=separation, max_participations=most)
    strategy = IntegerToeplitzStrategy.rounded(floats, bits)
    rounded = np.array(strategy.coefficients) / 2**bits

    sensitivity = strategy.sensitivity(
        rounds=rounds, max_participations=most, min_separation=separation
    )

    assert sensitivity == pytest.approx(
        minsep_sensitivity(
            toeplitz_matrix(rounded, rounds), max_participations=most, min_separation=separation
        )
    )
    exact = banded_toeplitz_sensitivity(
        floats, rounds=rounds, max_participations=most, min_separation=separation
    )
    if bits == 2:  # coarse rounding moves the sensitivity away from the float strategy's
        assert abs(sensitivity - exact) > 1e-3


def test_more_bands_than_the_separation_use_the_general_sensitivity() -> None:
    strategy = IntegerToeplitzStrategy((8, 4, 2, 1), 3)
    general = minsep_sensitivity(
        toeplitz_matrix([1.0, 0.5, 0.25, 0.125], 10), max_participations=2, min_separation=2
    )
    assert strategy.sensitivity(rounds=10, max_participations=2, min_separation=2) == (
        pytest.approx(general)
    )


def test_the_noise_and_the_release_bound_scale_with_the_coefficients() -> None:
    strategy = IntegerToeplitzStrategy((16, -5, 3), 4)
    assert strategy.noise_stddev(noise_multiplier=1.5, per_update_bound=100.0) == 1.5 * 100 * 16
    assert strategy.release_bound(aggregate_bound=1000, noise_bound=77) == 24 * 1000 + 77


@pytest.mark.parametrize("coefficients", [(), (0, 1), (-3, 1), (1.5, 1)])
def test_an_integer_strategy_needs_integer_coefficients_with_c0_positive(
    coefficients: tuple[int, ...],
) -> None:
    with pytest.raises(ConfigurationError):
        IntegerToeplitzStrategy(coefficients, 4)


def test_dealt_noise_through_shared_encoding_reconstructs_the_mechanism_exactly() -> None:
    # Arrange: 3 aggregators, 2-of-3 Shamir, a 6-band strategy at 8 bits, 25 rounds.
    rounds, length, bands, bits, sigma = 25, 5, 6, 8, 40.0
    field = MERSENNE_31
    scheme = ShamirScheme(threshold=2, num_shares=3, field=field)
    rng = CsprngStream(key=bytes(range(32)))
    strategy = IntegerToeplitzStrategy.rounded(
        optimize_banded_toeplitz(rounds=rounds, bands=bands, max_participations=2), bits
    )
    encoders = [
        StreamingEncoder(coefficients=strategy.coefficients, field=field, length=length)
        for _ in range(3)
    ]
    decoder = StreamingDecoder(coefficients=strategy.coefficients, length=length)
    generator = np.random.default_rng(0)  # test data only, not noise
    aggregates = generator.integers(-1000, 1000, size=(rounds, length))
    noises = np.zeros((rounds, length), dtype=np.int64)
    releases = np.zeros((rounds, length))
    decoded = np.zeros((rounds, length))

    # Act: each round, share the aggregate, deal three noise vectors, encode, decode.
    for t in range(rounds):
        aggregate_shares = scheme.split(reduce_signed(aggregates[t], field), rng=rng)
        noise_shares = [[] for _ in range(3)]
        for _dealer in range(3):
            dealt = discrete_gaussian(rng, sigma=sigma / math.sqrt(2), count=length)
            noises[t] += dealt
            for holder, share in enumerate(scheme.split(reduce_signed(dealt, field), rng=rng)):
                noise_shares[holder].append(share.values)
        released = [
            encoder.release(aggregate_shares[i].values, field.sum(np.stack(noise_shares[i])))
            for i, encoder in enumerate(encoders)
        ]
        shares = [type(aggregate_shares[0])(index=i + 1, values=released[i]) for i in (0, 2)]
        releases[t] = _signed(scheme.reconstruct(shares))
        decoded[t] = decoder.decode(releases[t])

    # Assert: the release is exactly C_int a + z, and decoding gives a + C_int^-1 z.
    integer_strategy = toeplitz_matrix(strategy.coefficients, rounds).astype(np.int64)
    assert np.array_equal(releases.astype(np.int64), integer_strategy @ aggregates + noises)
    expected = aggregates + np.linalg.solve(integer_strategy.astype(float), noises)
    assert np.allclose(decoded, expected, rtol=1e-9, atol=1e-9)
    bound = strategy.release_bound(aggregate_bound=1000, noise_bound=int(10 * sigma))
    assert bound < (field.modulus - 1) // 2
