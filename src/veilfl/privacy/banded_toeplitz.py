"""Banded Toeplitz strategies for private prefix sums, and their optimisation.

The workload. Training on noised prefix sums (DP-FTRL; Kairouz et al. 2021) asks
for A x with A the n x n lower-triangular matrix of ones. A matrix mechanism
factorises A = B C and releases C x + z, z ~ N(0, sigma^2 I) per round; the prefix
sums are read as B (C x + z) = A x + B z (Denisov et al. 2022).

The strategy. Here C is lower-triangular Toeplitz with b bands: C[t, s] = c_(t-s)
for 0 <= t - s < b, zero elsewhere (Choquette-Choo et al. 2023, "(Amplified) Banded
Matrix Factorization: A unified approach to private training"; McKenna 2024,
"Scaling up the Banded Matrix Factorization Mechanism"). Its inverse is the
lower-triangular Toeplitz matrix of the power series 1 / c(x), c(x) = sum_j c_j x^j,
truncated to n terms: d_0 = 1 / c_0, d_k = -(sum_{j=1}^{min(k, b-1)} c_j d_(k-j)) / c_0,
computed in O(n b) (an all-pole filter, ``scipy.signal.lfilter``). B = A C^-1 is
then lower-triangular Toeplitz with coefficients e_k = d_0 + ... + d_k, so the
release at round t carries noise of variance sigma^2 (e_0^2 + ... + e_t^2).

Sensitivity. With separation >= b, C's columns of two participations have disjoint
supports (column i lives on rows i .. i + b - 1), so the squared sensitivity is the
sum of K squared column norms (:mod:`veilfl.privacy.min_separation`). For a Toeplitz
C every column norm is ||c|| except where the column is cut off by the last round,
so the worst client takes part in rounds 0, b, 2b, ...:

    sens^2 = sum_{k < K'} sum_{j < min(b, n - k b)} c_j^2,   K' = min(K, ceil(n / b)).

The objective. The error at a fixed epsilon is sigma^2 times the error factor, and
sigma is proportional to the sensitivity, so the optimiser minimises
``sens^2(c) * error(c)``, where error is the mean over rounds of the per-round
squared error (``"mean"``) or that of the last round, which is the largest
(``"max"``). Both are scale-free in c. The optimum is found by L-BFGS (scipy) from
the banded truncation of the optimal infinite Toeplitz factor sqrt(A), the series of
(1 - x)^(-1/2) (Fichtenberger, Henzinger and Upadhyay 2023), with the analytic
gradient: d(d_k)/d(c_j) = -(d * d)_(k-j) (differentiate c * d = 1). Coefficients are
returned scaled to unit norm, so the sensitivity is sqrt(K') when K' b <= n.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, signal

from veilfl.errors import ConfigurationError
from veilfl.privacy.min_separation import fitting_participations

__all__ = [
    "ErrorObjective",
    "banded_toeplitz_sensitivity",
    "optimize_banded_toeplitz",
    "sqrt_prefix_coefficients",
    "toeplitz_inverse_coefficients",
    "toeplitz_matrix",
    "toeplitz_prefix_squared_errors",
]

ErrorObjective = Literal["mean", "max"]
"""What the optimiser minimises: the mean over rounds of the squared prefix-sum
error, or the largest (the last round's)."""

FloatArray = npt.NDArray[np.float64]


def _coefficients(coefficients: npt.ArrayLike) -> FloatArray:
    c = np.asarray(coefficients, dtype=np.float64)
    if c.ndim != 1 or c.size == 0 or not np.all(np.isfinite(c)) or not c[0] > 0:
        raise ConfigurationError(
            "Toeplitz coefficients must be a non-empty finite vector with c_0 > 0."
        )
    return c


def _check_rounds(rounds: int) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigurationError(f"A strategy needs at least one round; got {rounds!r}.")


def toeplitz_matrix(coefficients: npt.ArrayLike, rounds: int) -> FloatArray:
    """The n x n lower-triangular Toeplitz matrix with first column c (zero-padded or
    cut to n).

    Raises:
        ConfigurationError: for invalid coefficients or rounds < 1.
    """
    c = _coefficients(coefficients)
    _check_rounds(rounds)
    column = np.zeros(rounds)
    column[: min(c.size, rounds)] = c[:rounds]
    lags = np.subtract.outer(np.arange(rounds), np.arange(rounds))
    return np.where(lags >= 0, column[np.clip(lags, 0, None)], 0.0)


def toeplitz_inverse_coefficients(coefficients: npt.ArrayLike, rounds: int) -> FloatArray:
    """The first n coefficients of 1 / c(x): the first column of C^-1.

    Raises:
        ConfigurationError: for invalid coefficients or rounds < 1.
    """
    c = _coefficients(coefficients)
    _check_rounds(rounds)
    impulse = np.zeros(rounds)
    impulse[0] = 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(signal.lfilter([1.0], c[:rounds], impulse), dtype=np.float64)


def toeplitz_prefix_squared_errors(coefficients: npt.ArrayLike, rounds: int) -> FloatArray:
    """Per round t = 0 .. n - 1: the squared norm of row t of B = A C^-1, i.e. the
    prefix sum's noise variance at round t per unit of per-release noise variance.

    Raises:
        ConfigurationError: for invalid coefficients or rounds < 1.
    """
    prefix = np.cumsum(toeplitz_inverse_coefficients(coefficients, rounds))
    return np.cumsum(prefix**2)


def banded_toeplitz_sensitivity(
    coefficients: npt.ArrayLike, *, rounds: int, max_participations: int, min_separation: int
) -> float:
    """The min-separation sensitivity (in units of the clipping norm) of the banded
    Toeplitz strategy with coefficients c over n rounds (module docstring).

    Raises:
        ConfigurationError: for more bands than the separation (columns would then
            overlap: use :func:`veilfl.privacy.min_separation.minsep_sensitivity`),
            invalid coefficients or participation limits.
    """
    c = _coefficients(coefficients)
    _check_rounds(rounds)
    if c.size > min_separation:
        raise ConfigurationError(
            f"A strategy with {c.size} bands needs participations at least {c.size} rounds "
            f"apart for this closed form; the separation is {min_separation}."
        )
    return math.sqrt(_squared_sensitivity(c, rounds, max_participations, min_separation))


def _participation_counts(
    bands: int, rounds: int, max_participations: int, min_separation: int
) -> FloatArray:
    """m_j: in how many of the worst client's columns (0, b, 2b, ...) c_j appears."""
    most = fitting_participations(
        rounds=rounds, max_participations=max_participations, min_separation=min_separation
    )
    starts = np.arange(most) * min_separation
    return np.array([np.sum(starts + j < rounds) for j in range(bands)], dtype=np.float64)


def _squared_sensitivity(
    c: FloatArray, rounds: int, max_participations: int, min_separation: int
) -> float:
    counts = _participation_counts(c.size, rounds, max_participations, min_separation)
    return float(np.sum(counts * c**2))


def sqrt_prefix_coefficients(count: int) -> FloatArray:
    """The first ``count`` coefficients of (1 - x)^(-1/2): binom(2k, k) / 4^k, the
    Toeplitz square root of the prefix-sum matrix.

    Raises:
        ConfigurationError: for count < 1.
    """
    if count < 1:
        raise ConfigurationError("At least one coefficient is needed.")
    k = np.arange(1, count, dtype=np.float64)
    return np.concatenate([[1.0], np.cumprod((2 * k - 1) / (2 * k))])


def _objective(
    free: FloatArray,
    rounds: int,
    counts: FloatArray,
    weights: FloatArray,
    scale: float,
) -> tuple[float, FloatArray]:
    """sens^2 * error and its gradient in c_1 .. c_(b-1) (c_0 = 1), divided by scale."""
    c = np.concatenate([[1.0], free])
    bands = c.size
    with np.errstate(over="ignore", invalid="ignore"):
        inverse = toeplitz_inverse_coefficients(c, rounds)
        prefix = np.cumsum(inverse)
        error = float(np.sum(weights * prefix**2))
        if not math.isfinite(error):
            return math.inf, np.zeros_like(free)
        sensitivity = float(np.sum(counts * c**2))
        # dE/dd_i = sum_{k >= i} 2 w_k e_k; dd_k/dc_j = -(d * d)_(k - j).
        upstream = np.cumsum((2 * weights * prefix)[::-1])[::-1]
        squared = np.asarray(signal.lfilter([1.0], c, inverse), dtype=np.float64)
        error_gradient = np.array(
            [-np.dot(upstream[j:], squared[: rounds - j]) for j in range(bands)]
        )
        gradient = 2 * counts * c * error + sensitivity * error_gradient
    return sensitivity * error / scale, gradient[1:] / scale


def _error_weights(rounds: int, objective: ErrorObjective) -> FloatArray:
    """w_k such that error = sum_k w_k e_k^2."""
    if objective == "mean":
        return (rounds - np.arange(rounds, dtype=np.float64)) / rounds
    return np.ones(rounds)


@functools.lru_cache(maxsize=64)
def _optimize(
    rounds: int, bands: int, max_participations: int, objective: ErrorObjective
) -> tuple[float, ...]:
    start = sqrt_prefix_coefficients(bands)
    if bands == 1:
        return (1.0,)
    counts = _participation_counts(bands, rounds, max_participations, bands)
    weights = _error_weights(rounds, objective)
    scale, _ = _objective(start[1:], rounds, counts, weights, 1.0)
    result: Any = optimize.minimize(
        _objective,
        start[1:],
        args=(rounds, counts, weights, scale),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 500},
    )
    best = np.concatenate([[1.0], result.x])
    if not result.fun <= 1.0:  # never return worse than the starting point
        best = start
    return tuple(float(v) for v in best / np.linalg.norm(best))


