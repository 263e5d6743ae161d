"""The simulators' answer to the coordinator core's commands: function calls, at once.

Where the HTTP service performs a command over the network outside its lock, a
simulator performs it in process, right away, and hands the answer back; notices go to
the simulator's own consumers (evaluation, metrics, callbacks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from veilfl.errors import ConfigurationError
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.effects import (
    AggregationStalled,
    ClientsExcluded,
    CollectAggregateShares,
    CollectCommitments,
    CollectHoldings,
    CollectNoiseDeals,
    CollectVerifierShares,
    Event,
    PersistRound,
    RoundAbandoned,
    RoundCompleted,
    RoundOutcome,
    RoundPersisted,
)
from veilfl.sim.in_process_aggregators import InProcessAggregators

__all__ = ["InProcessEffects"]

logger = logging.getLogger(__name__)


class InProcessEffects:
    """Performs a core's commands in process and routes its notices.

    Args:
        core: The coordinator core.
        aggregators: The in-process aggregators (secure aggregation), or None.
        on_round: Called with each completed round.
        clock: The simulation's clock.
    """

    def __init__(
        self,
        core: Coordinator,
        *,
        aggregators: InProcessAggregators | None,
        on_round: Callable[[RoundOutcome], None],
        clock: Callable[[], float],
    ) -> None:
        self._core = core
        self._aggregators = aggregators
        self._on_round = on_round
        self._clock = clock
        self.excluded: dict[int, tuple[str, ...]] = {}

    def settle(self) -> None:
        """Perform every queued command and route every notice, until none is left."""
        while effects := self._core.drain():
            for effect in effects:
                events: list[Event] = []
                if isinstance(effect, PersistRound):
                    events = [RoundPersisted(effect.outcome.cohort.round_id)]
                elif isinstance(
                    effect,
                    CollectHoldings
                    | CollectVerifierShares
                    | CollectCommitments
                    | CollectNoiseDeals
                    | CollectAggregateShares,
                ):
                    if self._aggregators is None:
                        raise ConfigurationError("This simulation has no aggregators to ask.")
                    events = self._aggregators.perform(effect)
                elif isinstance(effect, RoundCompleted):
                    self._on_round(effect.outcome)
                elif isinstance(effect, ClientsExcluded):
                    self.excluded[effect.round_id] = effect.clients
                    logger.info(
                        "round %d: %d client(s) excluded: %s",
                        effect.round_id,
                        len(effect.clients),
                        effect.reason,
                    )
                elif isinstance(effect, RoundAbandoned | AggregationStalled):
                    logger.info("round %d: %s", effect.round_id, effect.reason)
                for event in events:
                    self._core.handle(event, now=self._clock())
