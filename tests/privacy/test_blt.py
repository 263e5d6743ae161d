"""BLT strategies: the rational generating function against the definition, the
streaming noise against dense algebra, sensitivity against brute force, and the
optimiser against the tree."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from veilfl.errors import ConfigurationError, StorageError
from veilfl.privacy.banded_toeplitz import toeplitz_matrix
from veilfl.privacy.blt import BltNoiseStream, BltStrategy, optimize_blt
from veilfl.privacy.dp_ftrl import dp_ftrl_noise_multiplier_for
from veilfl.privacy.mf_accounting import matrix_mechanism_noise_multiplier_for
from veilfl.privacy.mf_error import prefix_sum_rmse, tree_prefix_sum_rmse
from veilfl.privacy.mf_stream import StreamState

STRATEGY = BltStrategy(weights=(0.3, 0.15, 0.05), decays=(0.5, 0.9, 0.99))


def _worst_column_sum(strategy: np.ndarray, most: int, separation: int) -> float:
    """Brute force over every allowed pattern of ||sum_{i in P} C[:, i]||."""
    rounds = strategy.shape[0]
    best = 0.0
    for k in range(1, most + 1):
        for pattern in itertools.combinations(range(rounds), k):
            if all(b - a >= separation for a, b in itertools.pairwise(pattern)):
                norm = float(np.linalg.norm(strategy[:, list(pattern)].sum(axis=1)))
                best = max(best, norm)
    return best


def test_the_coefficients_are_the_buffers_geometric_sums() -> None:
    rounds = 12
    i = np.arange(1, rounds)
    expected = [1.0] + [
        sum(w * t ** (k - 1) for w, t in zip(STRATEGY.weights, STRATEGY.decays, strict=True))
        for k in i
    ]
    assert np.allclose(STRATEGY.coefficients(rounds), expected)


def test_the_inverse_coefficients_invert_the_strategy() -> None:
    rounds = 20
    product = toeplitz_matrix(STRATEGY.coefficients(rounds), rounds) @ toeplitz_matrix(
        STRATEGY.inverse_coefficients(rounds), rounds
    )
    assert np.allclose(product, np.eye(rounds))


@pytest.mark.parametrize(("rounds", "most", "separation"), [(12, 3, 3), (10, 2, 1), (9, 4, 2)])
def test_the_sensitivity_is_the_worst_pattern(rounds: int, most: int, separation: int) -> None:
    sensitivity = STRATEGY.sensitivity(
        rounds=rounds, max_participations=most, min_separation=separation
    )
    matrix = toeplitz_matrix(STRATEGY.coefficients(rounds), rounds)
    assert sensitivity == pytest.approx(_worst_column_sum(matrix, most, separation))


def test_the_noise_stream_applies_the_inverse_and_resumes_after_a_restart() -> None:
    rounds, length, stop = 15, 4, 6
    fresh = np.random.default_rng(1).normal(size=(rounds, length))  # test data only
    stream = BltNoiseStream(strategy=STRATEGY, length=length)
    straight = np.stack([stream.correlate(row) for row in fresh])

    stream = BltNoiseStream(strategy=STRATEGY, length=length)
    first = [stream.correlate(row) for row in fresh[:stop]]
    stored = StreamState.from_json(json.loads(json.dumps(stream.state().to_json())))
    stream = BltNoiseStream.from_state(stored)
    resumed = np.stack(first + [stream.correlate(row) for row in fresh[stop:]])

    expected = np.linalg.solve(toeplitz_matrix(STRATEGY.coefficients(rounds), rounds), fresh)
    assert np.allclose(straight, expected)
    assert np.array_equal(resumed, straight)
    assert stream.steps == rounds


def test_a_state_of_another_strategy_is_refused() -> None:
    stream = BltNoiseStream(strategy=STRATEGY, length=2)
    other = BltStrategy(weights=(0.3, 0.15, 0.05), decays=(0.5, 0.9, 0.98))
    with pytest.raises(StorageError, match="another run"):
        BltNoiseStream(strategy=other, length=2, state=stream.state())
    with pytest.raises(StorageError, match="BLT"):
        BltNoiseStream.from_state(StreamState((1.0, 0.5, 2.0), 0, np.zeros((1, 2))))


def test_the_optimum_beats_its_start_and_the_tree_at_the_same_epsilon() -> None:
    rounds, most, separation, delta, epsilon = 32, 3, 8, 1e-5, 2.0
    strategy = optimize_blt(
        rounds=rounds, buffers=2, max_participations=most, min_separation=separation
    )
    limits = {"rounds": rounds, "max_participations": most, "min_separation": separation}
    z = matrix_mechanism_noise_multiplier_for(
        target_epsilon=epsilon, sensitivity=strategy.sensitivity(**limits), delta=delta
    )
    matrix = toeplitz_matrix(strategy.coefficients(rounds), rounds)
    blt = prefix_sum_rmse(matrix, noise_multiplier=z)
    tree_z = dp_ftrl_noise_multiplier_for(target_epsilon=epsilon, delta=delta, **limits)

    assert blt < 0.6 * tree_prefix_sum_rmse(rounds=rounds, noise_multiplier=tree_z)
    start = BltStrategy(weights=(0.25, 0.25), decays=(0.5, 1 - 2 / rounds))
    assert strategy.sensitivity(**limits) ** 2 * np.mean(
        strategy.prefix_squared_errors(rounds)
    ) < start.sensitivity(**limits) ** 2 * np.mean(start.prefix_squared_errors(rounds))
    assert (
        optimize_blt(rounds=rounds, buffers=2, max_participations=most, min_separation=separation)
        is strategy
    )


@pytest.mark.parametrize(
    ("weights", "decays"),
    [((0.5,), (0.5, 0.2)), ((-0.1,), (0.5,)), ((0.7, 0.6), (0.5, 0.5)), ((0.5,), (1.0,))],
)
def test_invalid_parameters_are_refused(
    weights: tuple[float, ...], decays: tuple[float, ...]
) -> None:
    with pytest.raises(ConfigurationError, match="BLT"):
        BltStrategy(weights, decays)


def test_invalid_optimiser_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        optimize_blt(rounds=10, buffers=0, max_participations=1, min_separation=1)
