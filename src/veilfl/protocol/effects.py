"""What the coordinator core asks the outside world to do, and what comes back.

The core never does I/O. When it needs something from outside (the aggregators'
holdings or sums, a durable record), it queues a **command**; the edge that drives it
(the HTTP service, or a simulator) performs the command, outside any lock, and hands the
result back as an **event**. Things the core wants the world to know but needs no answer
for (a round completed, a client was excluded) are **notices**; evaluation, checkpoint
consumers, metrics and logs read them.

One secure round, as commands and events::

    close  -> CollectHoldings(r, all aggregators)
           <- HoldingsReported(r, j, clients) per aggregator (or AggregatorFailed)
    plan   -> CollectAggregateShares(r, participants, aggregators)
           <- AggregateShareReported(r, j, share) (or AggregatorFailed)
    apply  -> PersistRound(outcome)          the new model, not yet served
           <- RoundPersisted(r)
    serve  -> RoundCompleted(outcome)        consumers evaluate, record, plot
"""

from __future__ import annotations

from dataclasses import dataclass

from veilfl.crypto.shamir import Share
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.metrics import RoundMetrics
from veilfl.strategy.base import StrategyState
from veilfl.tensors import FloatArray

__all__ = [
    "AggregateShareReported",
    "AggregationStalled",
    "AggregatorFailed",
    "ClientsExcluded",
    "CollectAggregateShares",
    "CollectHoldings",
    "Command",
    "Effect",
    "Event",
    "HoldingsReported",
    "Notice",
    "PersistRound",
    "RoundAbandoned",
    "RoundCompleted",
    "RoundOutcome",
    "RoundPersisted",
]


# ------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class CollectHoldings:
    """Ask each of ``aggregators`` which clients' shares of ``round_id`` it holds."""

    round_id: int
    aggregators: tuple[int, ...]


@dataclass(frozen=True)
class CollectAggregateShares:
    """Ask each of ``aggregators`` for its aggregate share of ``round_id`` over exactly
    ``participants`` (each aggregator answers one participant list per round)."""

    round_id: int
    participants: tuple[str, ...]
    aggregators: tuple[int, ...]


@dataclass(frozen=True)
class RoundOutcome:
    """A round (or buffer) aggregated and applied, before its model is served.

    Attributes:
        cohort: The closed round, reduced to the participants the sum covers.
        metrics: Its metrics (without server-side evaluation, which comes later).
        new_version: The model version it produced.
        weights: That model, flat.
        strategy_state: The server strategy's state after this round (adaptive server
            optimisers), persisted with it so a resumed run continues exactly; None
            for a stateless strategy.
    """

    cohort: ClosedCohort
    metrics: RoundMetrics
    new_version: int
    weights: FloatArray
    strategy_state: StrategyState | None = None


@dataclass(frozen=True)
class PersistRound:
    """Durably record ``outcome`` (checkpoint, then run-state row); answer with
    :class:`RoundPersisted`. The new model is served only after that."""

    outcome: RoundOutcome


Command = CollectHoldings | CollectAggregateShares | PersistRound


# --------------------------------------------------------------------------- events
@dataclass(frozen=True)
class HoldingsReported:
    """Aggregator ``aggregator`` holds shares of ``round_id`` from ``clients``."""

    round_id: int
    aggregator: int
    clients: frozenset[str]


@dataclass(frozen=True)
class AggregateShareReported:
    """Aggregator ``aggregator``'s aggregate share of ``round_id``."""

    round_id: int
    aggregator: int
    share: Share


@dataclass(frozen=True)
class AggregatorFailed:
    """A request to aggregator ``aggregator`` about ``round_id`` failed.

    Attributes:
        refused: True if the aggregator answered and refused (a protocol error), False if
            it could not be reached or failed.
        reason: What went wrong, for the log.
    """

    round_id: int
    aggregator: int
    reason: str
    refused: bool = False


@dataclass(frozen=True)
class RoundPersisted:
    """The outcome of ``round_id`` is durably recorded."""

    round_id: int


Event = HoldingsReported | AggregateShareReported | AggregatorFailed | RoundPersisted


# -------------------------------------------------------------------------- notices
@dataclass(frozen=True)
class RoundCompleted:
    """A round's (or buffer's) model is now the served global model."""

    outcome: RoundOutcome


@dataclass(frozen=True)
class RoundAbandoned:
    """``round_id`` could not be aggregated in time; ``new_round_id`` runs it again on the
    same model version with a fresh sample."""

    round_id: int
    new_round_id: int
    reason: str


@dataclass(frozen=True)
class ClientsExcluded:
    """Clients left out of ``round_id``'s sum, and why (said once per round)."""

    round_id: int
    clients: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class AggregationStalled:
    """Aggregating ``round_id`` cannot go on for now (said once per change of reason)."""

    round_id: int
    reason: str


Notice = RoundCompleted | RoundAbandoned | ClientsExcluded | AggregationStalled
Effect = Command | Notice
