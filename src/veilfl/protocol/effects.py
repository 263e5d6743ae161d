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
    verify -> CollectVerifierShares(r, clients, holders, query seed)
           <- VerifierSharesReported(r, j, answers)      the core decides who is valid
    commit -> CollectCommitments(r, participants, all aggregators)
           <- CommitmentReported(r, j, signature)        a quorum makes a certificate
    deal   -> CollectNoiseDeals(r, step, all aggregators)     distributed DP only
           <- NoiseDealsReported(r, j, sealed deals by recipient)  every one must deal
    sum    -> CollectAggregateShares(r, participants, holders, certificate[, step, deals])
           <- AggregateShareReported(r, j, share)        reconstruct from t (or more)
    apply  -> PersistRound(outcome)          the new model, not yet served
           <- RoundPersisted(r)
    serve  -> RoundCompleted(outcome)        consumers evaluate, record, plot
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from veilfl.crypto.shamir import Share
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.metrics import RoundMetrics
from veilfl.secagg.bounds_messages import VerifierShare
from veilfl.secagg.commitment import CommitmentCertificate
from veilfl.strategy.base import StrategyState
from veilfl.tensors import FloatArray

if TYPE_CHECKING:  # the ledger imports dp-accounting (scipy), which clients need not
    from veilfl.privacy.run_state import DpRunState

__all__ = [
    "AggregateShareReported",
    "AggregationStalled",
    "AggregatorFailed",
    "ClientsExcluded",
    "CollectAggregateShares",
    "CollectCommitments",
    "CollectHoldings",
    "CollectNoiseDeals",
    "CollectVerifierShares",
    "Command",
    "CommitmentReported",
    "Effect",
    "Event",
    "HoldingsReported",
    "NoiseDealsReported",
    "Notice",
    "PersistRound",
    "RoundAbandoned",
    "RoundCompleted",
    "RoundOutcome",
    "RoundPersisted",
    "VerifierSharesReported",
]


# ------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class CollectHoldings:
    """Ask each of ``aggregators`` which clients' shares of ``round_id`` it holds."""

    round_id: int
    aggregators: tuple[int, ...]


@dataclass(frozen=True)
class CollectVerifierShares:
    """Ask each of ``aggregators`` for its answer to ``query_seed`` (one per round) for
    the contributions of ``clients``."""

    round_id: int
    clients: tuple[str, ...]
    aggregators: tuple[int, ...]
    query_seed: bytes


@dataclass(frozen=True)
class CollectCommitments:
    """Ask each of ``aggregators`` to commit to ``participants`` as ``round_id``'s one
    list (a signature each)."""

    round_id: int
    participants: tuple[str, ...]
    aggregators: tuple[int, ...]


@dataclass(frozen=True)
class CollectAggregateShares:
    """Ask each of ``aggregators`` for its aggregate share of ``round_id`` over exactly
    ``participants``, showing the certificate that a quorum committed to that list.

    Under distributed DP also the noise step and, for each aggregator asked, the sealed
    deals addressed to it (every other aggregator's); it answers with its share of the
    sum plus the dealt noise."""

    round_id: int
    participants: tuple[str, ...]
    aggregators: tuple[int, ...]
    certificate: CommitmentCertificate
    noise_step: int | None = None
    deals: Mapping[int, tuple[bytes, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectNoiseDeals:
    """Ask each of ``aggregators`` to deal its noise for ``round_id`` at ``step``: one
    sealed, signed deal per other aggregator (distributed DP)."""

    round_id: int
    step: int
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
        privacy: Under DP, the privacy state after this release (ledger, clipping
            norm, sampling attempts), recorded with the round so that a restart
            continues exactly.
    """

    cohort: ClosedCohort
    metrics: RoundMetrics
    new_version: int
    weights: FloatArray
    strategy_state: StrategyState | None = None
    privacy: DpRunState | None = None


@dataclass(frozen=True)
class PersistRound:
    """Durably record ``outcome`` (checkpoint, then run-state row); answer with
    :class:`RoundPersisted`. The new model is served only after that."""

    outcome: RoundOutcome


Command = (
    CollectHoldings
    | CollectVerifierShares
    | CollectCommitments
    | CollectNoiseDeals
    | CollectAggregateShares
    | PersistRound
)


# --------------------------------------------------------------------------- events
@dataclass(frozen=True)
class HoldingsReported:
    """Aggregator ``aggregator`` holds shares of ``round_id`` from ``clients``."""

    round_id: int
    aggregator: int
    clients: frozenset[str]


@dataclass(frozen=True)
class VerifierSharesReported:
    """Aggregator ``aggregator``'s answers, one per client, for ``round_id``."""

    round_id: int
    aggregator: int
    shares: Mapping[str, VerifierShare]


@dataclass(frozen=True)
class CommitmentReported:
    """Aggregator ``aggregator``'s signature of its commitment to ``round_id``'s list."""

    round_id: int
    aggregator: int
    signature: bytes


@dataclass(frozen=True)
class NoiseDealsReported:
    """Aggregator ``aggregator``'s sealed noise deals for ``round_id``, by recipient."""

    round_id: int
    aggregator: int
    deals: Mapping[int, bytes]


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


Event = (
    HoldingsReported
    | VerifierSharesReported
    | CommitmentReported
    | NoiseDealsReported
    | AggregateShareReported
    | AggregatorFailed
    | RoundPersisted
)


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
