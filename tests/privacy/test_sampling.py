"""Poisson sampling from a CSPRNG, and the bound on withheld-round boundary events."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ConfigurationError
from veilfl.privacy.sampling import PoissonSampler, poisson_sample, withheld_release_probability

ALPHA = 1e-4  # fixed keys below make these tests deterministic


def test_each_client_is_kept_independently_with_probability_q() -> None:
    # Arrange
    population = [f"client-{i}" for i in range(500)]
    q, rounds = 0.1, 400
    rng = CsprngStream(key=bytes(range(32)))
    # Act
    samples = [poisson_sample(population, rate=q, rng=rng) for _ in range(rounds)]
    # Assert: sizes are Binomial(500, q), so they vary round to round ...
    sizes = np.array([len(s) for s in samples])
    assert len(set(sizes.tolist())) > 10
    expected = stats.binom(len(population), q)
    assert abs(sizes.mean() - expected.mean()) < 5 * expected.std() / math.sqrt(rounds)
    assert sizes.var() == pytest.approx(expected.var(), rel=0.25)
    # ... and every client is in about q of the rounds (chi-square over clients).
    counts = np.array([sum(c in set(s) for s in samples) for c in population[:100]])
    assert stats.chisquare(counts, np.full(100, counts.sum() / 100)).pvalue > ALPHA
    # Two rounds' samples are (nearly) independent: overlap about q^2 of the population.
    overlaps = [len(set(a) & set(b)) for a, b in itertools.pairwise(samples)]
    assert np.mean(overlaps) == pytest.approx(len(population) * q * q, rel=0.2)


def test_the_sample_depends_only_on_the_secret_stream() -> None:
    population = list(range(1000))
    first = poisson_sample(population, rate=0.3, rng=CsprngStream(key=bytes(32)))
    again = poisson_sample(population, rate=0.3, rng=CsprngStream(key=bytes(32)))
    other = poisson_sample(population, rate=0.3, rng=CsprngStream(key=bytes(range(32))))
    assert first == again != other
    assert list(first) == sorted(first)  # population order
    assert poisson_sample(population, rate=1.0, rng=CsprngStream()) == tuple(population)
    assert poisson_sample([], rate=0.5, rng=CsprngStream()) == ()


def _simulated_boundary_rate(
    *, population: int, q: float, m: int, dropout: float, trials: int
) -> float:
    """Monte Carlo of the event the bound covers: the others' reports are exactly m - 1
    and the protected client is sampled and reports (test-only generator)."""
    generator = np.random.default_rng(7)
    others = generator.binomial(population - 1, q * (1 - dropout), size=trials)
    protected = generator.random(trials) < q * (1 - dropout)
    return float(np.mean((others == m - 1) & protected))


@pytest.mark.parametrize(
    ("population", "q", "m", "dropout"),
    [(40, 0.25, 8, 0.0), (40, 0.25, 8, 0.3), (200, 0.05, 6, 0.1), (30, 0.5, 15, 0.0)],
)
def test_the_boundary_bound_covers_the_simulated_boundary_event(
    population: int, q: float, m: int, dropout: float
) -> None:
    bound = withheld_release_probability(
        population=population,
        sample_rate=q,
        min_contributions=m,
        attempts=1,
        max_dropout=dropout,
    )
    simulated = _simulated_boundary_rate(
        population=population, q=q, m=m, dropout=dropout, trials=400_000
    )
    assert simulated <= bound + 4 * math.sqrt(max(simulated, 1e-6) / 400_000)
    assert simulated > 0  # the scenarios do hit the boundary


def test_the_bound_matches_its_formula_and_is_tiny_far_from_the_boundary() -> None:
    value = withheld_release_probability(
        population=1000, sample_rate=0.1, min_contributions=20, attempts=30
    )
    assert value == pytest.approx(30 * 0.1 * stats.binom.cdf(19, 999, 0.1), rel=1e-9)
    assert value < 1e-20
    near = withheld_release_probability(
        population=1000, sample_rate=0.1, min_contributions=95, attempts=30
    )
    assert near > 0.1  # a minimum near the expected sample spoils delta


def test_more_dropout_and_more_attempts_only_raise_the_bound() -> None:
    args = {"population": 300, "sample_rate": 0.1, "min_contributions": 20}
    base = withheld_release_probability(**args, attempts=10)  # type: ignore[arg-type]
    assert withheld_release_probability(**args, attempts=20) > base  # type: ignore[arg-type]
    assert (
        withheld_release_probability(**args, attempts=10, max_dropout=0.2) > base  # type: ignore[arg-type]
    )
    assert withheld_release_probability(**args, attempts=0) == 0.0  # type: ignore[arg-type]


def test_invalid_sampling_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        poisson_sample([1, 2], rate=0.0, rng=CsprngStream())
    with pytest.raises(ConfigurationError):
        withheld_release_probability(
            population=10, sample_rate=0.1, min_contributions=2, attempts=1, max_dropout=1.0
        )


def test_the_sampler_withholds_small_samples_and_charges_every_attempt() -> None:
    # Arrange: 20 clients, q = 0.25, a release needs 6: about a third of samples are short.
    population = [f"c{i}" for i in range(20)]
    sampler = PoissonSampler(rate=0.25, minimum=6, rng=CsprngStream(key=bytes(32)))
    replay = CsprngStream(key=bytes(32))  # the same coins, drawn by hand
    # Act
    drawn = [sampler.draw(population) for _ in range(200)]
    # Assert: a draw is the plain Poisson sample, withheld exactly when it is short.
    oracle = [poisson_sample(population, rate=0.25, rng=replay) for _ in range(200)]
    assert drawn == [s if len(s) >= 6 else None for s in oracle]
    assert 10 < drawn.count(None) < 150
    assert len({len(s) for s in drawn if s is not None}) > 3  # sizes vary
    # Every attempt, released or withheld, adds its boundary bound.
    per_attempt = withheld_release_probability(
        population=20, sample_rate=0.25, min_contributions=6, attempts=1
    )
    assert sampler.attempts == 200
    assert sampler.withheld_probability == pytest.approx(min(200 * per_attempt, 1.0))


def test_a_resumed_sampler_continues_its_count_and_bound() -> None:
    population = [f"c{i}" for i in range(1000)]
    first = PoissonSampler(rate=0.1, minimum=20, rng=CsprngStream(key=bytes(32)))
    for _ in range(5):
        first.draw(population)
    resumed = PoissonSampler(
        rate=0.1,
        minimum=20,
        attempts=first.attempts,
        withheld_probability=first.withheld_probability,
    )
    resumed.draw(population)
    per_attempt = withheld_release_probability(
        population=1000, sample_rate=0.1, min_contributions=20, attempts=1
    )
    assert resumed.attempts == 6
    assert resumed.withheld_probability == pytest.approx(6 * per_attempt)
