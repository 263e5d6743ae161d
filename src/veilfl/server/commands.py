"""How the HTTP coordinator performs its core's commands: the aggregators over HTTP,
round records on disk (in a worker thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from veilfl.errors import ConfigurationError
from veilfl.protocol.effects import (
    CollectCommitments,
    CollectHoldings,
    CollectNoiseDeals,
    CollectVerifierShares,
    Command,
    Event,
    PersistRound,
    RoundOutcome,
    RoundPersisted,
)
from veilfl.server.aggregator_link import HttpAggregatorLink

__all__ = ["ServerCommands"]


class ServerCommands:
    """A :class:`~veilfl.server.service.CommandPerformer` for the HTTP coordinator.

    Args:
        link: The aggregators (None for a plaintext run).
        persist: Durably records a completed round (blocking; run in a thread).
    """

    def __init__(
        self, link: HttpAggregatorLink | None, persist: Callable[[RoundOutcome], None]
    ) -> None:
        self._link = link
        self._persist = persist

    async def perform(self, command: Command) -> list[Event]:
        """Carry out one command.

        Raises:
            StorageError: if the round cannot be recorded (the caller retries).
        """
        if isinstance(command, PersistRound):
            await asyncio.to_thread(self._persist, command.outcome)
            return [RoundPersisted(command.outcome.cohort.round_id)]
        if self._link is None:
            raise ConfigurationError("This run has no aggregators to ask.")
        if isinstance(command, CollectHoldings):
            return await self._link.collect_holdings(command)
        if isinstance(command, CollectVerifierShares):
            return await self._link.collect_verifier_shares(command)
        if isinstance(command, CollectCommitments):
            return await self._link.collect_commitments(command)
        if isinstance(command, CollectNoiseDeals):
            return await self._link.collect_noise_deals(command)
        return await self._link.collect_aggregate_shares(command)

    async def close(self) -> None:
        """Close the aggregator connections."""
        if self._link is not None:
            await self._link.close()
