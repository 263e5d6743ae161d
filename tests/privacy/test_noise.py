"""DP noise samplers: moments and tails match their distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ConfigurationError
from veilfl.privacy.noise import discrete_gaussian, gaussian

ALPHA = 1e-4  # fixed keys below make these tests deterministic


def _pmf(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The discrete Gaussian's probability mass on [-K, K], computed directly."""
    support = np.arange(-int(12 * sigma) - 12, int(12 * sigma) + 13)
    weights = np.exp(-(support.astype(float) ** 2) / (2 * sigma**2))
    return support, weights / weights.sum()


@pytest.mark.parametrize("sigma", [0.4, 1.0, 2.5, 7.0, 40.0])
def test_discrete_gaussian_matches_its_pmf_mean_and_variance(sigma: float) -> None:
    samples = discrete_gaussian(CsprngStream(key=bytes(32)), sigma=sigma, count=200_000)
    support, pmf = _pmf(sigma)
    variance = float((support**2 * pmf).sum())
    assert abs(samples.mean()) < 5 * math.sqrt(variance / len(samples))
    assert samples.var() == pytest.approx(variance, rel=0.02)
    # Chi-square goodness of fit on the bins with enough expected counts.
    expected = pmf * len(samples)
    keep = expected >= 20
    observed = np.array([(samples == k).sum() for k in support[keep]])
    expected_kept = expected[keep] * observed.sum() / expected[keep].sum()
    assert stats.chisquare(observed, expected_kept).pvalue > ALPHA


def test_discrete_gaussian_tails_are_not_heavier_than_the_distributions() -> None:
    sigma = 3.0
    samples = discrete_gaussian(CsprngStream(key=bytes(range(32))), sigma=sigma, count=400_000)
    support, pmf = _pmf(sigma)
    for k in (2, 3, 4):
        tail = pmf[np.abs(support) >= k * sigma].sum()
        observed = (np.abs(samples) >= k * sigma).mean()
        assert observed <= tail + 5 * math.sqrt(tail / len(samples)) + 1e-6


def test_the_fit_test_would_reject_a_wrong_sampler() -> None:
    wrong = np.rint(gaussian(CsprngStream(key=bytes(32)), sigma=1.3, count=200_000)).astype(int)
    support, pmf = _pmf(1.0)
    expected = pmf * len(wrong)
    keep = expected >= 20
    observed = np.array([(wrong == k).sum() for k in support[keep]])
    assert (
        stats.chisquare(observed, expected[keep] * observed.sum() / expected[keep].sum()).pvalue
        < ALPHA
    )


def test_gaussian_has_the_requested_moments() -> None:
    samples = gaussian(CsprngStream(key=bytes(32)), sigma=2.5, count=300_001)
    assert len(samples) == 300_001
    assert stats.kstest(samples / 2.5, "norm").pvalue > ALPHA


def test_zero_sigma_gives_zeros_and_negative_sigma_is_refused() -> None:
    assert not discrete_gaussian(CsprngStream(), sigma=0.0, count=5).any()
    with pytest.raises(ConfigurationError):
        gaussian(CsprngStream(), sigma=-1.0, count=3)
