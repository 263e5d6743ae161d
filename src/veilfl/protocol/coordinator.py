"""The coordinator's whole decision logic, transport-free, synchronous, without a clock.

:class:`Coordinator` drives one run, in synchronous rounds or in FedBuff/FedAsync
buffers (a :class:`Schedule` decides which clients train when and which updates count),
aggregates each closed cohort through an aggregation backend, applies the strategy and
hands the new model out only once it is durably recorded. It never does I/O: what it
needs from outside it asks for as commands, and is told the answers as events
(:mod:`veilfl.protocol.effects`). The HTTP service (``veilfl.server``) performs commands
outside its lock; the simulators (``veilfl.sim``) answer them in process. Every protocol
step has exactly one implementation.

Phases of a round (or buffer)::

    collecting --cohort closes--> aggregating --aggregate ready--> persisting
        ^                            |  (PersistRound)                 |
        |                            | stalled a round timeout         | RoundPersisted
        +--- next round <------------+ (abandoned: new round id) <-----+ (RoundCompleted)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from veilfl.errors import ProtocolError, UnknownClientError
from veilfl.protocol.aggregation import AggregationBackend, AggregationJob
from veilfl.protocol.buffered import BufferTicket
from veilfl.protocol.cohort import ClosedCohort, Placement, TickOutcome
from veilfl.protocol.effects import (
    Effect,
    Event,
    PersistRound,
    RoundAbandoned,
    RoundCompleted,
    RoundOutcome,
    RoundPersisted,
)
from veilfl.protocol.messages import Task, TaskKind, UpdateHeader
from veilfl.protocol.metrics import RoundMetrics
from veilfl.strategy.base import ServerStrategy, StatefulStrategy
from veilfl.tensors import FloatArray, TensorSpec, Weights, flatten, unflatten

if TYPE_CHECKING:  # the accountant behind it imports dp-accounting (scipy)
    from veilfl.protocol.private_aggregation import PrivateAggregation
    from veilfl.protocol.private_ftrl import FtrlAggregation

__all__ = ["Coordinator", "CoordinatorPhase", "GlobalModel", "Schedule"]


class Schedule(Protocol):
    """Who trains when, and which updates count: rounds or buffers.

    :class:`~veilfl.protocol.sync_round.SyncRoundMachine` and
    :class:`~veilfl.protocol.buffered.BufferedMachine` implement it.
    """

    @property
    def done(self) -> bool:
        """Whether the run is over."""
        ...

    @property
    def model_version(self) -> int:
        """The current global model version."""
        ...

    @property
    def round_id(self) -> int:
        """The round (or buffer) open now, or the next one."""
        ...

    @property
    def deadline(self) -> float | None:
        """When the open round closes at the latest (None: no deadline)."""
        ...

    def is_joined(self, client_id: str) -> bool:
        """Whether ``client_id`` joined."""
        ...

    def describe(self) -> dict[str, object]:
        """A JSON-ready snapshot for status pages."""
        ...

    def join(self, client_id: str, *, now: float) -> None:
        """Register a client."""

    def task_for(self, client_id: str, *, now: float) -> Task:
        """What ``client_id`` should do now."""
        ...

    def ticket(self, client_id: str, *, trained_version: int, now: float) -> BufferTicket:
        """Where a buffered update goes, and its weight."""
        ...

    def free_places(self, *, now: float) -> int:
        """How many more tickets the open buffer could issue now (0 without buffers)."""
        ...

    def admit(self, header: UpdateHeader) -> Placement | None:
        """Where an update would count (None: a repeat); changes nothing."""
        ...

    def accept(self, header: UpdateHeader, placement: Placement) -> bool:
        """Count an admitted update; False for a repeat."""
        ...

    def tick(self, *, now: float) -> TickOutcome:
        """Advance time."""
        ...

    def close(self, *, now: float) -> ClosedCohort:
        """Fix the cohort that is ready to close."""
        ...

    def complete(self) -> int:
        """The closed cohort was applied; return the new model version."""
        ...

    def abandon(self, *, now: float) -> int:
        """The closed cohort cannot be aggregated; return the new round's id."""
        ...

    def abandon_training(self, client_id: str) -> None:
        """A client gave up on its task (it dropped out)."""

    def end_run(self) -> None:
        """End the run early (a privacy budget is spent)."""


