"""The aggregators' minimum cohorts, as their operators signed them, against a run.

Each aggregator's operator sets the fewest distinct admitted clients it ever sums over
(``veilfl aggregator --min-participants``) and the aggregator serves that minimum signed
with its Ed25519 key (:class:`~veilfl.secagg.aggregator_policy.AggregatorPolicy`,
``GET /v1/policy``). Two parties read it:

* a client (:class:`~veilfl.protocol.client_policy.ClientPolicy`), which refuses
  aggregators promising fewer clients than its ``--min-cohort``;
* the coordinator at start-up (:func:`fit_cohort`), which refuses a run whose cohorts
  (clients per round, the expected sample, a FedBuff buffer) are smaller than an
  aggregator's minimum: such a run could never release a round, since the aggregators
  refuse to sum it. An unset ``--min-clients`` takes the largest minimum.

Both verify each policy with :func:`verified_minimums` against the published signing
key (which the aggregator's fingerprint covers), never trusting a coordinator's word.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from veilfl.errors import ConfigurationError
from veilfl.protocol.messages import PublishedAggregator
from veilfl.protocol.run_spec import RunSpec
from veilfl.secagg.aggregator_policy import AggregatorPolicy

__all__ = ["DEFAULT_MIN_PARTICIPANTS", "CohortFit", "fit_cohort", "verified_minimums"]

DEFAULT_MIN_PARTICIPANTS = 2
"""An aggregator's minimum cohort unless its operator sets another (the coordinator's
provisional ``--min-clients`` under secure aggregation, and the simulators' default)."""


def verified_minimums(
    aggregators: Sequence[PublishedAggregator], policies: Iterable[AggregatorPolicy]
) -> dict[int, int]:
    """Each aggregator's signed minimum, checked against what is published about it.

    Args:
        aggregators: The run's published aggregators (index, fingerprint, signing key).
        policies: The policies they served.

    Returns:
        Aggregator index to its minimum number of clients, for every aggregator.

    Raises:
        ConfigurationError: if a policy is missing, names another index or key, or its
            signature is not the published signing key's.
    """
    by_index: dict[int, AggregatorPolicy] = {}
    for served in policies:
        by_index.setdefault(served.index, served)
    minimums: dict[int, int] = {}
    for published in aggregators:
        policy = by_index.get(published.index)
        if policy is None:
            raise ConfigurationError(
                f"Aggregator {published.index} at {published.url} served no signed policy."
            )
        if policy.fingerprint != published.fingerprint:
            raise ConfigurationError(
                f"Aggregator {published.index}'s policy is for key {policy.fingerprint}, not "
                f"its published key {published.fingerprint}."
            )
        if not policy.verified_by(published.signing_bytes()):
            raise ConfigurationError(
                f"Aggregator {published.index}'s policy is not signed by its published key "
                f"{published.fingerprint}."
            )
        if policy.min_participants < 1:
            raise ConfigurationError(
                f"Aggregator {published.index}'s policy names a minimum of "
                f"{policy.min_participants} clients; it must be at least 1."
            )
        minimums[published.index] = policy.min_participants
    return minimums


@dataclass(frozen=True)
class CohortFit:
    """A run's settings once they fit the aggregators' minimums.

    Attributes:
        settings: The settings to run (``--min-clients`` raised where it was unset).
        note: What was raised and why, to log once; None when nothing changed.
    """

    settings: RunSpec
    note: str | None = None


def fit_cohort(
    settings: RunSpec,
    minimums: Mapping[int, int],
    *,
    min_clients_given: bool,
    clients_per_round_given: bool = True,
) -> CohortFit:
    """Fit a run's cohorts to the aggregators' minimums, or refuse it.

    Args:
        settings: The run's settings.
        minimums: Each aggregator's verified minimum (:func:`verified_minimums`).
        min_clients_given: ``--min-clients`` was set by the operator; otherwise it takes
            the largest minimum.
        clients_per_round_given: ``--clients-per-round`` was set; otherwise (without
            ``--fraction``) it follows ``--min-clients``.

    Returns:
        The settings to run, and what was raised.

    Raises:
        ConfigurationError: one line naming the coordinator's flag, the aggregator's
            ``--min-participants`` and both values, when a cohort is below a minimum.
    """
    if not minimums:
        return CohortFit(settings)
    index, largest = max(sorted(minimums.items()), key=lambda item: item[1])
    theirs = f"aggregator {index}'s --min-participants {largest}"

    def refuse(flag: str, value: int, fix: str) -> ConfigurationError:
        return ConfigurationError(
            f"{flag} {value} is below {theirs}; {fix} or lower --min-participants."
        )

    buffer = settings.buffer
    if buffer is not None:
        if buffer.buffer_size < largest:
            raise refuse("--buffer-size", buffer.buffer_size, "raise --buffer-size")
        return CohortFit(settings)
    rounds = settings.rounds
    per_round = rounds.clients_per_round
    follows = per_round is not None and not clients_per_round_given
    if per_round is not None and per_round < largest and not follows:
        raise refuse("--clients-per-round", per_round, "raise --clients-per-round")
    if rounds.fraction is not None:
        population = settings.expected_population
        expected = rounds.sample_size(population)
        if expected < largest:
            raise ConfigurationError(
                f"The expected sample of {expected} clients (--fraction {rounds.fraction:g} "
                f"of --population {population}) is below {theirs}; raise --fraction or "
                "--population, or lower --min-participants."
            )
    if min_clients_given:
        if rounds.min_clients < largest:
            raise refuse("--min-clients", rounds.min_clients, "raise --min-clients")
        return CohortFit(settings)
    if rounds.min_clients == largest and not (follows and per_round != largest):
        return CohortFit(settings)
    fitted = replace(
        rounds,
        min_clients=largest,
        clients_per_round=largest if follows else per_round,
    )
    note = f"--min-clients is unset: using {largest}, the largest aggregator minimum ({theirs})"
    return CohortFit(replace(settings, rounds=fitted), note)