def optimize_banded_toeplitz(
    *,
    rounds: int,
    bands: int,
    max_participations: int,
    objective: ErrorObjective = "mean",
) -> tuple[float, ...]:
    """The b coefficients of the banded Toeplitz strategy that minimises
    sens^2 * error for the prefix-sum workload, under K participations at least
    b = ``bands`` rounds apart (module docstring). Unit L2 norm, c_0 > 0.

    Cached by its arguments: a run optimises its strategy once. It takes well under
    a second for n = 2,000 and b = 100.

    Args:
        rounds: n, the rounds planned.
        bands: b, which is also the minimum separation the strategy is made for
            (cut to n).
        max_participations: K.
        objective: ``"mean"`` or ``"max"`` squared error over rounds.

    Raises:
        ConfigurationError: for rounds < 1, bands < 1, K < 1 or an unknown objective.
    """
    _check_rounds(rounds)
    if bands < 1 or max_participations < 1:
        raise ConfigurationError(
            f"A banded strategy needs at least one band and one participation; got {bands} "
            f"and {max_participations}."
        )
    if objective not in ("mean", "max"):
        raise ConfigurationError(f"Unknown objective {objective!r}; use 'mean' or 'max'.")
    return _optimize(rounds, min(bands, rounds), max_participations, objective)
