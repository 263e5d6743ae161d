"""Encoding, Shamir sharing and reconstruction: round trips, no wrap, no leakage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.encoding import FixedPointEncoding
from veilfl.crypto.field import MERSENNE_31, PrimeField
from veilfl.crypto.shamir import ShamirScheme, lagrange_coefficients_at_zero, sum_shares
from veilfl.errors import ConfigurationError, ReconstructionError

FIELD = MERSENNE_31


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 16),
    data=st.data(),
    clients=st.integers(1, 6),
    length=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_encode_share_sum_reconstruct_round_trips_from_any_t_subset(
    m: int, data: st.DataObject, clients: int, length: int, seed: int
) -> None:
    t = data.draw(st.integers(1, m), label="t")
    encoding = FixedPointEncoding(field=FIELD, clip_range=2.0, max_summands=clients)
    scheme = ShamirScheme(threshold=t, num_shares=m, field=FIELD)
    rng = CsprngStream()
    vectors = np.random.default_rng(seed).uniform(-2, 2, size=(clients, length))
    per_client = [scheme.split(encoding.encode(v), rng=rng) for v in vectors]
    aggregates = [sum_shares([shares[j] for shares in per_client], FIELD) for j in range(m)]
    subset = data.draw(st.sets(st.integers(0, m - 1), min_size=t, max_size=t), label="subset")

    decoded = encoding.decode_sum(scheme.reconstruct([aggregates[j] for j in sorted(subset)]))

    np.testing.assert_allclose(
        decoded, vectors.sum(axis=0), rtol=0, atol=encoding.quantisation_bound(clients) + 1e-12
    )


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_sum_at_max_summands_of_extreme_values_does_not_wrap(sign: float) -> None:
    encoding = FixedPointEncoding(field=FIELD, clip_range=1.0, max_summands=1000)
    one = encoding.encode(np.full(4, sign * 5.0))  # clipped to ±1
    total = FIELD.sum(np.stack([one] * 1000))
    np.testing.assert_allclose(encoding.decode_sum(total), sign * 1000.0)


def test_too_small_a_field_is_refused_with_advice() -> None:
    with pytest.raises(ConfigurationError, match="lower max_summands"):
        FixedPointEncoding(field=PrimeField(101), clip_range=1.0, max_summands=1000)


def test_fewer_than_t_shares_do_not_reconstruct() -> None:
    scheme = ShamirScheme(threshold=3, num_shares=5, field=FIELD)
    shares = scheme.split(np.arange(5, dtype=np.uint64), rng=CsprngStream())
    with pytest.raises(ReconstructionError, match="needs 3"):
        scheme.reconstruct(shares[:2])
    with pytest.raises(ReconstructionError, match="distinct"):
        scheme.reconstruct([shares[0], shares[0], shares[1]])


def test_lagrange_coefficients_sum_to_one() -> None:
    # Interpolating the constant polynomial 1 at zero must give 1.
    for points in itertools.combinations(range(1, 8), 3):
        assert sum(lagrange_coefficients_at_zero(list(points), FIELD)) % FIELD.modulus == 1


@pytest.mark.parametrize(("t", "m"), [(2, 3), (3, 5), (4, 4)])
def test_t_minus_one_shares_of_different_secrets_are_indistinguishable(t: int, m: int) -> None:
    # Arrange: two very different secrets, many coordinates.
    scheme = ShamirScheme(threshold=t, num_shares=m, field=FIELD)
    # A fixed key makes the statistical test deterministic (never flaky); the stream's
    # own quality is tested separately.
    rng = CsprngStream(key=bytes([t, m]) * 16)
    length = 40_000
    secret_a = np.zeros(length, dtype=np.uint64)
    secret_b = np.full(length, (FIELD.modulus - 1) // 2, dtype=np.uint64)
    # Act: the t - 1 shares a coalition below threshold would see.
    seen_a = np.concatenate([s.values for s in scheme.split(secret_a, rng=rng)[: t - 1]])
    seen_b = np.concatenate([s.values for s in scheme.split(secret_b, rng=rng)[: t - 1]])
    # Assert: both look uniform on [0, p), and like each other.
    p = FIELD.modulus
    alpha = 1e-4
    assert stats.kstest(seen_a / p, "uniform").pvalue > alpha
    assert stats.kstest(seen_b / p, "uniform").pvalue > alpha
    assert stats.ks_2samp(seen_a, seen_b).pvalue > alpha
    bins = 64
    counts_a = np.bincount((seen_a * bins // p).astype(np.int64), minlength=bins)
    counts_b = np.bincount((seen_b * bins // p).astype(np.int64), minlength=bins)
    assert stats.chi2_contingency(np.stack([counts_a, counts_b])).pvalue > alpha


def test_the_leakage_test_would_detect_a_leaky_sharing() -> None:
    # A broken scheme that adds the secret to a small random number is caught.
    rng = np.random.default_rng(0)
    leaky_a = rng.integers(0, 1000, size=40_000)
    leaky_b = leaky_a + (MERSENNE_31.modulus - 1) // 2
    assert stats.ks_2samp(leaky_a, leaky_b).pvalue < 1e-4


def test_csprng_field_elements_are_uniform_and_streams_differ() -> None:
    draws = CsprngStream(key=bytes(range(32))).uniform_field(FIELD, 100_000)
    assert draws.max() < FIELD.modulus
    assert stats.kstest(draws / FIELD.modulus, "uniform").pvalue > 1e-4
    assert not np.array_equal(CsprngStream().random_bytes(32), CsprngStream().random_bytes(32))
    key = bytes(range(32))
    assert CsprngStream(key).random_bytes(64) == CsprngStream(key).random_bytes(64)
    assert "key hidden" in repr(CsprngStream(key))


@pytest.mark.parametrize("bad", [1, 2**31 + 11, 2**31, 100])
def test_moduli_that_are_not_small_primes_are_refused(bad: int) -> None:
    with pytest.raises(ConfigurationError):
        PrimeField(bad)
