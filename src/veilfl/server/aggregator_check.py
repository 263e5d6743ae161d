"""The coordinator's start-up check against its aggregators' signed minimum cohorts.

A secure run starts closed (:class:`~veilfl.server.service.CoordinatorService` with
``opened=False``): it serves ``/v1/run`` at once, because each aggregator fetches the
run from it before it serves, and it enrolls clients, but it gives no training task.
Meanwhile :func:`open_when_aggregators_fit` asks every aggregator for its policy
(``GET /v1/policy``) until all have answered, verifies each signature against the
aggregator's published key, and fits the run to the largest minimum
(:func:`veilfl.protocol.aggregator_minimums.fit_cohort`): a run whose clients per
round, expected sample or buffer is below it is refused in one line naming both flags;
an unset ``--min-clients`` takes it (logged once). Then the run opens.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence

import httpx

from veilfl.errors import ConfigurationError, TransportError, WireFormatError
from veilfl.protocol.aggregator_minimums import fit_cohort, verified_minimums
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.messages import PublishedAggregator
from veilfl.protocol.settings import CoordinatorSettings
from veilfl.server.service import CoordinatorService
from veilfl.transport.aggregator_policies import fetch_aggregator_policy
from veilfl.transport.peer import RetryPolicy

__all__ = ["aggregator_minimums", "open_when_aggregators_fit"]

logger = logging.getLogger(__name__)


async def aggregator_minimums(
    aggregators: Sequence[PublishedAggregator],
    *,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_interval_s: float = 1.0,
) -> dict[int, int]:
    """Every aggregator's verified minimum cohort, asked again until each has answered.

    An aggregator that cannot be reached yet (it may still be starting: it fetches the
    run from this coordinator first) is asked again every ``retry_interval_s``; that
    it is waited for is logged once.

    Raises:
        ConfigurationError: if a policy is for another key, or not signed by the
            published key (the run is refused: the key file given with
            ``--aggregator`` does not match the aggregator at that URL).
    """
    one_try = RetryPolicy(max_attempts=1, timeout_s=10.0)

    async def one(aggregator: PublishedAggregator) -> int:
        waiting = False
        while True:
            try:
                policy = await fetch_aggregator_policy(
                    aggregator, verify=verify, transport=transport, retry=one_try
                )
            except (TransportError, WireFormatError) as exc:
                if not waiting:
                    logger.info(
                        "waiting for aggregator %d's signed policy at %s (%s)",
                        aggregator.index,
                        aggregator.url,
                        exc,
                    )
                    waiting = True
                await asyncio.sleep(retry_interval_s)
                continue
            try:
                return verified_minimums([aggregator], [policy])[aggregator.index]
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"{exc} Refusing the run: check the key file given with --aggregator "
                    f"for {aggregator.url}."
                ) from None

    found = await asyncio.gather(*(one(a) for a in aggregators))
    return {a.index: minimum for a, minimum in zip(aggregators, found, strict=True)}


async def open_when_aggregators_fit(
    service: CoordinatorService,
    settings: CoordinatorSettings,
    *,
    rebuild: Callable[[CoordinatorSettings], Coordinator],
    min_clients_given: bool,
    clients_per_round_given: bool = True,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_interval_s: float = 1.0,
) -> CoordinatorSettings:
    """Learn the aggregators' minimums, fit the run to them, and open it.

    Args:
        service: The closed service of a secure run.
        settings: The run's settings (as stored).
        rebuild: Builds the core for fitted settings (when ``--min-clients`` rises).
        min_clients_given: ``--min-clients`` was set by the operator.
        clients_per_round_given: ``--clients-per-round`` was set by the operator.
        verify: How to verify the aggregators' TLS certificates.
        transport: An httpx transport (tests).
        retry_interval_s: Wait between asking an unreachable aggregator again.

    Returns:
        The settings the run now follows.

    Raises:
        ConfigurationError: (one line) if the run does not fit an aggregator's minimum,
            or a policy does not verify; the run stays closed.
    """
    secure = settings.secure
    if secure is None:
        raise ConfigurationError("Only a secure run waits for its aggregators' policies.")
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
    changed = fitted.settings != settings
    await service.open((lambda: rebuild(fitted.settings)) if changed else None)
    logger.info(
        "the aggregators' signed minimum cohorts (%s) fit the run; it is open",
        ", ".join(f"aggregator {j}: {n}" for j, n in sorted(minimums.items())),
    )
    return fitted.settings
