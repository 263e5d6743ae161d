"""Prefix-sum error of strategies, and banded MF against the tree at one epsilon."""

from __future__ import annotations

import math

import numpy as np
import pytest

from veilfl.errors import ConfigurationError
from veilfl.privacy.banded_toeplitz import (
    banded_toeplitz_sensitivity,
    optimize_banded_toeplitz,
    sqrt_prefix_coefficients,
    toeplitz_matrix,
)
from veilfl.privacy.dp_ftrl import dp_ftrl_noise_multiplier_for
from veilfl.privacy.mf_accounting import matrix_mechanism_noise_multiplier_for
from veilfl.privacy.mf_error import (
    prefix_sum_rmse,
    toeplitz_prefix_sum_rmse,
    tree_prefix_sum_rmse,
)


@pytest.mark.parametrize("rounds", [1, 5, 32])
def test_the_identity_strategy_accumulates_every_rounds_noise(rounds: int) -> None:
    # C = I: the prefix sum at round t carries t + 1 noises.
    expected = 0.7 * math.sqrt(np.mean(np.arange(1, rounds + 1)))
    assert prefix_sum_rmse(np.eye(rounds), noise_multiplier=0.7) == pytest.approx(expected)


def test_releasing_the_prefix_sums_carries_one_noise() -> None:
    workload = np.tril(np.ones((9, 9)))
    assert prefix_sum_rmse(workload, noise_multiplier=1.3) == pytest.approx(1.3)


@pytest.mark.parametrize(("rounds", "bands"), [(10, 3), (40, 40), (25, 7)])
def test_the_toeplitz_path_matches_the_dense_one(rounds: int, bands: int) -> None:
    coefficients = sqrt_prefix_coefficients(bands)
    dense = prefix_sum_rmse(toeplitz_matrix(coefficients, rounds), noise_multiplier=2.0)
    fast = toeplitz_prefix_sum_rmse(coefficients, rounds=rounds, noise_multiplier=2.0)
    assert fast == pytest.approx(dense)


@pytest.mark.parametrize("rounds", [1, 7, 64, 100])
def test_the_tree_carries_one_noise_per_set_bit(rounds: int) -> None:
    bits = [bin(step).count("1") for step in range(1, rounds + 1)]
    assert tree_prefix_sum_rmse(rounds=rounds, noise_multiplier=1.5) == pytest.approx(
        1.5 * math.sqrt(np.mean(bits))
    )


@pytest.mark.parametrize(("most", "epsilon"), [(3, 2.0), (4, 1.0)])
def test_banded_mf_beats_the_tree_at_the_same_epsilon(most: int, epsilon: float) -> None:
    rounds, separation, delta = 64, 16, 1e-5
    coefficients = optimize_banded_toeplitz(
        rounds=rounds, bands=separation, max_participations=most
    )
    sensitivity = banded_toeplitz_sensitivity(
        coefficients, rounds=rounds, max_participations=most, min_separation=separation
    )
    banded_z = matrix_mechanism_noise_multiplier_for(
        target_epsilon=epsilon, sensitivity=sensitivity, delta=delta
    )
    tree_z = dp_ftrl_noise_multiplier_for(
        target_epsilon=epsilon,
        rounds=rounds,
        max_participations=most,
        min_separation=separation,
        delta=delta,
    )

    banded = toeplitz_prefix_sum_rmse(coefficients, rounds=rounds, noise_multiplier=banded_z)
    tree = tree_prefix_sum_rmse(rounds=rounds, noise_multiplier=tree_z)

    assert banded < 0.6 * tree


@pytest.mark.parametrize(
    "strategy", [np.ones((2, 3)), np.triu(np.ones((3, 3))), np.diag([1.0, 0.0, 1.0])]
)
def test_a_strategy_that_is_not_invertible_lower_triangular_is_refused(
    strategy: np.ndarray,
) -> None:
    with pytest.raises(ConfigurationError, match="lower-triangular"):
        prefix_sum_rmse(strategy, noise_multiplier=1.0)


def test_a_negative_noise_multiplier_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="noise multiplier"):
        tree_prefix_sum_rmse(rounds=4, noise_multiplier=-1.0)
