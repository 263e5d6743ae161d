"""How much noise the contribution encoding's stochastic rounding adds, and when the
run warns about it."""

from __future__ import annotations

import numpy as np
import pytest

from veilfl.crypto.csprng import CsprngStream
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout


@pytest.mark.parametrize("dimension", [50, 2_000])
def test_the_rounding_noise_estimate_matches_what_encoding_adds(dimension: int) -> None:
    layout = ContributionLayout(dimension, SecureAggregationConfig(norm_bound=1.0))
    rng = CsprngStream()
    generator = np.random.default_rng(0)
    errors = []
    for _ in range(40):
        update = generator.uniform(-1, 1, dimension)
        update *= 0.9 / np.linalg.norm(update)
        encoded = layout.encode(update, weight=1.0, loss=0.0, unclipped=None, rng=rng)
        errors.append(np.linalg.norm(encoded[:dimension] / layout.scale - update))
    # Uniform fractional parts: the mean error norm is close to the estimate.
    assert np.mean(errors) == pytest.approx(layout.rounding_noise, rel=0.15)


def test_a_model_whose_rounding_noise_rivals_the_bound_gets_a_warning() -> None:
    small = ContributionLayout(20_000, SecureAggregationConfig(norm_bound=10.0))
    assert small.precision_warning() is None
    large = ContributionLayout(4_000_000, SecureAggregationConfig(norm_bound=10.0))
    warning = large.precision_warning()
    assert warning is not None and "--norm-bound" in warning and "4,000,000" in warning
    assert large.rounding_noise > 10.0 / 2
