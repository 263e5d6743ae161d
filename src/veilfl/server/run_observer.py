"""What the coordinator's service has seen of its run, for the dashboard and ``/metrics``.

:class:`RunObserver` is told by :class:`~veilfl.server.service.CoordinatorService` of
every command it performs, every answer (event) the core receives and every notice the
core publishes, and by the HTTP edge of every answered update. From these it keeps:

* a row per round (or buffer): when it opened, closed, was aggregated and completed
  (seconds since the service started, on the service's clock), how many clients were
  sampled and took part, refusals by reason, exclusions, a stall or an abandonment,
  and the round's metrics (merged in from the run's history, with evaluations);
* each aggregator's health: answers, failures (refused or unreachable), the latest
  failure, the latency of the last answer, and what it is being asked now;
* counters for Prometheus (rounds completed and abandoned, clients excluded, updates
  accepted and refused by reason, aggregator answers and failures).

Every change bumps a revision, and each round row carries the revision of its last
change, so a poller asks only for rows changed since the revision it has. Nothing here
is secret: counts, times, public URLs and error messages (in which client ids, 32 hex
digits, are masked), never a client id or a key.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from veilfl.protocol.effects import (
    AggregatorFailed,
    ClientsExcluded,
    CollectAggregateShares,
    CollectCommitments,
    CollectHoldings,
    CollectNoiseDeals,
    CollectVerifierShares,
    Command,
    Event,
    Notice,
    PersistRound,
    RoundAbandoned,
    RoundCompleted,
    RoundPersisted,
)
from veilfl.protocol.metrics import RoundMetrics

__all__ = [
    "AggregatorHealth",
    "AggregatorState",
    "ObservedCounts",
    "RoundState",
    "RoundView",
    "RunObserver",
]

AggregatorCommand = (
    CollectHoldings
    | CollectVerifierShares
    | CollectCommitments
    | CollectNoiseDeals
    | CollectAggregateShares
)
"""The commands that ask aggregators for something."""

_MAX_REASON = 300
"""Longest failure or stall reason kept (they quote aggregators' answers)."""

_ID = re.compile(r"\b[0-9a-f]{32}\b")
"""A client id (32 hex digits); an aggregator's key fingerprint looks the same."""


def _quoted(reason: str) -> str:
    """``reason`` as the dashboard may show it: shortened, with every 32-hex-digit id
    (a client's, in an aggregator's refusal) masked."""
    return _ID.sub("<id>", reason[:_MAX_REASON])


def _asking_for(command: AggregatorCommand) -> str:
    """What ``command`` asks each of its aggregators for, in words."""
    r = command.round_id
    if isinstance(command, CollectHoldings):
        return f"its holdings of round {r}"
    if isinstance(command, CollectVerifierShares):
        return f"its checks of round {r}'s {len(command.clients)} contributions"
    if isinstance(command, CollectCommitments):
        return f"its commitment to round {r}'s {len(command.participants)} participants"
    if isinstance(command, CollectNoiseDeals):
        return f"its noise deals for round {r}"
    return f"its aggregate share of round {r} over {len(command.participants)} clients"


class RoundState(StrEnum):
    """Where a round (or buffer) stands, as far as the service has seen."""

    OPEN = "open"
    AGGREGATING = "aggregating"
    PERSISTING = "persisting"
    COMPLETED = "completed"
    ABANDONED = "abandoned"


class AggregatorState(StrEnum):
    """An aggregator's health, from its latest answer."""

    UNKNOWN = "unknown"  # never asked yet
    WAITING = "waiting"  # asked; no answer yet, and its last answer (if any) was fine
    OK = "ok"  # answered its latest request
    FAILING = "failing"  # its latest request failed or was refused


@dataclass(frozen=True)
class RoundView:
    """One round (or buffer) as the dashboard shows it.

    Times are seconds since the service started (None: not seen, as for rounds
    completed before a restart). ``refused`` maps error class to the count of update
    requests for this round refused with it.
    """

    round_id: int
    state: RoundState
    revision: int
    opened_s: float | None
    closed_s: float | None
    aggregated_s: float | None
    completed_s: float | None
    sampled: int | None
    participants: int | None
    model_version: int | None
    refused: Mapping[str, int]
    excluded: int
    exclusion_reason: str | None
    stalled: str | None
    abandoned_for: int | None
    abandon_reason: str | None
    train_loss: float | None
    test_loss: float | None
    test_accuracy: float | None
    epsilon: float | None
    seconds: float | None
    federated_loss: float | None = None
    federated_accuracy: float | None = None
    federated_examples: float | None = None


@dataclass(frozen=True)
class AggregatorHealth:
    """What the coordinator has seen of one aggregator.

    Attributes:
        index: Its share index.
        url: Its public URL.
        state: Its health, from its latest answer.
        answers: Requests it answered.
        failures: Requests that failed (unreachable, 5xx, or refused).
        refusals: Of those, the ones it answered with a refusal (4xx).
        consecutive_failures: Failures since its last answer.
        last_answer_s: When it last answered (seconds since the service started).
        last_latency_s: How long that answer took.
        last_failure_s: When a request to it last failed.
        last_failure: Why.
        asked_s: When the request it has not answered yet was sent (None: none is).
        asked_for: What that request asks for.
    """

    index: int
    url: str
    state: AggregatorState
    answers: int
    failures: int
    refusals: int
    consecutive_failures: int
    last_answer_s: float | None
    last_latency_s: float | None
    last_failure_s: float | None
    last_failure: str | None
    asked_s: float | None
    asked_for: str | None


@dataclass(frozen=True)
class ObservedCounts:
    """Totals since the service started (the counters behind ``/metrics``).

    Attributes:
        rounds_completed: Rounds (or buffers) whose model was served.
        rounds_abandoned: Rounds abandoned and run again under a new id.
        clients_excluded: Clients left out of a round's sum.
        stalls: Times aggregation said it could not go on for now.
        updates_accepted: Accepted update requests by kind (update, receipt, ticket).
        updates_refused: Refused update requests by (kind, error class).
        aggregator_answers: Answers by aggregator index.
        aggregator_failures: Failures by (aggregator index, ``refused`` or
            ``unreachable``).
    """

    rounds_completed: int
    rounds_abandoned: int
    clients_excluded: int
    stalls: int
    updates_accepted: Mapping[str, int]
    updates_refused: Mapping[tuple[str, str], int]
    aggregator_answers: Mapping[int, int]
    aggregator_failures: Mapping[tuple[int, str], int]


@dataclass
class _Round:
    round_id: int
    revision: int = 0
    opened_s: float | None = None
    closed_s: float | None = None
    aggregated_s: float | None = None
    completed_s: float | None = None
    sampled: int | None = None
    participants: int | None = None
    model_version: int | None = None
    refused: dict[str, int] = field(default_factory=dict)
    excluded: int = 0
    exclusion_reason: str | None = None
    stalled: str | None = None
    abandoned_for: int | None = None
    abandon_reason: str | None = None
    metrics: RoundMetrics | None = None

    @property
    def state(self) -> RoundState:
        if self.completed_s is not None or self.metrics is not None:
            return RoundState.COMPLETED
        if self.abandoned_for is not None:
            return RoundState.ABANDONED
        if self.aggregated_s is not None:
            return RoundState.PERSISTING
        if self.closed_s is not None:
            return RoundState.AGGREGATING
        return RoundState.OPEN

    def view(self) -> RoundView:
        m = self.metrics
        return RoundView(
            round_id=self.round_id,
            state=self.state,
            revision=self.revision,
            opened_s=self.opened_s,
            closed_s=self.closed_s,
            aggregated_s=self.aggregated_s,
            completed_s=self.completed_s,
            sampled=self.sampled,
            participants=self.participants if m is None else m.num_clients,
            model_version=self.model_version,
            refused=dict(self.refused),
            excluded=self.excluded,
            exclusion_reason=self.exclusion_reason,
            stalled=self.stalled,
            abandoned_for=self.abandoned_for,
            abandon_reason=self.abandon_reason,
            train_loss=None if m is None else m.train_loss,
            test_loss=None if m is None else m.test_loss,
            test_accuracy=None if m is None else m.test_accuracy,
            epsilon=None if m is None else m.epsilon,
            seconds=None if m is None else m.seconds,
            federated_loss=None if m is None else m.federated_loss,
            federated_accuracy=None if m is None else m.federated_accuracy,
            federated_examples=None if m is None else m.federated_examples,
        )


@dataclass
class _Aggregator:
    index: int
    url: str
    answers: int = 0
    failures: int = 0
    refusals: int = 0
    consecutive_failures: int = 0
    last_answer_s: float | None = None
    last_latency_s: float | None = None
    last_failure_s: float | None = None
    last_failure: str | None = None
    asked_s: float | None = None
    asked_for: str | None = None

    def view(self) -> AggregatorHealth:
        if self.consecutive_failures:
            state = AggregatorState.FAILING
        elif self.asked_s is not None:
            state = AggregatorState.WAITING
        elif self.answers:
            state = AggregatorState.OK
        else:
            state = AggregatorState.UNKNOWN
        return AggregatorHealth(
            index=self.index,
            url=self.url,
            state=state,
            answers=self.answers,
            failures=self.failures,
            refusals=self.refusals,
            consecutive_failures=self.consecutive_failures,
            last_answer_s=self.last_answer_s,
            last_latency_s=self.last_latency_s,
            last_failure_s=self.last_failure_s,
            last_failure=self.last_failure,
            asked_s=self.asked_s,
            asked_for=self.asked_for,
        )


class RunObserver:
    """Keeps what the service has seen of its run (see the module docstring).

    Thread-safe: the service calls it on the event loop, readers may call from anywhere.

    Args:
        aggregators: Each aggregator's index and public URL (empty for plaintext runs).
        clock: The service's monotonic clock in seconds (the core's ``now``).
    """

    def __init__(
        self,
        *,
        aggregators: Mapping[int, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._start = clock()
        self.instance = os.urandom(8).hex()
        """Names this observer (a poller that sees another one knows the coordinator
        restarted, and asks for every row again)."""
        self._lock = threading.Lock()
        self._revision = 0
        self._rounds: dict[int, _Round] = {}
        self._latest_round: int | None = None
        self._aggregators = {
            j: _Aggregator(j, url) for j, url in sorted((aggregators or {}).items())
        }
        self._rounds_completed = 0
        self._rounds_abandoned = 0
        self._clients_excluded = 0
        self._stalls = 0
        self._accepted: dict[str, int] = {}
        self._refused: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ reading
    @property
    def revision(self) -> int:
        """Bumped by every change a round row shows."""
        with self._lock:
            return self._revision

    def now_s(self) -> float:
        """Seconds since the service started."""
        return self._clock() - self._start

    def rounds(self, *, since: int = 0) -> list[RoundView]:
        """Rounds changed after revision ``since`` (all of them for 0), in order."""
        with self._lock:
            return [
                row.view()
                for _, row in sorted(self._rounds.items())
                if row.revision > since or since <= 0
            ]

    def aggregators(self) -> list[AggregatorHealth]:
        """Each aggregator's health, in index order."""
        with self._lock:
            return [a.view() for a in self._aggregators.values()]

    def counts(self) -> ObservedCounts:
        """Totals since the service started."""
        with self._lock:
            answers = {j: a.answers for j, a in self._aggregators.items()}
            failures: dict[tuple[int, str], int] = {}
            for j, a in self._aggregators.items():
                failures[(j, "refused")] = a.refusals
                failures[(j, "unreachable")] = a.failures - a.refusals
            return ObservedCounts(
                rounds_completed=self._rounds_completed,
                rounds_abandoned=self._rounds_abandoned,
                clients_excluded=self._clients_excluded,
                stalls=self._stalls,
                updates_accepted=dict(self._accepted),
                updates_refused=dict(self._refused),
                aggregator_answers=answers,
                aggregator_failures=failures,
            )

    # ------------------------------------------------------- from the service
    def command_sent(self, command: Command) -> None:
        """The service started performing ``command``."""
        now = self.now_s()
        with self._lock:
            if isinstance(command, PersistRound):
                cohort = command.outcome.cohort
                row = self._row(cohort.round_id)
                row.opened_s = cohort.opened_at - self._start
                row.closed_s = cohort.closed_at - self._start
                row.aggregated_s = now
                row.sampled = cohort.sampled
                row.participants = len(cohort.participants)
                row.stalled = None
                self._touch(row)
                return
            if isinstance(command, CollectHoldings):
                row = self._row(command.round_id)
                if row.closed_s is None:
                    row.closed_s = now
                    self._touch(row)
            self._ask(command.aggregators, now, _asking_for(command))

    def event_received(self, event: Event) -> None:
        """The core is about to be told ``event`` (an answer to a command)."""
        if isinstance(event, RoundPersisted):
            return
        now = self.now_s()
        with self._lock:
            aggregator = self._aggregators.get(event.aggregator)
            if aggregator is None:
                aggregator = self._aggregators[event.aggregator] = _Aggregator(event.aggregator, "")
            latency = None if aggregator.asked_s is None else now - aggregator.asked_s
            aggregator.asked_s = None
            aggregator.asked_for = None
            if isinstance(event, AggregatorFailed):
                aggregator.failures += 1
                aggregator.refusals += int(event.refused)
                aggregator.consecutive_failures += 1
                aggregator.last_failure_s = now
                aggregator.last_failure = _quoted(event.reason)
            else:
                aggregator.answers += 1
                aggregator.consecutive_failures = 0
                aggregator.last_answer_s = now
                aggregator.last_latency_s = latency

    def notice(self, notice: Notice) -> None:
        """The core published ``notice``."""
        now = self.now_s()
        with self._lock:
            if isinstance(notice, RoundCompleted):
                outcome = notice.outcome
                row = self._row(outcome.cohort.round_id)
                row.completed_s = now
                row.model_version = outcome.new_version
                row.participants = len(outcome.cohort.participants)
                if row.metrics is None:
                    row.metrics = outcome.metrics
                self._rounds_completed += 1
            elif isinstance(notice, RoundAbandoned):
                row = self._row(notice.round_id)
                row.abandoned_for = notice.new_round_id
                row.abandon_reason = _quoted(notice.reason)
                self._rounds_abandoned += 1
                self._row(notice.new_round_id).opened_s = now
                self._touch(self._rounds[notice.new_round_id])
            elif isinstance(notice, ClientsExcluded):
                row = self._row(notice.round_id)
                row.excluded += len(notice.clients)
                row.exclusion_reason = _quoted(notice.reason)
                self._clients_excluded += len(notice.clients)
            else:
                row = self._row(notice.round_id)
                row.stalled = _quoted(notice.reason)
                self._stalls += 1
            self._touch(row)

    # ----------------------------------------------------- from the HTTP edge
    def update_answered(self, kind: str, *, round_id: int | None, refused: str | None) -> None:
        """An update request (``kind``: update, receipt or ticket) was answered: accepted
        (``refused`` None) or refused with the error class ``refused``. A request that
        names no round (a ticket) counts against the latest round seen."""
        with self._lock:
            if refused is None:
                self._accepted[kind] = self._accepted.get(kind, 0) + 1
                return
            key = (kind, refused)
            self._refused[key] = self._refused.get(key, 0) + 1
            target = round_id if round_id is not None else self._latest_round
            row = self._rounds.get(target) if target is not None else None
            if row is not None:
                row.refused[refused] = row.refused.get(refused, 0) + 1
                self._touch(row)

    # ------------------------------------------------------ from the dashboard
    def round_open(self, round_id: int) -> None:
        """The status shows ``round_id`` open: list it (opened now, if not seen before)."""
        with self._lock:
            if round_id not in self._rounds:
                row = self._row(round_id)
                row.opened_s = self.now_s()
                self._touch(row)

    def merge_history(self, history: Sequence[RoundMetrics]) -> None:
        """Take in the completed rounds' metrics (evaluations arrive after a round)."""
        with self._lock:
            for metrics in history:
                row = self._row(metrics.round_id)
                if row.metrics != metrics:
                    row.metrics = metrics
                    self._touch(row)

    # ----------------------------------------------------------------- private
    def _row(self, round_id: int) -> _Round:
        row = self._rounds.get(round_id)
        if row is None:
            row = self._rounds[round_id] = _Round(round_id)
            self._touch(row)
        if self._latest_round is None or round_id > self._latest_round:
            self._latest_round = round_id
        return row

    def _touch(self, row: _Round) -> None:
        self._revision += 1
        row.revision = self._revision

    def _ask(self, indices: Sequence[int], now: float, what: str) -> None:
        for j in indices:
            aggregator = self._aggregators.get(j)
            if aggregator is None:
                aggregator = self._aggregators[j] = _Aggregator(j, "")
            aggregator.asked_s = now
            aggregator.asked_for = what
