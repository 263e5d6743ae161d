"""Min-separation sensitivity of a strategy matrix against brute force over every
participation pattern, including a factor with unit row norms (pfl's mistake)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest

from veilfl.errors import ConfigurationError
from veilfl.privacy.banded_toeplitz import optimize_banded_toeplitz, toeplitz_matrix
from veilfl.privacy.min_separation import (
    cyclic_sensitivity,
    fitting_participations,
    minsep_sensitivity,
    participation_patterns,
    toeplitz_minsep_sensitivity,
)


def _patterns(rounds: int, most: int, separation: int) -> list[tuple[int, ...]]:
    """Every set of 1..most rounds pairwise >= separation apart (itertools)."""
    return [
        pattern
        for k in range(1, most + 1)
        for pattern in itertools.combinations(range(rounds), k)
        if all(b - a >= separation for a, b in itertools.pairwise(pattern))
    ]


def _column_sum_norm(strategy: npt.NDArray[np.float64], most: int, separation: int) -> float:
    """Brute force: the largest ||sum_{i in P} C[:, i]|| over allowed patterns."""
    return max(
        float(np.linalg.norm(strategy[:, list(p)].sum(axis=1)))
        for p in _patterns(strategy.shape[0], most, separation)
    )


def _signed_column_sum_norm(strategy: npt.NDArray[np.float64], most: int, separation: int) -> float:
    """A lower bound on the true sensitivity: updates may point either way."""
    best = 0.0
    for pattern in _patterns(strategy.shape[0], most, separation):
        for signs in itertools.product((1.0, -1.0), repeat=len(pattern)):
            total = strategy[:, list(pattern)] @ np.array(signs)
            best = max(best, float(np.linalg.norm(total)))
    return best


def _banded(rounds: int, bands: int, generator: np.random.Generator) -> npt.NDArray[np.float64]:
    matrix = np.tril(generator.normal(size=(rounds, rounds)))
    lags = np.subtract.outer(np.arange(rounds), np.arange(rounds))
    return np.where(lags < bands, matrix, 0.0)


@pytest.mark.parametrize(("rounds", "most", "separation"), [(9, 2, 3), (12, 3, 4), (7, 4, 2)])
def test_patterns_are_all_and_only_the_allowed_ones(
    rounds: int, most: int, separation: int
) -> None:
    found = list(
        participation_patterns(rounds=rounds, max_participations=most, min_separation=separation)
    )
    assert sorted(found) == sorted(_patterns(rounds, most, separation))
    assert len(set(found)) == len(found)


@pytest.mark.parametrize(
    ("rounds", "most", "separation", "bands"),
    [(10, 2, 3, 3), (12, 3, 4, 2), (11, 4, 2, 2), (8, 1, 1, 1), (9, 5, 3, 3)],
)
def test_a_banded_strategy_is_exact_for_any_signs(
    rounds: int, most: int, separation: int, bands: int
) -> None:
    strategy = _banded(rounds, bands, np.random.default_rng(rounds * 100 + most))

    sensitivity = minsep_sensitivity(strategy, max_participations=most, min_separation=separation)

    assert sensitivity == pytest.approx(_column_sum_norm(strategy, most, separation))
    assert sensitivity == pytest.approx(_signed_column_sum_norm(strategy, most, separation))


@pytest.mark.parametrize(("rounds", "most", "separation"), [(10, 3, 2), (9, 2, 1), (12, 3, 3)])
def test_a_non_negative_dense_strategy_is_exact(rounds: int, most: int, separation: int) -> None:
    strategy = np.tril(np.random.default_rng(rounds).uniform(size=(rounds, rounds)))

    sensitivity = minsep_sensitivity(strategy, max_participations=most, min_separation=separation)

    assert sensitivity == pytest.approx(_column_sum_norm(strategy, most, separation))


@pytest.mark.parametrize(("rounds", "most", "separation"), [(9, 3, 2), (8, 2, 1), (10, 2, 3)])
def test_a_signed_dense_strategy_gets_a_valid_upper_bound(
    rounds: int, most: int, separation: int
) -> None:
    strategy = np.tril(np.random.default_rng(rounds + 7).normal(size=(rounds, rounds)))

    sensitivity = minsep_sensitivity(strategy, max_participations=most, min_separation=separation)

    assert sensitivity >= _signed_column_sum_norm(strategy, most, separation) - 1e-9


def test_a_factor_with_unit_row_norms_has_more_than_sqrt_k_sensitivity() -> None:
    # pfl 0.6 optimises the Gram matrix X = C^T C (unit diagonal) and then uses
    # L = cholesky(X), for which L L^T = X: unit *row* norms. Its columns are what a
    # client's updates pass through, and they are longer than 1 at the start.
    rounds, most, separation = 30, 3, 10
    strategy = toeplitz_matrix(
        optimize_banded_toeplitz(rounds=rounds, bands=separation, max_participations=most),
        rounds,
    )
    gram = strategy.T @ strategy
    unit = gram / np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    rows_normalised = np.linalg.cholesky(unit)
    assert np.allclose(np.linalg.norm(rows_normalised, axis=1), 1.0)

    sensitivity = minsep_sensitivity(
        rows_normalised, max_participations=most, min_separation=separation
    )

    assert sensitivity > math.sqrt(most) * 1.05
    assert sensitivity == pytest.approx(_column_sum_norm(rows_normalised, most, separation))
    client = float(np.linalg.norm(rows_normalised[:, [0, 10, 20]].sum(axis=1)))
    assert math.sqrt(most) < client <= sensitivity + 1e-12


def test_the_proper_strategy_has_sqrt_k_sensitivity() -> None:
    strategy = toeplitz_matrix(
        optimize_banded_toeplitz(rounds=30, bands=10, max_participations=3), 30
    )
    assert minsep_sensitivity(strategy, max_participations=3, min_separation=10) == pytest.approx(
        math.sqrt(3)
    )


def test_participations_that_do_not_fit_are_not_counted() -> None:
    assert fitting_participations(rounds=10, max_participations=5, min_separation=4) == 3
    assert minsep_sensitivity(np.eye(10), max_participations=5, min_separation=4) == pytest.approx(
        math.sqrt(3)
    )


@pytest.mark.parametrize(
    "strategy", [np.ones((2, 3)), np.array([[1.0, np.nan], [0.0, 1.0]]), np.ones(3)]
)
def test_a_malformed_strategy_is_refused(strategy: npt.NDArray[np.float64]) -> None:
    with pytest.raises(ConfigurationError, match="square"):
        minsep_sensitivity(strategy, max_participations=1, min_separation=1)


def test_invalid_participation_limits_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="separation"):
        minsep_sensitivity(np.eye(3), max_participations=0, min_separation=1)


@pytest.mark.parametrize(
    ("rounds", "most", "separation"), [(12, 3, 2), (10, 2, 1), (11, 4, 3), (7, 3, 5)]
)
def test_a_decreasing_toeplitz_strategy_peaks_at_rounds_b_apart(
    rounds: int, most: int, separation: int
) -> None:
    decreasing = np.sort(np.random.default_rng(rounds).uniform(size=rounds))[::-1]

    closed = toeplitz_minsep_sensitivity(
        decreasing, rounds=rounds, max_participations=most, min_separation=separation
    )

    strategy = toeplitz_matrix(decreasing, rounds)
    assert closed == pytest.approx(_column_sum_norm(strategy, most, separation))


@pytest.mark.parametrize("coefficients", [[1.0, 1.2], [1.0, -0.1], []])
def test_the_toeplitz_closed_form_refuses_what_it_does_not_cover(
    coefficients: list[float],
) -> None:
    with pytest.raises(ConfigurationError, match="non-increasing"):
        toeplitz_minsep_sensitivity(coefficients, rounds=5, max_participations=2, min_separation=2)


@pytest.mark.parametrize(("rounds", "most", "separation"), [(10, 3, 2), (9, 2, 1), (12, 4, 3)])
def test_without_enumeration_the_bound_holds_and_stays_within_sqrt_k(
    rounds: int, most: int, separation: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    strategy = np.tril(np.random.default_rng(rounds + 3).uniform(size=(rounds, rounds)))
    monkeypatch.setattr("veilfl.privacy.min_separation.ENUMERATION_LIMIT", 0)

    bound = minsep_sensitivity(strategy, max_participations=most, min_separation=separation)

    exact = _column_sum_norm(strategy, most, separation)
    assert exact - 1e-9 <= bound <= math.sqrt(most) * exact + 1e-9


@pytest.mark.parametrize(("rounds", "period"), [(12, 4), (10, 3), (6, 1), (5, 8)])
def test_the_cyclic_schema_checks_every_epoch_offset(rounds: int, period: int) -> None:
    strategy = np.tril(np.random.default_rng(rounds * period).uniform(size=(rounds, rounds)))

    sensitivity = cyclic_sensitivity(strategy, period=period)

    offsets = [list(range(i, rounds, period)) for i in range(min(period, rounds))]
    brute = max(float(np.linalg.norm(strategy[:, rows].sum(axis=1))) for rows in offsets)
    assert sensitivity == pytest.approx(brute)
    most = -(-rounds // period)
    assert (
        sensitivity
        <= minsep_sensitivity(strategy, max_participations=most, min_separation=period) + 1e-9
    )


def test_a_signed_strategy_gets_a_cyclic_upper_bound() -> None:
    strategy = np.tril(np.random.default_rng(5).normal(size=(9, 9)))
    offsets = [list(range(i, 9, 3)) for i in range(3)]
    signed = max(
        float(np.linalg.norm(strategy[:, rows] @ np.array(signs)))
        for rows in offsets
        for signs in itertools.product((1.0, -1.0), repeat=len(rows))
    )
    assert cyclic_sensitivity(strategy, period=3) >= signed - 1e-9
