"""Buffered Linear Toeplitz (BLT) strategies: correlated noise from a few buffers.

A BLT strategy (Dvijotham, McMahan, Pillutla, Steinke and Thakurta 2024, "Efficient
and Near-Optimal Noise Generation for Streaming Differential Privacy") is the
lower-triangular Toeplitz C with

    c_0 = 1,   c_i = sum_{j=1}^{k} w_j theta_j^(i-1)   (i >= 1),

k buffers with weights w_j >= 0 and decays 0 <= theta_j < 1. Its generating function
is rational, c(x) = 1 + x sum_j w_j / (1 - theta_j x) = P(x) / Q(x) with
Q(x) = prod_j (1 - theta_j x), so C and C^-1 (the series Q / P) are computed in
O(n k) by linear filters.

Noise. Under central placement the coordinator adds (C^-1 z)_t to round t's sum,
z_t ~ N(0, (z·clip)^2 I) fresh each round: the release x + C^-1 z is the
post-processing by C^-1 of the matrix mechanism C x + z. The forward substitution
out_t = z_t - sum_{i>=1} c_i out_(t-i) needs only k running sums,

    out_t = z_t - sum_j w_j S_j,   then S_j <- theta_j S_j + out_t,

so :class:`BltNoiseStream` keeps O(k·d) state, whatever the number of rounds, and
persists it (:class:`~veilfl.privacy.mf_stream.StreamState`). The same recursion
decodes a release C x + z into x + C^-1 z. (Under distributed placement the
aggregators' field arithmetic needs integer coefficients: use the banded strategy of
:mod:`veilfl.privacy.integer_strategy`; a BLT's real decays have no exact integer
form.)

Sensitivity. With sum_j w_j <= 1 the coefficients are non-negative and
non-increasing, so the worst client under (K, b) min-separation takes part in rounds
0, b, 2b, ... (:func:`~veilfl.privacy.min_separation.toeplitz_minsep_sensitivity`
and its sources). This module
keeps every strategy in that set.

Optimisation. :func:`optimize_blt` minimises sens^2 · error (the mean or the last
round's squared prefix-sum error, as for the banded strategies of
:mod:`veilfl.privacy.banded_toeplitz`) over theta_j = sigmoid(u_j) and
w = sigmoid(s) softmax(v) (which keeps sum w < 1) by L-BFGS with finite-difference
gradients, from decays spread log-uniformly between 1/2 and 1 - 2/n.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, signal, special

from veilfl.errors import ConfigurationError, StorageError
from veilfl.privacy.banded_toeplitz import ErrorObjective
from veilfl.privacy.mf_stream import StreamState
from veilfl.privacy.min_separation import toeplitz_minsep_sensitivity

__all__ = ["BltNoiseStream", "BltStrategy", "optimize_blt"]

FloatArray = npt.NDArray[np.float64]


def _impulse(rounds: int) -> FloatArray:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigurationError(f"A strategy needs at least one round; got {rounds!r}.")
    impulse = np.zeros(rounds)
    impulse[0] = 1.0
    return impulse


@dataclass(frozen=True)
class BltStrategy:
    """c_0 = 1, c_i = sum_j weights[j] · decays[j]^(i-1) (module docstring).

    Attributes:
        weights: w_j >= 0, summing to at most 1.
        decays: theta_j in [0, 1), one per weight.

    Raises:
        ConfigurationError: for lengths that differ, or weights or decays out of range.
    """

    weights: tuple[float, ...]
    decays: tuple[float, ...]

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        theta = np.asarray(self.decays, dtype=np.float64)
        if (
            w.shape != theta.shape
            or w.ndim != 1
            or not np.all(np.isfinite(w))
            or np.any(w < 0)
            or float(np.sum(w)) > 1 + 1e-12
            or not np.all((theta >= 0) & (theta < 1))
        ):
            raise ConfigurationError(
                "A BLT strategy needs one decay in [0, 1) per weight, weights >= 0 and "
                "their sum at most 1 (non-increasing coefficients)."
            )

    @property
    def buffers(self) -> int:
        """k, the number of buffers."""
        return len(self.weights)

    def _polynomials(self) -> tuple[FloatArray, FloatArray]:
        """P and Q, coefficients in increasing powers of x, with c(x) = P / Q."""
        denominator = np.array([1.0])
        for theta in self.decays:
            denominator = np.convolve(denominator, [1.0, -theta])
        numerator = np.concatenate([denominator, [0.0]])
        for j, weight in enumerate(self.weights):
            others = np.array([1.0])
            for other, theta in enumerate(self.decays):
                if other != j:
                    others = np.convolve(others, [1.0, -theta])
            numerator[1 : 1 + others.size] += weight * others
        return numerator, denominator

    def coefficients(self, rounds: int) -> FloatArray:
        """c_0 .. c_(n-1).

        Raises:
            ConfigurationError: for rounds < 1.
        """
        numerator, denominator = self._polynomials()
        return np.asarray(signal.lfilter(numerator, denominator, _impulse(rounds)), np.float64)

    def inverse_coefficients(self, rounds: int) -> FloatArray:
        """The first column of C^-1 over n rounds (the series Q / P).

        Raises:
            ConfigurationError: for rounds < 1.
        """
        numerator, denominator = self._polynomials()
        with np.errstate(over="ignore", invalid="ignore"):
            inverse = signal.lfilter(denominator, numerator, _impulse(rounds))
        return np.asarray(inverse, np.float64)

    def sensitivity(self, *, rounds: int, max_participations: int, min_separation: int) -> float:
        """The (K, b) min-separation sensitivity over n rounds, in units of the clip.

        Raises:
            ConfigurationError: for invalid rounds or participation limits.
        """
        return toeplitz_minsep_sensitivity(
            self.coefficients(rounds),
            rounds=rounds,
            max_participations=max_participations,
            min_separation=min_separation,
        )

    def prefix_squared_errors(self, rounds: int) -> FloatArray:
        """Per round: the squared norm of row t of A C^-1 (noise variance per unit of
        per-release variance).

        Raises:
            ConfigurationError: for rounds < 1.
        """
        return np.cumsum(np.cumsum(self.inverse_coefficients(rounds)) ** 2)


class BltNoiseStream:
    """out_t = (C^-1 y)_t, one vector at a time, with k buffers (module docstring).

    Fed fresh Gaussian noise z_t it yields the correlated noise the coordinator adds
    to round t; fed releases C x + z it decodes them.

    Args:
        strategy: The BLT strategy.
        length: d, the coordinates per vector.
        state: Where a previous stream stopped (a restart), or None.

    Raises:
        ConfigurationError: for length < 1.
        StorageError: for a state of another strategy or length.
    """

    def __init__(
        self, *, strategy: BltStrategy, length: int, state: StreamState | None = None
    ) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigurationError(f"A stream needs vectors of length >= 1; got {length!r}.")
        self._strategy = strategy
        self._weights = np.asarray(strategy.weights, dtype=np.float64)
        self._decays = np.asarray(strategy.decays, dtype=np.float64)
        self._length = length
        self._steps = 0
        self._buffers = np.zeros((strategy.buffers, length))
        if state is not None:
            if (
                state.coefficients != self._parameters()
                or state.steps < 0
                or state.window.shape != self._buffers.shape
                or state.window.dtype != np.float64
            ):
                raise StorageError(
                    "The stored BLT state does not match the strategy or the vector "
                    "length; it belongs to another run."
                )
            self._steps = state.steps
            self._buffers = np.array(state.window, dtype=np.float64)

    def __repr__(self) -> str:
        return f"BltNoiseStream(buffers={self._strategy.buffers}, steps={self._steps})"

    def _parameters(self) -> tuple[float, ...]:
        return (*self._strategy.weights, *self._strategy.decays)

    @property
    def steps(self) -> int:
        """Vectors processed so far."""
        return self._steps

    def correlate(self, fresh: npt.ArrayLike) -> FloatArray:
        """The next output from the next input.

        Raises:
            ConfigurationError: for a vector of the wrong shape or non-finite values.
        """
        current = np.asarray(fresh, dtype=np.float64)
        if current.shape != (self._length,) or not np.all(np.isfinite(current)):
            raise ConfigurationError(f"The stream takes {self._length} finite values per step.")
        out: FloatArray = current - self._weights @ self._buffers
        self._buffers = self._decays[:, np.newaxis] * self._buffers + out
        self._steps += 1
        return out

    def state(self) -> StreamState:
        """The stream's whole state: (weights, decays) and the k buffers."""
        return StreamState(
            coefficients=self._parameters(), steps=self._steps, window=self._buffers.copy()
        )

    @classmethod
    def from_state(cls, state: StreamState) -> BltNoiseStream:
        """Resume the stream that :meth:`state` described.

        Raises:
            StorageError: for an inconsistent state.
        """
        half, odd = divmod(len(state.coefficients), 2)
        if odd or state.window.ndim != 2:
            raise StorageError("The stored stream state is not a BLT stream's.")
        try:
            strategy = BltStrategy(state.coefficients[:half], state.coefficients[half:])
        except ConfigurationError:
            raise StorageError("The stored stream state is not a BLT stream's.") from None
        return cls(strategy=strategy, length=state.window.shape[1], state=state)


