"""The coordinator's side of secure aggregation, as a job that asks and listens.

For a closed cohort the job first asks every aggregator which clients' shares it
actually holds: the participant list is built from those holdings, never from what
clients' receipts claim, so a false receipt costs nothing but its sender's exclusion.
It then picks t or more aggregators that all hold the largest set of reporting clients
(:func:`~veilfl.secagg.reconstruction.plan_aggregation`), fixes that participant list
for good (each aggregator answers one list per round), asks them for their aggregate
shares and reconstructs the sum, checking consistency whenever more than t answered.

Aggregators that fail are left out; when the job cannot go on (too few aggregators
answer) it stalls, says so once, and asks again after its retry interval. The
coordinator abandons the round if it is still stalled one round timeout after it
closed. The coordinator never sees an individual update.
"""

from __future__ import annotations

from enum import StrEnum

from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError, ReconstructionError
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.effects import (
    AggregateShareReported,
    AggregationStalled,
    AggregatorFailed,
    ClientsExcluded,
    CollectAggregateShares,
    CollectHoldings,
    Effect,
    Event,
    HoldingsReported,
)
from veilfl.protocol.messages import UpdateHeader
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.reconstruction import plan_aggregation, reconstruct_aggregate
from veilfl.strategy.aggregate import Aggregate

__all__ = ["SecureAggregation", "SecureAggregationJob"]


class _Phase(StrEnum):
    HOLDINGS = "asking the aggregators what they hold"
    RELEASE = "collecting aggregate shares"
    STALLED = "waiting to ask the aggregators again"
    DONE = "aggregated"


class SecureAggregation:
    """An :class:`~veilfl.protocol.aggregation.AggregationBackend` over m aggregators.

    Args:
        config: Secure-aggregation parameters.
        min_participants: Smallest participant list worth reconstructing.
        retry_interval_s: How long a stalled job waits before asking again.
    """

    def __init__(
        self,
        config: SecureAggregationConfig,
        *,
        min_participants: int,
        retry_interval_s: float = 1.0,
    ) -> None:
        self._config = config
        self._min_participants = min_participants
        self._retry_interval_s = retry_interval_s

    @property
    def config(self) -> SecureAggregationConfig:
        """The parameters."""
        return self._config

    def open_cohort(self, round_id: int) -> None:
        """Nothing to reset: aggregators key their state by round."""

    def begin(self, cohort: ClosedCohort) -> SecureAggregationJob:
        """Start aggregating ``cohort`` (first, by asking for the holdings)."""
        return SecureAggregationJob(
            cohort,
            config=self._config,
            min_participants=self._min_participants,
            retry_interval_s=self._retry_interval_s,
        )

    def check_receipt(self, header: UpdateHeader) -> None:
        """A receipt names at least t distinct aggregators of this run.

        Raises:
            ProtocolError: for an index outside 1..m, or fewer than t aggregators.
        """
        m, t = self._config.num_aggregators, self._config.threshold
        outside = sorted(j for j in header.aggregators if not 1 <= j <= m)
        if outside:
            raise ProtocolError(
                f"The receipt names aggregators {outside}, but this run has aggregators 1..{m}."
            )
        if len(header.aggregators) < t:
            raise ProtocolError(
                f"The receipt lists {len(header.aggregators)} aggregators; at least {t} must "
                "hold the shares."
            )

    def client_privacy(self) -> ClientPrivacyPlan | None:
        """Secure aggregation alone asks nothing more of clients."""
        return None

    def can_continue(self) -> bool:
        """No budget here."""
        return True

    def plaintext(self) -> None:
        """Updates never travel in the clear here."""
        return None


