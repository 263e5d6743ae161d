"""Sensitivity of a matrix-factorisation strategy under the min-separation schema.

A matrix mechanism (Denisov, McMahan, Rush, Smith and Thakurta 2022; Choquette-Choo
et al. 2023) releases ``C x + z``: x is the n x d matrix whose row i is round i's
sum of clipped updates, C is the n x n *strategy*, z is Gaussian noise. Column i of
C says how round i's data enters every release.

Participation schema (Choquette-Choo et al. 2023, "(Amplified) Banded Matrix
Factorization", the (k, b)-min-separation schema): a client takes part in at most K
rounds, any two of them at least b apart (rounds i < j with j - i >= b). Rounds
are numbered 0 .. n - 1 here.

Sensitivity (zero-out adjacency). A client in the rounds of a pattern P, with
updates u_i (||u_i|| <= 1 in units of the clipping norm), changes the release by
``sum_{i in P} C[:, i] u_i^T``, whose squared Frobenius norm is

    sum_{i, j in P} X_ij <u_i, u_j>,   X = C^T C (the Gram matrix of C's columns).

Its maximum over unit u's is the sensitivity squared. Three cases:

* **Disjoint columns.** If X_ij = 0 whenever |i - j| >= b (for example a
  lower-triangular C with at most b bands: column i lives on rows i .. i + b - 1),
  only the diagonal survives, and sens^2 = max over P of sum_{i in P} X_ii =
  sum of the squared column norms of the best pattern, found exactly by dynamic
  programming in O(n K).
* **Non-negative Gram matrix.** If X >= 0 on every pattern the maximum is at
  u_i all equal (every term is then as large as it can be), so sens = max over P
  of ||sum_{i in P} C[:, i]||_2. With few enough patterns this module enumerates
  them all and the value is exact.
* **Otherwise** ``<u_i, u_j> <= 1`` gives the valid upper bound
  sens^2 <= max_P sum_{i, j in P} |X_ij| <= max_P sum_{i in P} g_i, with
  g_i = max over patterns P' containing i of sum_{j in P'} |X_ij|, both maxima by
  the same dynamic programme.

For a lower-triangular Toeplitz C with non-negative, non-increasing coefficients
(a BLT strategy, for one) X >= 0 and the worst pattern is rounds 0, b, 2b, ...
(arXiv:2405.13763, Theorem 2, the result behind jax-privacy's
``toeplitz.minsep_sensitivity_squared``; our tests also check it by brute force):
the sensitivity is ||sum_{m < K'} C[:, m b]||, in O(n K)
(:func:`toeplitz_minsep_sensitivity`).

The cyclic (fixed-epoch-order) schema is the special case in which a client takes
part in exactly the rounds i, i + b, i + 2b, ... for one i < b (b = n / K rounds an
epoch): only b patterns, so :func:`cyclic_sensitivity` checks them all. Every cyclic
pattern is a min-separation pattern, so the min-separation value bounds it.

The sensitivity must come from C's *columns*: a factor with unit *row* norms (a
Cholesky factor L of a Gram matrix, L L^T = X) has columns of other norms, and the
sensitivity is then not sqrt(K).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError

__all__ = [
    "ENUMERATION_LIMIT",
    "cyclic_sensitivity",
    "fitting_participations",
    "minsep_sensitivity",
    "participation_patterns",
    "toeplitz_minsep_sensitivity",
]

ENUMERATION_LIMIT = 20_000
"""The most participation patterns :func:`minsep_sensitivity` enumerates for an
exact answer; beyond it (and without disjoint columns) it returns the upper bound."""

_NEG = -math.inf


def fitting_participations(*, rounds: int, max_participations: int, min_separation: int) -> int:
    """How many participations fit in ``rounds`` rounds: min(K, ceil(n / b)).

    Raises:
        ConfigurationError: for rounds < 0, K < 1 or b < 1.
    """
    if rounds < 0 or max_participations < 1 or min_separation < 1:
        raise ConfigurationError(
            "The min-separation schema needs rounds >= 0, at least 1 participation and a "
            f"separation of at least 1 round; got {rounds}, {max_participations} and "
            f"{min_separation}."
        )
    return min(max_participations, -(-rounds // min_separation))


def _pattern_count(rounds: int, most: int, separation: int) -> int:
    return sum(
        math.comb(rounds - (k - 1) * (separation - 1), k)
        for k in range(1, most + 1)
        if rounds - (k - 1) * (separation - 1) >= k
    )


def participation_patterns(
    *, rounds: int, max_participations: int, min_separation: int
) -> Iterator[tuple[int, ...]]:
    """Every non-empty set of at most K rounds in 0 .. n - 1 that are pairwise at
    least b apart, as increasing tuples.

    Raises:
        ConfigurationError: for rounds < 0, K < 1 or b < 1.
    """
    most = fitting_participations(
        rounds=rounds, max_participations=max_participations, min_separation=min_separation
    )

    def extend(pattern: tuple[int, ...], start: int) -> Iterator[tuple[int, ...]]:
        for i in range(start, rounds):
            grown = (*pattern, i)
            yield grown
            if len(grown) < most:
                yield from extend(grown, i + min_separation)

    return extend((), 0)


def _best_pattern_sums(
    weights: npt.NDArray[np.float64], most: int, separation: int, stops: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """For each row r of ``weights`` (shape (m, n)): the largest sum of weights[r, i]
    over at most k rounds i < stops[r], pairwise >= separation apart, for k = 0..most.

    Dynamic programming over prefixes, keeping only the last ``separation`` prefixes:
    O(n m most) time, O(separation m most) memory. Weights must be >= 0.

    Returns shape (m, most + 1).
    """
    m, n = weights.shape
    history = [np.zeros((m, most + 1))]  # history[-1]: the prefix [0, t)
    found = np.zeros((m, most + 1))
    at_zero = stops == 0
    found[at_zero] = history[-1][at_zero]
    for t in range(n):
        earlier = history[max(len(history) - separation, 0)]  # the prefix [0, t + 1 - b)
        current = history[-1].copy()
        current[:, 1:] = np.maximum(current[:, 1:], earlier[:, :-1] + weights[:, t : t + 1])
        history = [*history[-(separation - 1) :], current] if separation > 1 else [current]
        here = stops == t + 1
        found[here] = current[here]
    return found


def _best_pattern_sum(weights: npt.NDArray[np.float64], most: int, separation: int) -> float:
    """max over patterns P of sum_{i in P} weights[i] (weights >= 0)."""
    stops = np.array([weights.size], dtype=np.int64)
    return float(_best_pattern_sums(weights[np.newaxis, :], most, separation, stops)[0, most])


def _best_sums_through(
    weights: npt.NDArray[np.float64], most: int, separation: int
) -> npt.NDArray[np.float64]:
    """g_i = max over patterns containing i of sum_{j in P} weights[i, j] (weights >= 0)."""
    n = weights.shape[0]
    rows = np.arange(n)
    # Row i's others lie in rounds <= i - b (a prefix) and >= i + b (a mirrored prefix).
    left = _best_pattern_sums(
        weights, most, separation, np.maximum(rows - separation + 1, 0).astype(np.int64)
    )
    right = _best_pattern_sums(
        weights[:, ::-1], most, separation, np.maximum(n - rows - separation, 0).astype(np.int64)
    )
    pairs = np.stack([left[:, k] + right[:, most - 1 - k] for k in range(most)])
    through: npt.NDArray[np.float64] = np.diag(weights) + np.max(pairs, axis=0)
    return through


def minsep_sensitivity(
    strategy: npt.ArrayLike, *, max_participations: int, min_separation: int
) -> float:
    """The L2 sensitivity of ``strategy @ x`` in units of the clipping norm, for a
    client in at most K rounds at least b apart (see the module docstring).

    Exact when the columns of rounds b or more apart are orthogonal (a banded
    strategy with at most b bands), and when C^T C >= 0 with at most
    :data:`ENUMERATION_LIMIT` patterns (then it is the largest
    ||sum_{i in P} C[:, i]||); otherwise a valid upper bound, within a factor
    sqrt(K) of the truth when C^T C >= 0. Beyond forming C^T C (O(n^3)), the exact
    banded case costs O(n K) and the bound O(n^2 K) time and O(n b K) memory.

    Args:
        strategy: C, an n x n matrix (column i: how round i enters the releases).
        max_participations: K.
        min_separation: b.

    Raises:
        ConfigurationError: for a matrix that is not square and finite, K < 1 or b < 1.
    """
    matrix = np.asarray(strategy, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not np.all(np.isfinite(matrix)):
        raise ConfigurationError("The strategy matrix must be square with finite entries.")
    rounds = matrix.shape[0]
    most = fitting_participations(
        rounds=rounds, max_participations=max_participations, min_separation=min_separation
    )
    if most == 0:
        return 0.0
    gram = matrix.T @ matrix
    scale = float(np.max(np.abs(gram)))
    if scale == 0:
        return 0.0
    gap = np.abs(np.subtract.outer(np.arange(rounds), np.arange(rounds)))
    far = gap >= min_separation
    tolerance = 1e-12 * scale
    if not np.any(np.abs(gram[far]) > tolerance):
        return math.sqrt(_best_pattern_sum(np.diag(gram).copy(), most, min_separation))
    if np.all(gram >= -tolerance) and (
        _pattern_count(rounds, most, min_separation) <= ENUMERATION_LIMIT
    ):
        worst = max(
            float(gram[np.ix_(p, p)].sum())
            for p in participation_patterns(
                rounds=rounds, max_participations=most, min_separation=min_separation
            )
        )
        return math.sqrt(max(worst, 0.0))
    magnitude = np.abs(gram) * far + np.diag(np.abs(np.diag(gram)))
    through = _best_sums_through(magnitude, most, min_separation)
    return math.sqrt(_best_pattern_sum(through, most, min_separation))


def toeplitz_minsep_sensitivity(
    coefficients: npt.ArrayLike, *, rounds: int, max_participations: int, min_separation: int
) -> float:
    """The sensitivity of the lower-triangular Toeplitz strategy with first column c
    (zero-padded or cut to n), for non-negative, non-increasing c: the norm of the
    sum of columns 0, b, ..., (K' - 1) b (module docstring).

    Raises:
        ConfigurationError: for coefficients that are empty, negative or increasing
            (use :func:`minsep_sensitivity`), rounds < 1 or invalid limits.
    """
    c = np.asarray(coefficients, dtype=np.float64)
    if (
        c.ndim != 1
        or c.size == 0
        or not np.all(np.isfinite(c))
        or np.any(c < 0)
        or np.any(np.diff(c) > 0)
    ):
        raise ConfigurationError(
            "The closed-form Toeplitz sensitivity needs non-negative, non-increasing "
            "coefficients; use minsep_sensitivity on the matrix otherwise."
        )
    if rounds < 1:
        raise ConfigurationError(f"A strategy needs at least one round; got {rounds}.")
    most = fitting_participations(
        rounds=rounds, max_participations=max_participations, min_separation=min_separation
    )
    column = np.zeros(rounds)
    first = c[:rounds]
    for m in range(most):
        start = m * min_separation
        column[start:] += first[: rounds - start]
    return float(np.linalg.norm(column))


def cyclic_sensitivity(strategy: npt.ArrayLike, *, period: int) -> float:
    """The sensitivity of ``strategy @ x`` (units of the clipping norm) when a client
    takes part in exactly the rounds i, i + period, i + 2 period, ... for one
    i < period (the cyclic schema). Exact when C^T C >= 0 on those rounds (always for
    a banded strategy with at most ``period`` bands); otherwise the valid upper bound
    sqrt(max_i sum_{j, k in P_i} |X_jk|).

    Raises:
        ConfigurationError: for a matrix that is not square and finite, or a period
            below 1.
    """
    matrix = np.asarray(strategy, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or not np.all(np.isfinite(matrix)):
        raise ConfigurationError("The strategy matrix must be square with finite entries.")
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise ConfigurationError(f"The cyclic schema needs a period of at least 1; got {period!r}.")
    gram = np.abs(matrix.T @ matrix)
    rounds = matrix.shape[0]
    offsets = [np.arange(i, rounds, period) for i in range(min(period, rounds))]
    worst = max((float(gram[np.ix_(rows, rows)].sum()) for rows in offsets), default=0.0)
    return math.sqrt(worst)
