"""Distributed discrete Gaussian noise: right variance, exact through secure aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan, DpConfig
from veilfl.secagg.client_shares import add_distributed_noise
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig


def _signed(values: np.ndarray) -> np.ndarray:
    half = (MERSENNE_31.modulus - 1) // 2
    signed = values.astype(np.int64)
    return np.where(signed > half, signed - MERSENNE_31.modulus, signed)


def test_sum_of_client_noise_has_the_configured_variance_and_survives_reconstruction() -> None:
    # Arrange: 20 clients, noise calibrated for at least 20, total std z·C.
    n, d = 20, 20_000
    dp = DpConfig(placement="distributed", noise_multiplier=1.2, clip_norm=0.5, min_clients=n)
    plan = ClientPrivacyPlan.for_round(dp, clip_norm=0.5, expected_clients=n)
    config = SecureAggregationConfig(clip_range=0.5 * (1 + 8 * 1.2), max_clients=n)
    encoding, scheme = config.encoding(), config.scheme()
    rng = CsprngStream(key=bytes(range(32)))
    zero = encoding.encode(np.zeros(d + EXTRA_COORDINATES))
    # Act: each client noises its (zero) update, shares it; aggregators sum; reconstruct.
    noises = []
    per_aggregator = [np.zeros(d + EXTRA_COORDINATES, dtype=np.uint64) for _ in range(3)]
    for _ in range(n):
        noised = add_distributed_noise(zero, plan=plan, encoding=encoding, rng=rng)
        noises.append(_signed(noised))
        for share in scheme.split(noised, rng=rng):
            per_aggregator[share.index - 1] += share.values
    from veilfl.crypto.shamir import Share

    reconstructed = scheme.reconstruct(
        [Share(index=j + 1, values=per_aggregator[j] % MERSENNE_31.p) for j in (0, 2)]
    )
    # Assert: exact integer sum, no wrap-around ...
    exact = np.sum(noises, axis=0)
    np.testing.assert_array_equal(_signed(reconstructed), exact)
    # ... and its variance is n times each client's, i.e. the configured total.
    sensitivity = plan.clip_norm * encoding.scale + math.sqrt(d) / 2
    total_sigma = dp.noise_multiplier * sensitivity  # integer units
    sample_var = float(exact[:d].astype(np.float64).var())
    low, high = stats.chi2.ppf([1e-4, 1 - 1e-4], d - 1) / (d - 1)
    assert low < sample_var / total_sigma**2 < high


def test_noise_is_scaled_for_the_minimum_number_of_clients() -> None:
    dp = DpConfig(placement="distributed", noise_multiplier=2.0, clip_norm=1.0, min_clients=16)
    plan = ClientPrivacyPlan.for_round(dp, clip_norm=1.0, expected_clients=16)
    assert plan.update_stddev == pytest.approx(2.0 / 4)
    local = ClientPrivacyPlan.for_round(
        DpConfig(placement="local", noise_multiplier=2.0, clip_norm=1.0),
        clip_norm=1.0,
        expected_clients=16,
    )
    assert local.update_stddev == pytest.approx(2.0)