class SecureAggregationJob:
    """Aggregating one closed cohort across the aggregators (see the module docstring)."""

    def __init__(
        self,
        cohort: ClosedCohort,
        *,
        config: SecureAggregationConfig,
        min_participants: int,
        retry_interval_s: float,
    ) -> None:
        self._cohort = cohort
        self._config = config
        self._min_participants = min_participants
        self._retry_interval_s = retry_interval_s
        self._outbox: list[Effect] = []
        self._result: Aggregate | None = None
        self._participants: tuple[str, ...] | None = None  # fixed once release starts
        self._holders: tuple[int, ...] = ()
        self._waiting: set[int] = set()
        self._holdings: dict[int, frozenset[str]] = {}
        self._shares: dict[int, Share] = {}
        self._failures: dict[int, str] = {}
        self._stall_reason = ""
        self._stalled_since: float | None = None
        self._phase = _Phase.HOLDINGS
        self._ask_holdings()

    # ----------------------------------------------------------------- queries
    @property
    def round_id(self) -> int:
        """The round being aggregated."""
        return self._cohort.round_id

    @property
    def result(self) -> Aggregate | None:
        """The reconstructed aggregate, once done."""
        return self._result

    def status(self) -> str:
        """What the job is doing now."""
        if self._phase is _Phase.STALLED:
            return f"{self._phase.value} ({self._stall_reason})"
        return self._phase.value

    # ---------------------------------------------------------------- commands
    def drain(self) -> list[Effect]:
        """Commands and notices queued since the last call."""
        out, self._outbox = self._outbox, []
        return out

    def handle(self, event: Event) -> None:
        """Take an aggregator's answer (or failure) to this job's current request."""
        if getattr(event, "round_id", None) != self.round_id:
            return
        aggregator = getattr(event, "aggregator", None)
        if aggregator not in self._waiting:
            return  # an answer to an earlier request, or from no one we asked
        self._waiting.discard(aggregator)
        if self._phase is _Phase.HOLDINGS:
            if isinstance(event, HoldingsReported):
                self._holdings[aggregator] = event.clients
        elif self._phase is _Phase.RELEASE and isinstance(event, AggregateShareReported):
            share = event.share
            if share.index == aggregator:
                self._shares[aggregator] = share
        if isinstance(event, AggregatorFailed):
            # Left out of this attempt; a stalled job asks it again after the interval.
            self._failures[aggregator] = event.reason
        if not self._waiting:
            self._advance()

    def tick(self, *, now: float) -> None:
        """Ask again once a stall has lasted the retry interval."""
        if self._phase is not _Phase.STALLED:
            return
        if self._stalled_since is None:
            self._stalled_since = now
            return
        if now - self._stalled_since < self._retry_interval_s:
            return
        self._stalled_since = None
        if self._participants is None:
            self._ask_holdings()
        else:
            self._ask_for_shares()

    # ----------------------------------------------------------------- private
    def _ask_holdings(self) -> None:
        self._phase = _Phase.HOLDINGS
        self._holdings = {}
        everyone = tuple(range(1, self._config.num_aggregators + 1))
        self._waiting = set(everyone)
        self._outbox.append(CollectHoldings(self.round_id, everyone))

    def _ask_for_shares(self) -> None:
        assert self._participants is not None
        self._phase = _Phase.RELEASE
        missing = tuple(j for j in self._holders if j not in self._shares)
        self._waiting = set(missing)
        if missing:
            self._outbox.append(CollectAggregateShares(self.round_id, self._participants, missing))
        else:
            self._reconstruct()

    def _stall(self, reason: str) -> None:
        if self._failures:
            failed = "; ".join(
                f"aggregator {j}: {why}" for j, why in sorted(self._failures.items())
            )
            reason = f"{reason} ({failed})"
        self._failures = {}
        self._phase = _Phase.STALLED
        self._stalled_since = None
        if reason != self._stall_reason:
            self._outbox.append(AggregationStalled(self.round_id, reason))
        self._stall_reason = reason

    def _advance(self) -> None:
        if self._phase is _Phase.HOLDINGS:
            self._plan()
        elif self._phase is _Phase.RELEASE:
            self._reconstruct()

    def _plan(self) -> None:
        reporters = self._cohort.participant_ids
        held_by = {
            client: {j for j, clients in self._holdings.items() if client in clients}
            for client in reporters
        }
        try:
            plan = plan_aggregation(
                held_by,
                alive=self._holdings.keys(),
                threshold=self._config.threshold,
                min_participants=self._min_participants,
            )
        except ProtocolError as exc:
            answered = len(self._holdings)
            self._stall(
                f"{answered} of {self._config.num_aggregators} aggregators answered, and "
                f"{str(exc).rstrip('.')}"
            )
            return
        excluded = tuple(c for c in reporters if c not in set(plan.participants))
        if excluded:
            self._outbox.append(
                ClientsExcluded(
                    self.round_id,
                    excluded,
                    f"their shares are not held by {self._config.threshold} aggregators that "
                    "hold the others' (a receipt that named aggregators it never reached, or "
                    "an upload that failed)",
                )
            )
        self._participants = plan.participants
        self._holders = plan.aggregators
        self._ask_for_shares()

    def _reconstruct(self) -> None:
        assert self._participants is not None
        t = self._config.threshold
        if len(self._shares) < t:
            self._stall(
                f"{len(self._shares)} of the {t} aggregate shares needed arrived "
                f"(asked aggregators {list(self._holders)})"
            )
            return
        kept = self._cohort.restricted_to(self._participants)
        try:
            self._result = reconstruct_aggregate(
                [self._shares[j] for j in sorted(self._shares)],
                config=self._config,
                participants=kept.participant_ids,
                trained_versions=tuple(p.trained_version for p in kept.participants),
            )
        except (ReconstructionError, ProtocolError) as exc:
            self._shares = {}  # ask every holder again after the retry interval
            self._stall(f"the aggregate shares do not reconstruct: {str(exc).rstrip('.')}")
            return
        self._phase = _Phase.DONE
