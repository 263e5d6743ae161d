"""The coordinator's start-up checks with its aggregators: their signed minimum cohorts,
then their signed consents to the run.

Before a secure run is created, :func:`fit_to_aggregators` asks every aggregator for
its policy (``GET /v1/policy``; an aggregator serves it before it has a run) until all
have answered, verifies each signature against the aggregator's published key, and fits
the run to the largest minimum (:func:`veilfl.protocol.aggregator_minimums.fit_cohort`):
a run whose clients per round, expected sample or buffer is below it is refused in one
line naming both flags; an unset ``--min-clients`` takes it (logged once). The fitted
settings are what the run's id is the hash of.

The run then starts closed (:class:`~veilfl.server.service.CoordinatorService` with
``opened=False``): it serves ``/v1/run`` at once, for the aggregators fetch it, check it
against their operators' policies and sign their consent to its id. Meanwhile
:func:`open_when_aggregators_consent` asks each aggregator for its consent
(``GET /v1/consent``) until every one has consented to this very run id with the
noise the run declares, then publishes the consents with the description and opens the
run. An aggregator that refuses the run stops it, in one line with the aggregator's
reason.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import httpx

from veilfl.errors import ConfigurationError, TransportError, WireFormatError
from veilfl.protocol.aggregator_minimums import fit_cohort, verified_minimums
from veilfl.protocol.messages import PublishedAggregator
from veilfl.protocol.run_description import RunDescription
from veilfl.protocol.run_spec import RunSpec
from veilfl.secagg.run_consent import RunConsent
from veilfl.server.service import CoordinatorService
from veilfl.transport.aggregator_policies import fetch_aggregator_policy, fetch_run_consent
from veilfl.transport.peer import RetryPolicy

__all__ = [
    "aggregator_minimums",
    "collect_consents",
    "fit_to_aggregators",
    "open_when_aggregators_consent",
]

logger = logging.getLogger(__name__)

_ONE_TRY = RetryPolicy(max_attempts=1, timeout_s=10.0)
"""One request per ask: an aggregator that does not answer is asked again later."""

T = TypeVar("T")


async def _ask_each(
    aggregators: Sequence[PublishedAggregator],
    ask: Callable[[PublishedAggregator], Awaitable[T | None]],
    what: str,
    retry_interval_s: float,
) -> dict[int, T]:
    """``ask`` every aggregator, concurrently, until each gives an answer (not None).

    An aggregator that cannot be reached or answers nonsense (it may still be
    starting) is asked again every ``retry_interval_s``; that it is waited for is
    logged once. A :class:`ConfigurationError` from ``ask`` ends the wait.
    """

    async def one(aggregator: PublishedAggregator) -> T:
        waiting = False
        while True:
            try:
                answer = await ask(aggregator)
            except (TransportError, WireFormatError) as exc:
                answer = None
                if not waiting:
                    logger.info(
                        "waiting for aggregator %d's %s at %s (%s)",
                        aggregator.index,
                        what,
                        aggregator.url,
                        exc,
                    )
                    waiting = True
            if answer is not None:
                return answer
            await asyncio.sleep(retry_interval_s)

    found = await asyncio.gather(*(one(a) for a in aggregators))
    return {a.index: answer for a, answer in zip(aggregators, found, strict=True)}


async def aggregator_minimums(
    aggregators: Sequence[PublishedAggregator],
    *,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_interval_s: float = 1.0,
) -> dict[int, int]:
    """Every aggregator's verified minimum cohort, asked again until each has answered.

    An aggregator that cannot be reached yet (it may still be starting) is asked again
    every ``retry_interval_s``; that it is waited for is logged once.

    Raises:
        ConfigurationError: if a policy is for another key, or not signed by the
            published key (the run is refused: the key file given with
            ``--aggregator`` does not match the aggregator at that URL).
    """

    async def minimum(aggregator: PublishedAggregator) -> int | None:
        policy = await fetch_aggregator_policy(
            aggregator, verify=verify, transport=transport, retry=_ONE_TRY
        )
        try:
            return verified_minimums([aggregator], [policy])[aggregator.index]
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{exc} Refusing the run: check the key file given with --aggregator "
                f"for {aggregator.url}."
            ) from None

    return await _ask_each(aggregators, minimum, "signed policy", retry_interval_s)


async def fit_to_aggregators(
    settings: RunSpec,
    *,
    min_clients_given: bool,
    clients_per_round_given: bool = True,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_interval_s: float = 1.0,
) -> RunSpec:
    """Learn the aggregators' minimums and fit the run's settings to them.

    Args:
        settings: The run's settings, as the operator gave them.
        min_clients_given: ``--min-clients`` was set by the operator.
        clients_per_round_given: ``--clients-per-round`` was set by the operator.
        verify: How to verify the aggregators' TLS certificates.
        transport: An httpx transport (tests).
        retry_interval_s: Wait between asking an unreachable aggregator again.

    Returns:
        The settings the run follows.

    Raises:
        ConfigurationError: (one line) if the run does not fit an aggregator's minimum,
            or a policy does not verify.
    """
    secure = settings.secure
    if secure is None:
        raise ConfigurationError("Only a secure run is fitted to its aggregators' policies.")
    minimums = await aggregator_minimums(
        secure.aggregators, verify=verify, transport=transport, retry_interval_s=retry_interval_s
    )
    fitted = fit_cohort(
        settings,
        minimums,
        min_clients_given=min_clients_given,
        clients_per_round_given=clients_per_round_given,
    )
    if fitted.note is not None:
        logger.info("%s", fitted.note)
    logger.info(
        "the aggregators' signed minimum cohorts (%s) fit the run",
        ", ".join(f"aggregator {j}: {n}" for j, n in sorted(minimums.items())),
    )
    return fitted.settings


async def collect_consents(
    description: RunDescription,
    *,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_interval_s: float = 0.5,
) -> dict[int, RunConsent]:
    """Every aggregator's signed consent to ``description``'s run id, asked again until
    each has consented (an aggregator may still be on an earlier run, or starting).

    Raises:
        ConfigurationError: one line with the aggregator's reason, if one refused this
            run.
    """
    secure = description.info.secure
    if secure is None:
        raise ConfigurationError("Only a secure run collects its aggregators' consents.")
    run_id = description.run_id

    async def consent(aggregator: PublishedAggregator) -> RunConsent | None:
        try:
            given = await fetch_run_consent(
                aggregator, verify=verify, transport=transport, retry=_ONE_TRY
            )
        except TransportError as exc:
            if run_id in str(exc) and "refused" in str(exc):
                raise ConfigurationError(
                    f"Aggregator {aggregator.index} at {aggregator.url} refused run {run_id}: {exc}"
                ) from None
            raise
        if given.run_id != run_id:
            return None  # still on an earlier run: it follows this one shortly
        signers = RunDescription(description.spec, (given,)).consenting_aggregators(
            {aggregator.index: aggregator.signing_bytes()}
        )
        if aggregator.index not in signers:
            raise ConfigurationError(
                f"Aggregator {aggregator.index} at {aggregator.url} served a consent to "
                f"run {run_id} that its published key did not sign, or for other noise; "
                "check the key file given with --aggregator."
            )
        return given

    return await _ask_each(
        secure.aggregators, consent, f"consent to run {run_id}", retry_interval_s
    )


async def open_when_aggregators_consent(
    service: CoordinatorService,
    *,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_interval_s: float = 0.5,
) -> None:
    """Collect every aggregator's consent to the service's run, publish them with its
    description, and open the run.

    Raises:
        ConfigurationError: (one line) if an aggregator refused the run; it stays closed.
    """
    consents = await collect_consents(
        service.description,
        verify=verify,
        transport=transport,
        retry_interval_s=retry_interval_s,
    )
    await service.open(consents)
    logger.info(
        "aggregators %s consented to run %s; it is open",
        ", ".join(str(j) for j in sorted(consents)),
        service.run_info.run_id,
    )
