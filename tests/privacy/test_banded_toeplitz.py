"""Banded Toeplitz strategies: the O(n b) recursions against dense linear algebra,
the closed-form sensitivity against the general one, and the optimiser's optimum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from veilfl.errors import ConfigurationError
from veilfl.privacy.banded_toeplitz import (
    banded_toeplitz_sensitivity,
    optimize_banded_toeplitz,
    sqrt_prefix_coefficients,
    toeplitz_inverse_coefficients,
    toeplitz_matrix,
    toeplitz_prefix_squared_errors,
)
from veilfl.privacy.min_separation import minsep_sensitivity


def _loss(coefficients: np.ndarray, rounds: int, most: int) -> float:
    """sens^2 * mean squared error, from dense matrices (the optimiser's objective)."""
    strategy = toeplitz_matrix(coefficients, rounds)
    workload = np.tril(np.ones((rounds, rounds)))
    decoder = workload @ np.linalg.inv(strategy)
    sensitivity = minsep_sensitivity(
        strategy, max_participations=most, min_separation=len(coefficients)
    )
    return sensitivity**2 * float(np.sum(decoder**2)) / rounds


@pytest.mark.parametrize(("rounds", "bands"), [(1, 1), (7, 3), (20, 5), (12, 12), (5, 9)])
def test_the_inverse_and_the_errors_match_dense_algebra(rounds: int, bands: int) -> None:
    coefficients = sqrt_prefix_coefficients(bands) * np.linspace(1.0, 0.6, bands)
    strategy = toeplitz_matrix(coefficients, rounds)
    inverse = np.linalg.inv(strategy)
    decoder = np.tril(np.ones((rounds, rounds))) @ inverse

    assert np.allclose(toeplitz_inverse_coefficients(coefficients, rounds), inverse[:, 0])
    assert np.allclose(
        toeplitz_prefix_squared_errors(coefficients, rounds), np.sum(decoder**2, axis=1)
    )


def test_the_strategy_matrix_is_banded_lower_triangular_toeplitz() -> None:
    matrix = toeplitz_matrix([3.0, 2.0, 1.0], 5)
    assert matrix[4, 2] == 1.0 and matrix[4, 3] == 2.0 and matrix[4, 4] == 3.0
    assert matrix[4, 1] == 0.0 and matrix[0, 1] == 0.0


@pytest.mark.parametrize(
    ("rounds", "most", "separation", "bands"),
    [(20, 3, 5, 5), (17, 3, 5, 5), (12, 4, 4, 3), (9, 5, 4, 4), (6, 2, 8, 8), (30, 1, 3, 2)],
)
def test_the_closed_form_sensitivity_is_the_general_one(
    rounds: int, most: int, separation: int, bands: int
) -> None:
    coefficients = np.random.default_rng(rounds).uniform(-1, 1, size=bands)
    coefficients[0] = 1.0

    closed = banded_toeplitz_sensitivity(
        coefficients, rounds=rounds, max_participations=most, min_separation=separation
    )

    general = minsep_sensitivity(
        toeplitz_matrix(coefficients, rounds),
        max_participations=most,
        min_separation=separation,
    )
    assert closed == pytest.approx(general)


def test_more_bands_than_the_separation_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="apart"):
        banded_toeplitz_sensitivity(
            [1.0, 0.5, 0.2], rounds=10, max_participations=2, min_separation=2
        )


@pytest.mark.parametrize(("rounds", "bands", "most"), [(24, 6, 3), (40, 8, 4), (16, 16, 1)])
def test_the_optimum_beats_its_start_and_every_nearby_strategy(
    rounds: int, bands: int, most: int
) -> None:
    best = np.array(optimize_banded_toeplitz(rounds=rounds, bands=bands, max_participations=most))

    assert best.shape == (bands,) and best[0] > 0
    assert np.linalg.norm(best) == pytest.approx(1.0)
    optimum = _loss(best, rounds, most)
    assert optimum < _loss(sqrt_prefix_coefficients(bands), rounds, most)
    generator = np.random.default_rng(bands)
    for _ in range(10):
        nearby = best + 1e-3 * generator.normal(size=bands)
        assert optimum <= _loss(nearby, rounds, most) * (1 + 1e-9)


def test_the_max_objective_lowers_the_last_rounds_error() -> None:
    mean = optimize_banded_toeplitz(rounds=64, bands=8, max_participations=2, objective="mean")
    last = optimize_banded_toeplitz(rounds=64, bands=8, max_participations=2, objective="max")
    assert (
        toeplitz_prefix_squared_errors(last, 64)[-1] < toeplitz_prefix_squared_errors(mean, 64)[-1]
    )
    assert np.mean(toeplitz_prefix_squared_errors(mean, 64)) < np.mean(
        toeplitz_prefix_squared_errors(last, 64)
    )


def test_the_optimum_is_cached_by_its_parameters() -> None:
    first = optimize_banded_toeplitz(rounds=50, bands=5, max_participations=2)
    assert optimize_banded_toeplitz(rounds=50, bands=5, max_participations=2) is first


def test_one_band_is_the_identity_and_bands_are_cut_to_the_rounds() -> None:
    assert optimize_banded_toeplitz(rounds=10, bands=1, max_participations=3) == (1.0,)
    assert len(optimize_banded_toeplitz(rounds=4, bands=9, max_participations=1)) == 4


def test_the_square_root_series_squares_to_the_prefix_sums() -> None:
    root = toeplitz_matrix(sqrt_prefix_coefficients(6), 6)
    assert np.allclose(root @ root, np.tril(np.ones((6, 6))))


@pytest.mark.parametrize(
    ("rounds", "bands", "most", "objective"),
    [(0, 2, 1, "mean"), (5, 0, 1, "mean"), (5, 2, 0, "mean"), (5, 2, 1, "median")],
)
def test_invalid_settings_are_refused(rounds: int, bands: int, most: int, objective: str) -> None:
    with pytest.raises(ConfigurationError):
        optimize_banded_toeplitz(
            rounds=rounds,
            bands=bands,
            max_participations=most,
            objective=objective,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("coefficients", [[], [0.0, 1.0], [1.0, math.inf]])
def test_invalid_coefficients_are_refused(coefficients: list[float]) -> None:
    with pytest.raises(ConfigurationError, match="c_0 > 0"):
        toeplitz_matrix(coefficients, 3)
