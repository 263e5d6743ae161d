"""How much noise a prefix-sum mechanism leaves in what training reads.

Training reads prefix sums A x (A: the n x n lower-triangular matrix of ones). A
matrix mechanism A = B C releasing C x + z, z ~ N(0, (z·clip)^2 I) per round, gives
A x + B z (Denisov et al. 2022): at round t each coordinate carries noise of
variance (z·clip)^2 ||B[t, :]||^2. This module reports the root of the mean of
these variances over the n rounds, per coordinate, in units of the clipping norm:

    RMSE = z sqrt(||A C^-1||_F^2 / n).

The tree mechanism of DP-FTRL (:mod:`veilfl.privacy.tree`) is also of this form:
the prefix sum after step t carries one independent N(0, (z·clip)^2) per node of
its cover, and the cover of [1, t] has popcount(t) nodes, so its RMSE is
z sqrt(mean over t = 1..n of popcount(t)).

Compare mechanisms at the same epsilon, not at the same z: z is proportional to
each one's sensitivity (:mod:`veilfl.privacy.mf_accounting`). This is the number a
noise advisor prints next to the noise-to-signal ratio.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import linalg

from veilfl.errors import ConfigurationError
from veilfl.privacy.banded_toeplitz import toeplitz_prefix_squared_errors
from veilfl.privacy.tree import cover

__all__ = ["prefix_sum_rmse", "toeplitz_prefix_sum_rmse", "tree_prefix_sum_rmse"]


def _check_noise(noise_multiplier: float) -> None:
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ConfigurationError("The noise multiplier must be a finite number >= 0.")


def prefix_sum_rmse(strategy: npt.ArrayLike, *, noise_multiplier: float) -> float:
    """z sqrt(||A C^-1||_F^2 / n) for a lower-triangular strategy C.

    Raises:
        ConfigurationError: for a matrix that is not square, lower-triangular and
            invertible, or a negative z.
    """
    _check_noise(noise_multiplier)
    matrix = np.asarray(strategy, dtype=np.float64)
    if (
        matrix.ndim != 2
        or matrix.shape[0] != matrix.shape[1]
        or matrix.shape[0] == 0
        or np.any(np.triu(matrix, 1) != 0)
        or np.any(np.diag(matrix) == 0)
    ):
        raise ConfigurationError(
            "The strategy must be a square lower-triangular matrix with a non-zero diagonal."
        )
    rounds = matrix.shape[0]
    # B = A C^-1, i.e. C^T B^T = A^T.
    workload = np.tril(np.ones((rounds, rounds)))
    transposed = linalg.solve_triangular(matrix.T, workload.T, lower=False)
    return noise_multiplier * math.sqrt(float(np.sum(transposed**2)) / rounds)


def toeplitz_prefix_sum_rmse(
    coefficients: npt.ArrayLike, *, rounds: int, noise_multiplier: float
) -> float:
    """:func:`prefix_sum_rmse` of the lower-triangular Toeplitz strategy with first
    column c, in O(n b).

    Raises:
        ConfigurationError: for invalid coefficients, rounds < 1 or a negative z.
    """
    _check_noise(noise_multiplier)
    errors = toeplitz_prefix_squared_errors(coefficients, rounds)
    return noise_multiplier * math.sqrt(float(np.mean(errors)))


def tree_prefix_sum_rmse(*, rounds: int, noise_multiplier: float) -> float:
    """The tree mechanism's RMSE over steps 1..n: z sqrt(mean |cover(t)|).

    Raises:
        ConfigurationError: for rounds < 1 or a negative z.
    """
    _check_noise(noise_multiplier)
    if rounds < 1:
        raise ConfigurationError(f"The tree needs at least one round; got {rounds}.")
    nodes = sum(len(cover(step)) for step in range(1, rounds + 1))
    return noise_multiplier * math.sqrt(nodes / rounds)