class CoordinatorPhase(StrEnum):
    """What the coordinator is doing with the current round (or buffer)."""

    COLLECTING = "collecting"
    AGGREGATING = "aggregating"
    PERSISTING = "persisting"
    DONE = "done"


@dataclass(frozen=True)
class GlobalModel:
    """A global model version as named tensors."""

    version: int
    weights: Weights


class Coordinator:
    """One run's coordinator core (see the module docstring).

    Args:
        schedule: Rounds or buffers, positioned at the next round.
        spec: Names and shapes of the model's tensors.
        initial_weights: The global model at ``schedule.model_version``.
        aggregation: How a closed cohort becomes an aggregate.
        strategy: How an aggregate becomes the next model.
        round_timeout_s: How long aggregation may stall after a cohort closed before the
            round is abandoned and run again under a new id.
        keep_versions: How many recent model versions to keep for strategies that read
            an earlier model (FedAsync: the staleness bound plus one).
        privacy: Under DP, the private backend (usually ``aggregation`` itself), whose
            report goes into every round's metrics and status and whose state into
            every persisted round.
    """

    def __init__(
        self,
        *,
        schedule: Schedule,
        spec: TensorSpec,
        initial_weights: Weights,
        aggregation: AggregationBackend,
        strategy: ServerStrategy,
        round_timeout_s: float,
        keep_versions: int = 1,
        privacy: PrivateAggregation | FtrlAggregation | None = None,
    ) -> None:
        spec.check(initial_weights)
        self._schedule = schedule
        self._spec = spec
        self._flat: FloatArray = flatten(initial_weights, spec)
        self._versions: dict[int, FloatArray] = {schedule.model_version: self._flat}
        self._keep_versions = max(1, keep_versions)
        self._aggregation = aggregation
        self._strategy = strategy
        self._privacy = privacy
        self._round_timeout_s = round_timeout_s
        self._history: list[RoundMetrics] = []
        self._outbox: list[Effect] = []
        self._cohort: ClosedCohort | None = None
        self._job: AggregationJob | None = None
        self._pending: RoundOutcome | None = None

    # ----------------------------------------------------------------- queries
    @property
    def spec(self) -> TensorSpec:
        """The model's tensor names and shapes."""
        return self._spec

    @property
    def schedule(self) -> Schedule:
        """The rounds or buffers (read them; drive them through this class)."""
        return self._schedule

    @property
    def strategy(self) -> ServerStrategy:
        """How aggregates become models (FedAvg, FedBuff, an adaptive optimiser, ...)."""
        return self._strategy

    @property
    def aggregation(self) -> AggregationBackend:
        """The aggregation backend."""
        return self._aggregation

    @property
    def history(self) -> tuple[RoundMetrics, ...]:
        """Metrics of the rounds this coordinator completed (without evaluation)."""
        return tuple(self._history)

    @property
    def phase(self) -> CoordinatorPhase:
        """What the coordinator is doing now."""
        if self._pending is not None:
            return CoordinatorPhase.PERSISTING
        if self._job is not None:
            return CoordinatorPhase.AGGREGATING
        if self._schedule.done:
            return CoordinatorPhase.DONE
        return CoordinatorPhase.COLLECTING

    @property
    def done(self) -> bool:
        """Whether the run is over (its last model is recorded and served)."""
        return self.phase is CoordinatorPhase.DONE

    @property
    def model_version(self) -> int:
        """The served model version (cheap: no copy of the weights)."""
        return self._schedule.model_version

    def global_model(self) -> GlobalModel:
        """The served global model."""
        return GlobalModel(self.model_version, unflatten(self._flat.copy(), self._spec))

    def weights_at(self, version: int) -> FloatArray:
        """A recent model version, flat (the strategies' model history).

        Raises:
            ProtocolError: if that version is no longer kept.
        """
        try:
            return self._versions[version]
        except KeyError:
            raise ProtocolError(f"Model version {version} is no longer kept.") from None

    def is_joined(self, client_id: str) -> bool:
        """Whether ``client_id`` joined."""
        return self._schedule.is_joined(client_id)

    def status(self) -> dict[str, object]:
        """A JSON-ready snapshot."""
        status = self._schedule.describe()
        status["phase"] = (
            self.phase.value if self.phase is not CoordinatorPhase.COLLECTING else (status["phase"])
        )
        if self._job is not None:
            status["aggregation"] = self._job.status()
        if self._privacy is not None:
            status["privacy"] = self._privacy.report().to_json()
            status["clip_norm"] = self._privacy.clip_norm  # adaptive: the next round's C
        status["done"] = self.done
        return status

    # ---------------------------------------------------------------- requests
    def join(self, client_id: str, *, now: float) -> None:
        """Register a client (idempotent)."""
        self._schedule.join(client_id, now=now)

    def task_for(self, client_id: str, *, now: float) -> Task:
        """Advance time, then tell ``client_id`` what to do.

        Raises:
            UnknownClientError: before anything changes, if the client never joined.
        """
        self._require_joined(client_id)
        self.tick(now=now)
        if self.phase is CoordinatorPhase.DONE:
            return Task.done()
        task = self._schedule.task_for(client_id, now=now)
        if task.kind is TaskKind.TRAIN:
            privacy = self._aggregation.client_privacy()
            if privacy is not None:
                task = replace(task, privacy=privacy)
        return task

    def drop_out(self, client_id: str) -> None:
        """A client gave up on its task: free what it held (a buffered run's slot)."""
        self._schedule.abandon_training(client_id)

    def ticket(self, client_id: str, *, trained_version: int, now: float) -> BufferTicket:
        """Where a buffered update goes and with what weight; the ticket holds a place in
        the open buffer for a while.

        Raises:
            ProtocolError: in a run with synchronous rounds (and see BufferedMachine).
            BufferFullError: no place is free now; ask again after ``retry_after_s``.
        """
        return self._schedule.ticket(client_id, trained_version=trained_version, now=now)

    def free_places(self, *, now: float) -> int:
        """How many more tickets the open buffer could issue now (0 without buffers)."""
        return self._schedule.free_places(now=now)

    def submit_plaintext_update(self, header: UpdateHeader, delta: Weights, *, now: float) -> bool:
        """Accept one client's plaintext update (plaintext aggregation only).

        Validates everything before changing anything: a rejected update leaves the
        round exactly as it was.

        Returns:
            True if accepted now, False if it repeated an accepted one.

        Raises:
            ProtocolError: (a subclass) naming what is wrong.
        """
        plaintext = self._aggregation.plaintext()
        if plaintext is None:
            raise ProtocolError(
                "This run uses secure aggregation; upload shares to the aggregators instead."
            )
        placement = self._schedule.admit(header)
        if placement is None:
            return False
        self._spec.check(delta)
        plaintext.add(header, delta, weight=placement.weight)
        self._schedule.accept(header, placement)
        self.tick(now=now)
        return True

    def record_receipt(self, header: UpdateHeader, *, now: float) -> bool:
        """Note a client's word that its shares reached the aggregators (secure
        aggregation). The participant list is later built from what the aggregators
        actually hold: a false receipt only gets its sender excluded.

        Returns:
            False if it repeated an accepted receipt.

        Raises:
            ProtocolError: (a subclass) for a malformed receipt or one that does not fit
                the open round; nothing changes.
        """
        self._aggregation.check_receipt(header)
        placement = self._schedule.admit(header)
        if placement is None:
            return False
        accepted = self._schedule.accept(header, placement)
        self.tick(now=now)
        return accepted

    def tick(self, *, now: float) -> None:
        """Advance time: open, close and aggregate rounds; abandon a stalled one."""
        if self._pending is not None:
            return  # the new model is being recorded; nothing moves until it is
        if self._job is not None:
            self._job.tick(now=now)
            self._pump(now=now)
            if self._job is not None:
                assert self._cohort is not None
                if now - self._cohort.closed_at >= self._round_timeout_s:
                    self._abandon(now=now)
            return
        outcome = self._schedule.tick(now=now)
        if outcome.opened is not None:
            self._aggregation.open_cohort(outcome.opened)
        if outcome.ready_to_close:
            self._cohort = self._schedule.close(now=now)
            self._job = self._aggregation.begin(self._cohort)
            self._pump(now=now)

    def handle(self, event: Event, *, now: float) -> None:
        """Take the answer to a command (answers about other rounds are ignored)."""
        if isinstance(event, RoundPersisted):
            if self._pending is not None and event.round_id == self._pending.cohort.round_id:
                self._serve(now=now)
            return
        if self._job is not None:
            self._job.handle(event)
            self._pump(now=now)

    def drain(self) -> list[Effect]:
        """Commands to perform and notices to publish, queued since the last call."""
        out, self._outbox = self._outbox, []
        return out

    # ----------------------------------------------------------------- private
    def _require_joined(self, client_id: str) -> None:
        if not self._schedule.is_joined(client_id):
            raise UnknownClientError(f"Client {client_id!r} has not joined this run; join first.")

    def _pump(self, *, now: float) -> None:
        """Move the job's effects to the outbox; apply its aggregate once ready."""
        job = self._job
        assert job is not None and self._cohort is not None
        self._outbox.extend(job.drain())
        aggregate = job.result
        if aggregate is None:
            return
        reported = self._cohort
        cohort = reported.restricted_to(aggregate.participants)
        kept = {p.client_id for p in cohort.participants}
        excluded = tuple(
            sorted(p.client_id for p in reported.participants if p.client_id not in kept)
        )
        new_flat = self._strategy.apply(self._flat, aggregate, history=self)
        state = self._strategy.state() if isinstance(self._strategy, StatefulStrategy) else None
        metrics = RoundMetrics(
            round_id=cohort.round_id,
            num_clients=len(cohort.participants),
            train_loss=aggregate.mean_loss,
            test_loss=None,
            test_accuracy=None,
            seconds=now - cohort.opened_at,
            epsilon=aggregate.epsilon,
            excluded=excluded,
        ).with_federated(aggregate.evaluation)
        privacy = self._privacy
        if privacy is not None:
            report = privacy.report()
            metrics = replace(
                metrics,
                epsilon=report.epsilon_public,
                epsilon_coordinator=report.epsilon_coordinator,
                accounting=report.accounting,
                delta=report.delta,
            )
        self._pending = RoundOutcome(
            cohort=cohort,
            metrics=metrics,
            new_version=cohort.base_version + 1,
            weights=new_flat,
            strategy_state=state,
            privacy=None if privacy is None else privacy.state(),
        )
        self._job = None
        self._cohort = None
        self._outbox.append(PersistRound(self._pending))

    def _serve(self, *, now: float) -> None:
        """The pending outcome is recorded: make its model the served one."""
        outcome = self._pending
        assert outcome is not None
        self._pending = None
        self._flat = outcome.weights
        version = self._schedule.complete()
        self._versions[version] = outcome.weights
        for old in [v for v in self._versions if v <= version - self._keep_versions]:
            del self._versions[old]
        self._history.append(outcome.metrics)
        self._outbox.append(RoundCompleted(outcome))
        if not self._aggregation.can_continue():
            self._schedule.end_run()
        self.tick(now=now)

    def _abandon(self, *, now: float) -> None:
        assert self._job is not None and self._cohort is not None
        stuck, reason = self._cohort, self._job.status()
        self._job = None
        self._cohort = None
        new_round = self._schedule.abandon(now=now)
        self._aggregation.open_cohort(new_round)
        self._outbox.append(
            RoundAbandoned(
                stuck.round_id,
                new_round,
                f"not aggregated {now - stuck.closed_at:.0f} s after it closed ({reason})",
            )
        )
