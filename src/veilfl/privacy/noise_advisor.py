"""Say, before training, how loud each round's DP noise is, and which cohort would fix it.

:mod:`veilfl.privacy.utility` calibrates the noise-to-signal ratio r = z sqrt(d) / n
for independent noise drawn afresh every round (DP-FedAvg), and warns above
:data:`~veilfl.privacy.utility.DROWNING_RATIO`. A mechanism with correlated noise
(DP-FTRL's tree, a matrix factorisation) adds noise whose size per release says little:
what the model accumulates is the prefix sum of the decoded rounds, and its noise is
what matters. :func:`prefix_noise_mean_square` measures it for any
:class:`~veilfl.privacy.mechanisms.schedule.ReleaseSchedule`, and
:meth:`~veilfl.privacy.mechanisms.base.PrivacyMechanism.equivalent_noise_multiplier`
turns it into z_eq, the multiplier of independent noise with the same mean squared
prefix-sum error, so one threshold holds for every mechanism.

:func:`advise_cohort` then gives the ratio at the run's cohort and, when it is over the
threshold, the smallest cohort (clients per round, the population fixed) under it, with
the noise multiplier re-derived for the same target epsilon at the new sampling rate
(or, for a mechanism that limits participation, the new K and b).

This module is pure: no I/O, no randomness.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError
from veilfl.privacy.utility import DROWNING_RATIO, noise_to_signal

if TYPE_CHECKING:
    from veilfl.privacy.dp_config import DpConfig
    from veilfl.privacy.mechanisms.base import PrivacyMechanism
    from veilfl.privacy.mechanisms.schedule import ReleaseSchedule
    from veilfl.privacy.tree import TreeNode

__all__ = [
    "NoiseAdvice",
    "advise_cohort",
    "cohort_noise_to_signal",
    "equivalent_multiplier",
    "prefix_noise_mean_square",
]


def prefix_noise_mean_square(schedule: ReleaseSchedule, *, rounds: int) -> float:
    """The mean over t = 1..rounds of the variance, per coordinate, of the noise in the
    prefix sum of the first t decoded rounds, in units of one noise block's variance.

    Release t carries ``(sum_j c_{t,j} x_{t-j}) / s`` plus its added blocks minus its
    removed ones; the coordinator decodes ``xhat_t = (s r_t - sum_{j>=1} c_{t,j}
    xhat_{t-j}) / c_{t,0}``. Each block is drawn once, so the noise of a prefix sum is
    a linear combination of blocks and its variance the sum of the squared weights.
    Fresh noise gives t at step t, the tree |cover(t)|.

    Raises:
        ConfigurationError: for fewer than one round.
    """
    if rounds < 1:
        raise ConfigurationError("The noise advisor needs at least one round.")
    if schedule.window == 1:
        return _window_one_mean_square(schedule, rounds=rounds)
    index: dict[TreeNode, int] = {}
    earlier: deque[npt.NDArray[np.float64]] = deque(maxlen=max(schedule.window - 1, 1))
    prefix: npt.NDArray[np.float64] = np.zeros(0)
    total = 0.0
    for step in range(1, rounds + 1):
        terms = schedule.terms(step)
        for node in (*terms.added, *terms.removed):
            index.setdefault(node, len(index))
        blocks = np.zeros(len(index))
        for node in terms.added:
            blocks[index[node]] += 1.0
        for node in terms.removed:
            blocks[index[node]] -= 1.0
        decoded = terms.scale * blocks
        for coefficient, past in zip(terms.coefficients[1:], earlier, strict=False):
            decoded[: past.size] -= coefficient * past
        decoded /= terms.coefficients[0]
        prefix = np.concatenate([prefix, np.zeros(decoded.size - prefix.size)]) + decoded
        total += float(prefix @ prefix)
        if schedule.window > 1:
            earlier.appendleft(decoded)
    return total / rounds


def _window_one_mean_square(schedule: ReleaseSchedule, *, rounds: int) -> float:
    """:func:`prefix_noise_mean_square` for a window-1 schedule, in O(blocks touched):
    each decoded round is its release's blocks times ``scale / c_0``, so the prefix's
    weights change only where a release adds or removes a block."""
    prefix: dict[TreeNode, float] = {}
    square = 0.0
    total = 0.0
    for step in range(1, rounds + 1):
        terms = schedule.terms(step)
        weight = terms.scale / terms.coefficients[0]
        for node, sign in (*((n, 1.0) for n in terms.added), *((n, -1.0) for n in terms.removed)):
            before = prefix.get(node, 0.0)
            after = before + sign * weight
            square += after * after - before * before
            prefix[node] = after
        total += square
    return total / rounds


def _cohort_config(
    mechanism: PrivacyMechanism,
    config: DpConfig,
    *,
    population: int,
    clients_per_round: int,
    rounds: int,
    secret_sampling: bool,
) -> DpConfig:
    """``config`` as the command line would derive it for ``clients_per_round``."""
    sample_rate = min(1.0, clients_per_round / population)
    k, b = mechanism.participation_defaults(
        max_participations=None, min_separation=None, rounds=rounds, sample_rate=sample_rate
    )
    derived = (
        config
        if mechanism.samples_clients
        else replace(config, max_participations=k, min_separation=b)
    )
    if config.target_epsilon is None:
        return derived
    z = mechanism.noise_multiplier_for(
        derived,
        target_epsilon=config.target_epsilon,
        rounds=rounds,
        sample_rate=sample_rate if secret_sampling else 1.0,
    )
    return replace(derived, noise_multiplier=z)


def cohort_noise_to_signal(
    mechanism: PrivacyMechanism,
    config: DpConfig,
    *,
    model_size: int,
    population: int,
    clients_per_round: int,
    rounds: int,
    secret_sampling: bool,
) -> float:
    """The noise-to-signal ratio z_eq sqrt(d) / n' of the run re-planned for
    ``clients_per_round`` = n' clients a round out of the same ``population``.

    The settings are re-derived as the command line would for ``--clients-per-round
    n'`` alone: the sampling rate n'/N; for a mechanism that limits participation, K
    and b from round-robin selection
    (:meth:`~veilfl.privacy.mechanisms.base.PrivacyMechanism.participation_defaults`);
    under a target epsilon, z for that epsilon (otherwise ``config``'s z is kept).

    Args:
        mechanism: The run's mechanism.
        config: The run's DP settings.
        model_size: d.
        population: N, the clients there are.
        clients_per_round: n', the cohort to plan for.
        rounds: The releases the run plans.
        secret_sampling: Whether the ledger charges q = n'/N (else 1).
    """
    planned = _cohort_config(
        mechanism,
        config,
        population=population,
        clients_per_round=clients_per_round,
        rounds=rounds,
        secret_sampling=secret_sampling,
    )
    z = mechanism.equivalent_noise_multiplier(
        planned, rounds=rounds, expected_clients=clients_per_round
    )
    return noise_to_signal(
        model_size=model_size, clients_per_round=clients_per_round, noise_multiplier=z
    )


@dataclass(frozen=True)
class NoiseAdvice:
    """The noise advisor's verdict, before training.

    Attributes:
        mechanism: How messages name the mechanism.
        clients_per_round: n, the run's cohort.
        ratio: z_eq sqrt(d) / n at that cohort.
        limit: The threshold (:data:`~veilfl.privacy.utility.DROWNING_RATIO`).
        suggested_clients: The smallest cohort found under the limit, or None (under
            the limit already, or no cohort up to the population reaches it).
        suggested_ratio: The ratio at ``suggested_clients``, or None.
    """

    mechanism: str
    clients_per_round: int
    ratio: float
    limit: float
    suggested_clients: int | None = None
    suggested_ratio: float | None = None

    @property
    def over(self) -> bool:
        """Whether the ratio at the run's cohort is above the limit."""
        return self.ratio > self.limit

    def summary(self) -> str:
        """One line for the console (``noise advisor: ...``)."""
        head = (
            f"noise advisor: {self.mechanism}, {self.clients_per_round:,} clients a round: "
            f"noise-to-signal {self.ratio:.1f} per round"
        )
        if not self.over:
            return f"{head} (under {self.limit:g}: fine)"
        head = f"{head} (over {self.limit:g}: the noise will drown the updates)"
        if self.suggested_clients is None or self.suggested_ratio is None:
            return (
                f"{head}; no cohort up to the whole population brings it under {self.limit:g}: "
                "raise the target epsilon or train a smaller model"
            )
        return (
            f"{head}; {self.suggested_clients:,} clients a round would bring it to "
            f"{self.suggested_ratio:.1f}"
        )


def advise_cohort(
    mechanism: PrivacyMechanism,
    config: DpConfig,
    *,
    model_size: int,
    population: int,
    clients_per_round: int,
    rounds: int,
    secret_sampling: bool,
    limit: float = DROWNING_RATIO,
) -> NoiseAdvice:
    """The ratio at the run's cohort and, above ``limit``, the smallest cohort under it.

    The ratio at the run's own cohort uses ``config`` as it is. Larger cohorts are
    re-planned by :func:`cohort_noise_to_signal`: the search doubles the cohort until
    the ratio is under ``limit`` (at most the population), then bisects, so the cohort
    it returns is under the limit and the one below it is not (the ratio falls as the
    cohort grows, for every mechanism here). A cohort that cannot be planned (no z
    reaches the target epsilon there) counts as over the limit.

    Args:
        mechanism: The run's mechanism.
        config: The run's DP settings (z as derived for the run).
        model_size: d.
        population: N.
        clients_per_round: n, the expected cohort.
        rounds: The releases the run plans.
        secret_sampling: Whether the ledger charges q = n/N (else 1).
        limit: The threshold.

    Raises:
        ConfigurationError: for a cohort above the population or a non-positive one.
    """
    if not 1 <= clients_per_round <= population:
        raise ConfigurationError(
            f"The noise advisor needs 1 <= clients per round <= population; got "
            f"{clients_per_round} of {population}."
        )
    z = mechanism.equivalent_noise_multiplier(
        config, rounds=rounds, expected_clients=clients_per_round
    )
    ratio = noise_to_signal(
        model_size=model_size, clients_per_round=clients_per_round, noise_multiplier=z
    )
    advice = NoiseAdvice(
        mechanism=mechanism.title,
        clients_per_round=clients_per_round,
        ratio=ratio,
        limit=limit,
    )
    if not advice.over:
        return advice

    def ratio_at(cohort: int) -> float:
        try:
            return cohort_noise_to_signal(
                mechanism,
                config,
                model_size=model_size,
                population=population,
                clients_per_round=cohort,
                rounds=rounds,
                secret_sampling=secret_sampling,
            )
        except ConfigurationError:  # no z reaches the epsilon there: no fix either
            return math.inf

    over, under = clients_per_round, None
    candidate = clients_per_round
    while candidate < population:
        candidate = min(population, 2 * candidate)
        found = ratio_at(candidate)
        if found <= limit:
            under = (candidate, found)
            break
        over = candidate
    if under is None:
        return advice
    while under[0] - over > 1:
        middle = (over + under[0]) // 2
        found = ratio_at(middle)
        if found <= limit:
            under = (middle, found)
        else:
            over = middle
    return replace(advice, suggested_clients=under[0], suggested_ratio=under[1])


def _mean_step(rounds: int) -> float:
    """mean_t t over 1..rounds: the prefix variance of unit fresh noise."""
    return (rounds + 1) / 2


def equivalent_multiplier(block_stddev: float, schedule: ReleaseSchedule, *, rounds: int) -> float:
    """z_eq for blocks of standard deviation ``block_stddev`` (in units of C) released
    by ``schedule``: ``block_stddev · sqrt(mean_t Var P_t / mean_t t)``."""
    return block_stddev * math.sqrt(
        prefix_noise_mean_square(schedule, rounds=rounds) / _mean_step(rounds)
    )
