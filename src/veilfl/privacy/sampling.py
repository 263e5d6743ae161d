"""Client sampling the accountant can stand behind: Poisson, from a CSPRNG.

The sampled Gaussian analysis (Mironov, Talwar and Zhang 2019) that gives
amplification by sampling assumes *Poisson* sampling: every client takes part
independently with probability q, so a round's size varies. It also assumes that
the observer does not know the sample, so the coins must come from a
cryptographically secure stream (:class:`~veilfl.crypto.csprng.CsprngStream`), not
from a seeded ``random.Random`` that anyone can replay. The coordinator knows the
sample whatever generator it uses: against it there is no amplification (see
:mod:`veilfl.privacy.report`).

A release is withheld when too few clients report (fewer than the noise
contributions it needs, or fewer than the round minimum). Under add/remove adjacency
that decision can depend on whether the protected client is in the population, which
the sampled Gaussian analysis does not cover; :func:`withheld_release_probability`
bounds the probability that it does, and the report adds it to delta.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ConfigurationError

__all__ = ["PoissonSampler", "poisson_sample", "withheld_release_probability"]

T = TypeVar("T")


def poisson_sample(population: Sequence[T], *, rate: float, rng: CsprngStream) -> tuple[T, ...]:
    """Each member of ``population`` independently with probability ``rate``.

    Member i is kept when the i-th uniform of ``rng`` is below ``rate``; the uniforms
    are multiples of 2**-53, so the inclusion probability is ``rate`` rounded up to
    that grid (an error below 1.2e-16). The sample's size is binomial and may be 0.

    Args:
        population: The clients to sample from, in any fixed order.
        rate: q in (0, 1].
        rng: The secret coins; a stream keyed from ``os.urandom`` in production.

    Returns:
        The sampled members, in population order.

    Raises:
        ConfigurationError: if ``rate`` is not in (0, 1].
    """
    if not 0 < rate <= 1:
        raise ConfigurationError(f"The Poisson sampling rate must be in (0, 1]; got {rate!r}.")
    if not population:
        return ()
    coins = rng.uniform_unit(len(population))
    return tuple(member for member, coin in zip(population, coins, strict=True) if coin < rate)


def withheld_release_probability(
    *,
    population: int,
    sample_rate: float,
    min_contributions: int,
    attempts: int,
    max_dropout: float = 0.0,
) -> float:
    """A bound on the chance that one client's presence decides whether a round is
    withheld, over ``attempts`` sampling attempts.

    Derivation. Fix the protected client x and the other ``population - 1`` clients.
    In one attempt let N_o be the number of *other* clients that are sampled and
    report, and B = 1 if x is sampled and reports. The round is released iff
    N_o + B >= m (m = ``min_contributions``). Without x it is released iff N_o >= m.
    The two decisions differ only on the event E = {N_o = m - 1 and B = 1}. Let M~
    be the mechanism that decides from N_o alone (release iff N_o >= m): its
    decision does not depend on x, so M~ is exactly the sampled Gaussian mechanism
    the accountant charges, (epsilon, delta)-DP. The real mechanism M equals M~ on
    dataset D (without x) and agrees with M~ on D' (with x) outside the union W of
    the events E over all attempts. Hence for every set S of transcripts
    P[M(D') in S] <= P[M~(D') in S] + P[W] <= e^eps P[M(D) in S] + delta + P[W],
    and P[M(D) in S] <= e^eps (P[M(D') in S] + P[W]) + delta, so M is
    (epsilon, delta + e^eps P[W])-DP. Since x's coins are independent of the
    others', P[E] <= q P[N_o = m - 1] <= q P[N_o <= m - 1], and N_o stochastically
    dominates Binomial(population - 1, q (1 - max_dropout)) when each sampled client
    reports independently with probability at least 1 - max_dropout, so
    P[N_o <= m - 1] <= P[Binomial(population - 1, q (1 - max_dropout)) <= m - 1]. A
    union bound over attempts gives the value returned:
    ``attempts * q * BinomialCDF(m - 1; population - 1, q (1 - max_dropout))``.

    The bound is negligible when the expected number of reports is well above m
    (1,000 clients, q = 0.1, m = 20: about 1e-25 per attempt) and large when it is
    near m: choose the minimum well below the expected sample.

    Args:
        population: Clients that can be sampled (including the protected one).
        sample_rate: q.
        min_contributions: m, the reports a release needs.
        attempts: Sampling attempts made so far, released and withheld alike (an
            upper bound on them for a whole run).
        max_dropout: The largest chance that a sampled client fails to report,
            assumed independent across clients and of their data.

    Returns:
        P[W] bounded as above, at most 1; the report adds ``e^epsilon`` times it to
        delta.

    Raises:
        ConfigurationError: for out-of-range arguments.
    """
    if population < 1 or attempts < 0 or min_contributions < 1:
        raise ConfigurationError(
            "population and min_contributions must be at least 1 and attempts at least 0."
        )
    if not 0 < sample_rate <= 1:
        raise ConfigurationError(f"The sampling rate must be in (0, 1]; got {sample_rate!r}.")
    if not 0 <= max_dropout < 1:
        raise ConfigurationError(f"max_dropout must be in [0, 1); got {max_dropout!r}.")
    if attempts == 0:
        return 0.0
    reporting = sample_rate * (1 - max_dropout)
    log_tail = _log_binomial_cdf(min_contributions - 1, trials=population - 1, p=reporting)
    log_bound = math.log(attempts) + math.log(sample_rate) + log_tail
    return math.exp(min(log_bound, 0.0))


class PoissonSampler:
    """The rounds' client sampling under DP: Poisson, secret coins, and a record of every
    attempt for the withheld-release term of delta.

    Each :meth:`draw` is one sampling attempt. A sample smaller than ``minimum`` (the
    reports a release needs) is withheld: :meth:`draw` returns None and the caller
    samples again. Every attempt, withheld or not, adds its bound from
    :func:`withheld_release_probability` (over the clients it sampled from) to
    :attr:`withheld_probability`, the union bound over the run's attempts. Attempts and
    that bound are part of the run's privacy state: a restarted coordinator passes
    them back.

    Args:
        rate: q, each client's chance of being sampled.
        minimum: The reports a release needs.
        rng: The secret coins (default: keyed from ``os.urandom``).
        attempts: Attempts made before (a resumed run).
        withheld_probability: Their bound so far (a resumed run).

    Raises:
        ConfigurationError: for a rate outside (0, 1], a minimum below 1, or negative
            counts.
    """

    def __init__(
        self,
        *,
        rate: float,
        minimum: int,
        rng: CsprngStream | None = None,
        attempts: int = 0,
        withheld_probability: float = 0.0,
    ) -> None:
        if not 0 < rate <= 1:
            raise ConfigurationError(f"The Poisson sampling rate must be in (0, 1]; got {rate!r}.")
        if minimum < 1 or attempts < 0 or not 0 <= withheld_probability <= 1:
            raise ConfigurationError(
                "A sampler needs a minimum of at least 1, attempts of at least 0 and a "
                "probability in [0, 1]."
            )
        self._rate = rate
        self._minimum = minimum
        self._rng = rng or CsprngStream()
        self._attempts = attempts
        self._withheld = withheld_probability

    @property
    def rate(self) -> float:
        """q."""
        return self._rate

    @property
    def minimum(self) -> int:
        """The reports a release needs."""
        return self._minimum

    @property
    def attempts(self) -> int:
        """Sampling attempts so far, withheld and released alike."""
        return self._attempts

    @property
    def withheld_probability(self) -> float:
        """The bound on the chance that one client decided whether some attempt so far
        was withheld (summed over attempts, at most 1)."""
        return self._withheld

    def draw(self, population: Sequence[T]) -> tuple[T, ...] | None:
        """One attempt: a Poisson sample of ``population``, or None if it is smaller
        than the minimum (withheld; sample again).

        Args:
            population: The clients that can take part now, in a fixed order.
        """
        sample = poisson_sample(population, rate=self._rate, rng=self._rng)
        self._attempts += 1
        if population:
            bound = withheld_release_probability(
                population=len(population),
                sample_rate=self._rate,
                min_contributions=self._minimum,
                attempts=1,
            )
            self._withheld = min(self._withheld + bound, 1.0)
        return sample if len(sample) >= self._minimum else None


def _log_binomial_cdf(k: int, *, trials: int, p: float) -> float:
    """log P[Binomial(trials, p) <= k], summed in log space (k is small here)."""
    if k >= trials or p == 0:
        return 0.0
    if p == 1:
        return -math.inf
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(trials + 1)
        - math.lgamma(i + 1)
        - math.lgamma(trials - i + 1)
        + i * log_p
        + (trials - i) * log_q
        for i in range(k + 1)
    ]
    top = max(terms)
    return min(top + math.log(sum(math.exp(t - top) for t in terms)), 0.0)