def _strategy_of(parameters: FloatArray, buffers: int) -> BltStrategy:
    decays = special.expit(parameters[:buffers])
    weights = special.expit(parameters[-1]) * special.softmax(parameters[buffers:-1])
    return BltStrategy(
        tuple(float(w) for w in weights), tuple(float(min(t, 1 - 1e-12)) for t in decays)
    )


def _loss(
    parameters: FloatArray,
    buffers: int,
    rounds: int,
    most: int,
    separation: int,
    objective: ErrorObjective,
) -> float:
    strategy = _strategy_of(parameters, buffers)
    with np.errstate(over="ignore", invalid="ignore"):
        errors = strategy.prefix_squared_errors(rounds)
    error = float(np.mean(errors) if objective == "mean" else errors[-1])
    if not math.isfinite(error):
        return 1e300
    sensitivity = strategy.sensitivity(
        rounds=rounds, max_participations=most, min_separation=separation
    )
    return math.log(sensitivity**2 * error)


@functools.lru_cache(maxsize=64)
def _optimize(
    rounds: int, buffers: int, most: int, separation: int, objective: ErrorObjective
) -> BltStrategy:
    decays = 1 - np.geomspace(0.5, min(0.5, 2.0 / rounds), buffers)
    start = np.concatenate([special.logit(decays), np.zeros(buffers), [0.0]])
    args = (buffers, rounds, most, separation, objective)
    result: Any = optimize.minimize(
        _loss, start, args=args, method="L-BFGS-B", options={"maxiter": 300}
    )
    best = result.x if result.fun <= _loss(start, *args) else start
    return _strategy_of(np.asarray(best, dtype=np.float64), buffers)


def optimize_blt(
    *,
    rounds: int,
    buffers: int,
    max_participations: int,
    min_separation: int,
    objective: ErrorObjective = "mean",
) -> BltStrategy:
    """The BLT strategy with ``buffers`` buffers that minimises sens^2 · error for the
    prefix sums over n rounds under (K, b) min-separation (module docstring).

    Cached by its arguments: a run optimises its strategy once.

    Raises:
        ConfigurationError: for rounds, buffers, K or b below 1, or an unknown objective.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigurationError(f"A strategy needs at least one round; got {rounds!r}.")
    if buffers < 1 or max_participations < 1 or min_separation < 1:
        raise ConfigurationError(
            "A BLT strategy needs at least one buffer, one participation and a separation "
            f"of at least 1; got {buffers}, {max_participations} and {min_separation}."
        )
    if objective not in ("mean", "max"):
        raise ConfigurationError(f"Unknown objective {objective!r}; use 'mean' or 'max'.")
    return _optimize(rounds, buffers, max_participations, min_separation, objective)
