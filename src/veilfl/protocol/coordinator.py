"""The coordinator's whole decision logic, transport-free and synchronous.

:class:`SyncCoordinator` owns the round state machine, the global model and the
aggregation of one round, and turns a closed round into the next model version. It
does no networking and reads no clock: the HTTP server (``veilfl.server``) and the
in-process simulator (``veilfl.sim``) call it with ``now`` and with decoded messages,
so every protocol step has exactly one implementation.

Two things are injected because they touch the outside world:

* an :class:`AggregationBackend`, which turns a closed round's participant list into
  an :class:`~veilfl.strategy.AggregateUpdate` (plaintext: sums the updates it was
  given; secure aggregation: asks the aggregators for their share sums);
* a :class:`RoundRecorder`, which persists each completed round (SQLite and
  checkpoints on the server; nothing, or memory, in the simulator).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from veilfl.errors import ProtocolError, UnknownClientError, UpdateRejectedError, VeilflError
from veilfl.privacy.clipping import clip_l2
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.protocol.messages import ClientReport, Task, TaskKind, UpdateHeader
from veilfl.protocol.metrics import Evaluation, RoundMetrics
from veilfl.protocol.sync_round import ClosedRound, RoundPhase, SyncRoundMachine
from veilfl.strategy.fedavg import AggregateUpdate, FedAvg, WeightedSum
from veilfl.tensors import FloatArray, TensorSpec, Weights, flatten, unflatten

logger = logging.getLogger(__name__)

__all__ = [
    "AggregationBackend",
    "EvaluateFn",
    "GlobalModel",
    "PlaintextAggregation",
    "RoundAggregate",
    "RoundRecorder",
    "SyncCoordinator",
    "evaluate_and_record",
]

EvaluateFn = Callable[[Weights], Evaluation]


@dataclass(frozen=True)
class RoundAggregate:
    """What an aggregation backend returns for a closed round.

    Attributes:
        update: The weighted delta sum and total weight.
        participants: The clients the sums cover (may be fewer than reported, when
            some clients' shares did not reach enough aggregators).
        mean_loss: The weighted mean training loss, when the backend computed it
            (secure aggregation); otherwise it comes from the clients' reports.
        within_bound_count: Under DP, how many updates needed no clipping (noised
            where the noise placement asks for it).
        epsilon: Under DP, the privacy spent once this round is released.
    """

    update: AggregateUpdate
    participants: tuple[str, ...]
    mean_loss: float | None = None
    within_bound_count: float | None = None
    epsilon: float | None = None


class AggregationBackend(Protocol):
    """Turns a closed round into its aggregate."""

    def start_round(self, round_id: int) -> None:
        """Forget everything from earlier rounds (or an earlier attempt at this one)."""

    def aggregate(self, closed: ClosedRound) -> RoundAggregate:
        """The weighted sum over the participants it can vouch for."""
        ...

    def client_privacy(self) -> ClientPrivacyPlan | None:
        """What clients must do to their updates this round (None: nothing)."""
        ...

    def can_continue(self) -> bool:
        """Whether another round may be released (False once a DP budget is spent)."""
        ...

    def plaintext(self) -> PlaintextAggregation | None:
        """The backend that takes plaintext updates, if updates travel in the clear."""
        ...


class RoundRecorder(Protocol):
    """Persists completed rounds."""

    def record_round(
        self, metrics: RoundMetrics, closed: ClosedRound, *, new_version: int, weights: Weights
    ) -> None:
        """Durably record a completed round and the model it produced."""


class PlaintextAggregation:
    """Plain FedAvg aggregation: the coordinator sees each update and sums it at once.

    Memory is O(model size): updates are folded into a running sum as they arrive.

    Args:
        spec: The model's tensors.
        uniform_weights: Weigh every client the same (DP-FedAvg).
    """

    def __init__(self, spec: TensorSpec, *, uniform_weights: bool = False) -> None:
        self._spec = spec
        self._clip_norm: float | None = None
        self._uniform = uniform_weights
        self._round_id: int | None = None
        self._sum = WeightedSum(spec.total_size)
        self._clients: set[str] = set()
        self._within_bound = 0

    def start_round(self, round_id: int) -> None:
        self._round_id = round_id
        self._sum = WeightedSum(self._spec.total_size)
        self._clients = set()
        self._within_bound = 0

    def clip_on_arrival(self, clip_norm: float | None) -> None:
        """Central DP over plaintext (a trusted coordinator): clip each update to
        ``clip_norm`` as it arrives and count those that needed no clipping."""
        self._clip_norm = clip_norm

    def client_privacy(self) -> ClientPrivacyPlan | None:
        """Plaintext clients do nothing to their updates."""
        return None

    def can_continue(self) -> bool:
        """No budget here."""
        return True

    def plaintext(self) -> PlaintextAggregation:
        """Updates come here in the clear."""
        return self

    def add(self, header: UpdateHeader, delta: Weights, *, weight: float | None = None) -> None:
        """Fold one validated update into the round's sum.

        Args:
            header: The update's metadata.
            delta: The update.
            weight: Its weight, when the protocol fixes it (a buffered update's staleness
                weight); by default the sample count, or 1 under DP.

        Raises:
            UpdateRejectedError: if the header states no sample count.
        """
        if header.round_id != self._round_id:
            raise ProtocolError(f"Round {header.round_id} is not being aggregated.")
        if header.num_samples is None or header.loss is None:
            raise UpdateRejectedError(
                "A plaintext update must state num_samples and loss in its metadata."
            )
        vector = flatten(delta, self._spec)
        if self._clip_norm is not None:
            clipped = clip_l2(vector, clip_norm=self._clip_norm)
            vector = clipped.vector.astype(np.float32)
            self._within_bound += int(clipped.within_bound)
        if weight is None:
            weight = 1.0 if self._uniform else float(header.num_samples)
        self._sum.add(vector, weight=weight)
        self._clients.add(header.client_id)

    def aggregate(self, closed: ClosedRound) -> RoundAggregate:
        """The running sum, which must cover exactly the round's participants."""
        if set(closed.participant_ids) != self._clients:
            raise ProtocolError("The participant list does not match the updates that were summed.")
        return RoundAggregate(
            update=self._sum.result(),
            participants=closed.participant_ids,
            within_bound_count=float(self._within_bound) if self._clip_norm else None,
        )


@dataclass(frozen=True)
class GlobalModel:
    """A global model version as named tensors."""

    version: int
    weights: Weights


class SyncCoordinator:
    """Synchronous FedAvg rounds: sampling, collection, aggregation, evaluation, records.

    Args:
        machine: The round state machine (already positioned at the next round).
        spec: Names and shapes of the model's tensors.
        initial_weights: The global model at ``machine.model_version``.
        aggregation: How a closed round becomes an aggregate.
        strategy: How an aggregate becomes the next model.
        evaluate: Optional server-side evaluation of each new model.
        recorder: Optional persistence of each completed round.
    """

    def __init__(
        self,
        *,
        machine: SyncRoundMachine,
        spec: TensorSpec,
        initial_weights: Weights,
        aggregation: AggregationBackend,
        strategy: FedAvg,
        evaluate: EvaluateFn | None = None,
        recorder: RoundRecorder | None = None,
    ) -> None:
        spec.check(initial_weights)
        self._machine = machine
        self._spec = spec
        self._flat: FloatArray = flatten(initial_weights, spec)
        self._aggregation = aggregation
        self._strategy = strategy
        self._evaluate = evaluate
        self._recorder = recorder
        self._history: list[RoundMetrics] = []
        self._closed: ClosedRound | None = None

    # ----------------------------------------------------------------- queries
    @property
    def machine(self) -> SyncRoundMachine:
        """The round state machine (read it; drive it through this class)."""
        return self._machine

    @property
    def spec(self) -> TensorSpec:
        """The model's tensor names and shapes."""
        return self._spec

    @property
    def history(self) -> tuple[RoundMetrics, ...]:
        """Metrics of the rounds this coordinator completed (since it started)."""
        return tuple(self._history)

    @property
    def done(self) -> bool:
        """Whether every planned round is complete."""
        return self._machine.phase is RoundPhase.DONE

    @property
    def model_version(self) -> int:
        """The current model version (cheap: no copy of the weights)."""
        return self._machine.model_version

    def global_model(self) -> GlobalModel:
        """The current global model."""
        return GlobalModel(self._machine.model_version, unflatten(self._flat.copy(), self._spec))

    def is_joined(self, client_id: str) -> bool:
        """Whether ``client_id`` joined."""
        return self._machine.is_joined(client_id)

    def status(self) -> dict[str, object]:
        """A JSON-ready snapshot."""
        status = self._machine.status()
        return {
            "phase": status.phase.value,
            "round_id": status.round_id,
            "model_version": status.model_version,
            "num_rounds": self._machine.config.num_rounds,
            "joined": status.joined,
            "sampled": status.sampled,
            "reported": status.reported,
            "done": self.done,
        }

    # ---------------------------------------------------------------- commands
    def join(self, client_id: str, *, now: float) -> None:
        """Register a client."""
        self._machine.join(client_id, now=now)

    def task_for(self, client_id: str, *, now: float) -> Task:
        """Advance time, then tell ``client_id`` what to do.

        Raises:
            UnknownClientError: before anything changes, if the client never joined.
        """
        if not self._machine.is_joined(client_id):
            raise UnknownClientError(f"Client {client_id!r} has not joined this run; join first.")
        self._advance(now=now)
        task = self._machine.task_for(client_id, now=now)
        if task.kind is TaskKind.TRAIN:
            privacy = self._aggregation.client_privacy()
            if privacy is not None:
                task = replace(task, privacy=privacy.to_json())
        return task

    def submit_plaintext_update(self, header: UpdateHeader, delta: Weights, *, now: float) -> bool:
        """Accept one client's plaintext update (plaintext aggregation only).

        Validates everything before changing anything: a rejected update leaves the
        round exactly as it was.

        Returns:
            True if accepted now, False if it was a duplicate of an accepted one.

        Raises:
            ProtocolError: (a subclass) naming what is wrong.
        """
        plaintext = self._aggregation.plaintext()
        if plaintext is None:
            raise ProtocolError(
                "This run uses secure aggregation; upload shares to the aggregators instead."
            )
        if not self._machine.check_update(header):
            return False
        self._spec.check(delta)
        plaintext.add(header, delta)
        self._machine.accept_update(header)
        self._advance(now=now)
        return True

    def record_share_upload(self, header: UpdateHeader, *, now: float) -> bool:
        """Note that a client's update reached the aggregators (secure aggregation)."""
        accepted = self._machine.accept_update(header)
        self._advance(now=now)
        return accepted

    def _advance(self, *, now: float) -> None:
        """:meth:`tick` on behalf of a client's request. If finishing the round fails
        (an aggregator is down or restarting), that is not the client's error: its
        request still succeeds, and the next :meth:`tick` tries again with the same
        participant list."""
        try:
            self.tick(now=now)
        except VeilflError as exc:
            logger.warning("round not finished yet (%s); retrying on the next tick", exc)

    def tick(self, *, now: float) -> RoundMetrics | None:
        """Advance time; if the open round can close, aggregate it and apply the result.

        Returns:
            The completed round's metrics, or None if no round completed.
        """
        if self._closed is not None:
            # An earlier attempt to finish this round failed (say, an aggregator was
            # unreachable); the participant list stays fixed, so try again, for up to
            # one round timeout; then the round is abandoned and run again.
            try:
                return self._finish_round(now=now)
            except VeilflError:
                if now - self._closed.closed_at < self._machine.config.round_timeout_s:
                    raise
                self._abandon_round(now=now)
                return None
        outcome = self._machine.tick(now=now)
        if outcome.opened is not None:
            self._aggregation.start_round(outcome.opened)
        if not outcome.ready_to_close:
            return None
        self._closed = self._machine.close(now=now)
        return self._finish_round(now=now)

    # ----------------------------------------------------------------- private
    def _abandon_round(self, *, now: float) -> None:
        assert self._closed is not None
        stuck = self._closed
        self._closed = None
        reopened = self._machine.abandon(now=now)
        self._aggregation.start_round(reopened)
        logger.warning(
            "round %d could not be aggregated for %.0f s; abandoned: round %d runs it again "
            "on model version %d with a fresh sample",
            stuck.round_id,
            now - stuck.closed_at,
            reopened,
            stuck.base_version,
        )

    def _finish_round(self, *, now: float) -> RoundMetrics:
        assert self._closed is not None
        started = time.perf_counter()
        aggregate = self._aggregation.aggregate(self._closed)
        kept = set(aggregate.participants)
        closed = replace(
            self._closed,
            participants=tuple(p for p in self._closed.participants if p.client_id in kept),
        )
        new_flat = self._strategy.apply(self._flat, aggregate.update)
        aggregation_s = time.perf_counter() - started
        metrics = evaluate_and_record(
            closed,
            unflatten(new_flat, self._spec),
            train_loss=(
                aggregate.mean_loss
                if aggregate.mean_loss is not None
                else _weighted_mean_loss(closed.participants)
            ),
            epsilon=aggregate.epsilon,
            seconds=(now - closed.opened_at) + aggregation_s,
            evaluate=self._evaluate,
            recorder=self._recorder,
        )
        self._flat = new_flat
        self._closed = None
        self._machine.complete()
        if not self._aggregation.can_continue():
            self._machine.end_run()
        self._history.append(metrics)
        self.tick(now=now)
        return metrics


def evaluate_and_record(
    closed: ClosedRound,
    new_weights: Weights,
    *,
    train_loss: float | None,
    epsilon: float | None,
    seconds: float,
    evaluate: EvaluateFn | None,
    recorder: RoundRecorder | None,
) -> RoundMetrics:
    """Evaluate the model a closed round (or released buffer) produced, and record it.

    Shared by the synchronous and the buffered coordinators.
    """
    evaluation = evaluate(new_weights) if evaluate is not None else None
    metrics = RoundMetrics(
        round_id=closed.round_id,
        num_clients=len(closed.participants),
        train_loss=train_loss,
        test_loss=None if evaluation is None else evaluation.loss,
        test_accuracy=None if evaluation is None else evaluation.accuracy,
        seconds=seconds,
        epsilon=epsilon,
    )
    if recorder is not None:
        recorder.record_round(
            metrics, closed, new_version=closed.base_version + 1, weights=new_weights
        )
    return metrics


def _weighted_mean_loss(reports: tuple[ClientReport, ...]) -> float | None:
    """Sample-weighted mean of the reported losses (None where clients report none)."""
    if any(r.loss is None or r.num_samples is None for r in reports):
        return None
    weights = np.array([r.num_samples for r in reports], dtype=np.float64)
    losses = np.array([r.loss for r in reports], dtype=np.float64)
    return float(np.average(losses, weights=weights))
