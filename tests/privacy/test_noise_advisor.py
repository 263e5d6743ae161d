"""The noise advisor: equivalent noise multipliers against explicit computations, and
the cohort it suggests against the ratio at its neighbours."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.mechanisms import mechanism_named
from veilfl.privacy.mechanisms.base import DealtNoisePlan, PrivacyMechanism
from veilfl.privacy.mechanisms.schedule import (
    FreshNoiseSchedule,
    ReleaseSchedule,
    ToeplitzReleaseSchedule,
    TreeNoiseSchedule,
)
from veilfl.privacy.mf_error import toeplitz_prefix_sum_rmse
from veilfl.privacy.noise_advisor import (
    advise_cohort,
    cohort_noise_to_signal,
    prefix_noise_mean_square,
)
from veilfl.privacy.utility import DROWNING_RATIO, noise_to_signal


def fedavg_config(*, z: float = 1.0, target: float | None = None) -> DpConfig:
    return DpConfig(
        placement="central", noise_multiplier=z, clip_norm=1.0, min_clients=1, target_epsilon=target
    )


def ftrl_config(*, z: float = 1.0, k: int = 1, b: int = 1, target: float | None = None) -> DpConfig:
    return DpConfig(
        placement="central",
        noise_multiplier=z,
        clip_norm=1.0,
        min_clients=1,
        mechanism="ftrl",
        max_participations=k,
        min_separation=b,
        target_epsilon=target,
    )


def test_fresh_noise_is_its_own_equivalent() -> None:
    config = fedavg_config(z=1.7)
    assert mechanism_named("fedavg").equivalent_noise_multiplier(
        config, rounds=37, expected_clients=10
    ) == pytest.approx(1.7)


@pytest.mark.parametrize("rounds", [1, 5, 16, 100])
def test_tree_equivalent_is_from_the_cover_sizes(rounds: int) -> None:
    # Each prefix sum carries popcount(t) blocks (the dyadic cover of 1..t).
    covers = [bin(t).count("1") for t in range(1, rounds + 1)]
    expected = 0.8 * math.sqrt(np.mean(covers) / np.mean(range(1, rounds + 1)))
    config = ftrl_config(z=0.8)
    assert mechanism_named("ftrl").equivalent_noise_multiplier(
        config, rounds=rounds, expected_clients=10
    ) == pytest.approx(expected)


def test_prefix_error_of_fresh_and_tree_schedules() -> None:
    assert prefix_noise_mean_square(FreshNoiseSchedule(), rounds=9) == pytest.approx(5.0)
    assert prefix_noise_mean_square(TreeNoiseSchedule(), rounds=4) == pytest.approx(
        (1 + 1 + 2 + 1) / 4
    )


@pytest.mark.parametrize(
    ("coefficients", "scale", "rounds"),
    [((1,), 1, 6), ((4, 2, 1), 4, 7), ((1000, -300, 50, 7), 1000, 12)],
)
def test_toeplitz_prefix_error_matches_the_explicit_matrix(
    coefficients: tuple[int, ...], scale: int, rounds: int
) -> None:
    # Decoded noise = scale · C_int^-1 z; the prefix sums add A (lower ones) in front.
    strategy = np.zeros((rounds, rounds))
    for t in range(rounds):
        for j, c in enumerate(coefficients[: t + 1]):
            strategy[t, t - j] = c
    prefix_noise = np.tril(np.ones((rounds, rounds))) @ (scale * np.linalg.inv(strategy))
    expected = float(np.mean(np.sum(prefix_noise**2, axis=1)))
    schedule = ToeplitzReleaseSchedule(coefficients=coefficients, scale=scale)
    assert prefix_noise_mean_square(schedule, rounds=rounds) == pytest.approx(expected)


class _CentralToeplitz(PrivacyMechanism):
    """A central-only matrix mechanism: its aggregators cannot deal its noise."""

    name = "test-toeplitz"
    title = "test Toeplitz"
    summary = "a throwaway Toeplitz mechanism"
    samples_clients = False

    def release_schedule(self, config: DpConfig, *, rounds: int) -> ReleaseSchedule:
        return ToeplitzReleaseSchedule(coefficients=(8, 4, 2), scale=8)

    def dealt_noise(
        self, config: DpConfig, *, per_update_bound: float, expected_clients: float
    ) -> DealtNoisePlan:
        raise ConfigurationError("central noise only")

    def sensitivity(self, config: DpConfig, *, rounds: int) -> float:
        return 1.0

    def planned_epsilon(self, config: DpConfig, *, rounds: int, sample_rate: float) -> float:
        return 1.0


def test_a_central_matrix_mechanism_is_from_its_decoded_prefix_errors() -> None:
    rounds = 9
    strategy = sum(c * np.eye(rounds, k=-j) for j, c in enumerate((1.0, 0.5, 0.25)))
    prefix_noise = np.tril(np.ones((rounds, rounds))) @ np.linalg.inv(strategy)
    mean_square = float(np.mean(np.sum(prefix_noise**2, axis=1)))
    expected = 1.5 * math.sqrt(mean_square / np.mean(range(1, rounds + 1)))
    config = ftrl_config(z=1.5)
    assert _CentralToeplitz().equivalent_noise_multiplier(
        config, rounds=rounds, expected_clients=10
    ) == pytest.approx(expected)


def test_prefix_error_needs_a_round() -> None:
    with pytest.raises(ConfigurationError):
        prefix_noise_mean_square(FreshNoiseSchedule(), rounds=0)


def test_a_setting_under_the_threshold_gets_no_suggestion() -> None:
    config = fedavg_config(z=1.0)
    advice = advise_cohort(
        mechanism_named("fedavg"),
        config,
        model_size=100,
        population=1000,
        clients_per_round=10,
        rounds=5,
        secret_sampling=True,
    )
    assert advice.ratio == pytest.approx(
        noise_to_signal(model_size=100, clients_per_round=10, noise_multiplier=1.0)
    )
    assert not advice.over
    assert advice.suggested_clients is None
    assert "fine" in advice.summary()


def planned(name: str, *, cohort: int, population: int, rounds: int) -> DpConfig:
    """The settings the command line derives for ``cohort`` under target epsilon 4."""
    mechanism = mechanism_named(name)
    rate = cohort / population
    k, b = mechanism.participation_defaults(
        max_participations=None, min_separation=None, rounds=rounds, sample_rate=rate
    )
    base = fedavg_config(target=4.0) if name == "fedavg" else ftrl_config(k=k, b=b, target=4.0)
    z = mechanism.noise_multiplier_for(base, target_epsilon=4.0, rounds=rounds, sample_rate=rate)
    return replace(base, noise_multiplier=z)


@pytest.mark.parametrize("name", ["fedavg", "ftrl"])
def test_the_suggested_cohort_is_the_smallest_under_the_threshold(name: str) -> None:
    mechanism = mechanism_named(name)
    config = planned(name, cohort=10, population=200, rounds=10)
    plan = {"model_size": 10_000, "population": 200, "rounds": 10, "secret_sampling": True}
    advice = advise_cohort(mechanism, config, clients_per_round=10, **plan)  # type: ignore[arg-type]
    assert advice.over
    assert advice.suggested_clients is not None
    assert advice.suggested_ratio is not None
    assert advice.suggested_ratio <= DROWNING_RATIO
    assert cohort_noise_to_signal(
        mechanism,
        config,
        clients_per_round=advice.suggested_clients,
        **plan,  # type: ignore[arg-type]
    ) == pytest.approx(advice.suggested_ratio)
    below = advice.suggested_clients - 1
    assert below > 10
    assert (
        cohort_noise_to_signal(mechanism, config, clients_per_round=below, **plan)  # type: ignore[arg-type]
        > DROWNING_RATIO
    )
    assert f"{advice.suggested_clients:,} clients a round" in advice.summary()


def test_the_ratio_at_the_run_cohort_is_the_replanned_one() -> None:
    # The run's own settings are what re-planning derives for its cohort.
    config = planned("ftrl", cohort=10, population=200, rounds=10)
    plan = {"model_size": 10_000, "population": 200, "rounds": 10, "secret_sampling": True}
    advice = advise_cohort(mechanism_named("ftrl"), config, clients_per_round=10, **plan)  # type: ignore[arg-type]
    assert advice.ratio == pytest.approx(
        cohort_noise_to_signal(mechanism_named("ftrl"), config, clients_per_round=10, **plan),  # type: ignore[arg-type]
        rel=1e-6,
    )


def test_no_cohort_reaches_the_threshold_says_so() -> None:
    advice = advise_cohort(
        mechanism_named("fedavg"),
        fedavg_config(z=50.0),
        model_size=1_000_000,
        population=20,
        clients_per_round=5,
        rounds=3,
        secret_sampling=True,
    )
    assert advice.over
    assert advice.suggested_clients is None
    assert "no cohort" in advice.summary()


def test_a_cohort_above_the_population_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        advise_cohort(
            mechanism_named("fedavg"),
            fedavg_config(),
            model_size=10,
            population=5,
            clients_per_round=6,
            rounds=3,
            secret_sampling=True,
        )


def test_a_toeplitz_schedule_agrees_with_the_strategy_error_of_its_coefficients() -> None:
    # The fixed-point schedule (scale 2^16) against mf_error's real-valued strategy.
    coefficients = (1.0, -0.4, 0.15, 0.05)
    scale = 2**16
    schedule = ToeplitzReleaseSchedule(
        coefficients=tuple(round(scale * c) for c in coefficients), scale=scale
    )
    rmse = toeplitz_prefix_sum_rmse(coefficients, rounds=40, noise_multiplier=1.0)
    assert prefix_noise_mean_square(schedule, rounds=40) == pytest.approx(rmse**2, rel=1e-4)
