"""The asynchronous coordinator: FedBuff or FedAsync behind the same edges as rounds.

Transport-free and synchronous like :class:`~veilfl.protocol.coordinator.SyncCoordinator`,
and it reuses the same aggregation backends: a buffer is aggregated exactly like a
round whose id is the buffer id and whose participants are the buffer's K clients
(plaintext, secure aggregation across aggregators, and DP-FedAvg around either).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from veilfl.errors import ConfigurationError, ProtocolError, VeilflError
from veilfl.protocol.buffered import BufferedMachine, BufferTicket
from veilfl.protocol.coordinator import (
    AggregationBackend,
    EvaluateFn,
    GlobalModel,
    RoundRecorder,
    evaluate_and_record,
)
from veilfl.protocol.messages import ClientReport, Task, UpdateHeader
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.sync_round import ClosedRound
from veilfl.strategy.buffered import FedAsync, FedBuff
from veilfl.tensors import FloatArray, TensorSpec, Weights, flatten, unflatten

logger = logging.getLogger(__name__)

__all__ = ["BufferedCoordinator"]


class BufferedCoordinator:
    """Buffered asynchronous aggregation: tickets, uploads, releases, records.

    Args:
        machine: The buffer state machine.
        spec: The model's tensors.
        initial_weights: The model at ``machine.version``.
        aggregation: How a full buffer becomes a weighted sum.
        strategy: FedBuff (any K) or FedAsync (K = 1, plaintext only).
        evaluate: Optional server-side evaluation of each new model.
        recorder: Optional persistence of each released buffer.
        clock: Wall clock for per-buffer timing (seconds).
    """

    def __init__(
        self,
        *,
        machine: BufferedMachine,
        spec: TensorSpec,
        initial_weights: Weights,
        aggregation: AggregationBackend,
        strategy: FedBuff | FedAsync,
        evaluate: EvaluateFn | None = None,
        recorder: RoundRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(strategy, FedAsync) and aggregation.plaintext() is None:
            raise ConfigurationError(
                "FedAsync applies each update on its own, which secure aggregation cannot "
                "hide; use FedBuff with a buffer of at least 2."
            )
        spec.check(initial_weights)
        self._machine = machine
        self._spec = spec
        self._flat: FloatArray = flatten(initial_weights, spec)
        self._history_weights: dict[int, FloatArray] = {machine.version: self._flat}
        self._aggregation = aggregation
        self._strategy = strategy
        self._evaluate = evaluate
        self._recorder = recorder
        self._clock = clock
        self._history: list[RoundMetrics] = []
        self._reports: dict[str, ClientReport] = {}
        self._opened_at = clock()
        self._aggregation.start_round(machine.open_buffer_id)

    @property
    def machine(self) -> BufferedMachine:
        """The buffer state machine (read it; drive it through this class)."""
        return self._machine

    @property
    def spec(self) -> TensorSpec:
        """The model's tensors."""
        return self._spec

    @property
    def history(self) -> tuple[RoundMetrics, ...]:
        """Metrics of each released buffer."""
        return tuple(self._history)

    @property
    def done(self) -> bool:
        """Whether the planned number of buffers is released."""
        return self._machine.done

    @property
    def model_version(self) -> int:
        """The current model version (cheap: no copy of the weights)."""
        return self._machine.version

    def global_model(self) -> GlobalModel:
        """The current model."""
        return GlobalModel(self._machine.version, unflatten(self._flat.copy(), self._spec))

    def join(self, client_id: str, *, now: float = 0.0) -> None:
        """Register a client."""
        self._machine.join(client_id)

    def is_joined(self, client_id: str) -> bool:
        """Whether ``client_id`` joined."""
        return self._machine.is_joined(client_id)

    def tick(self, *, now: float) -> None:
        """Release a full buffer whose release failed earlier (say, an aggregator was
        restarting); buffers otherwise release as soon as they fill."""
        if self._machine.full_buffer() is not None:
            self._release()

    def status(self) -> dict[str, object]:
        """A JSON-ready snapshot."""
        return {
            "phase": "done" if self._machine.done else "open",
            "round_id": self._machine.open_buffer_id,
            "model_version": self._machine.version,
            "num_rounds": self._machine.config.max_versions,
            "pending": self._machine.pending,
            "buffer_size": self._machine.config.buffer_size,
            "done": self._machine.done,
        }

    def task_for(self, client_id: str, *, now: float = 0.0) -> Task:
        """Train on the current version, wait, or stop."""
        if self._machine.done:
            return Task.done()
        version = self._machine.start_training(client_id)
        if version is None:
            return Task.wait(retry_after_s=self._machine.config.poll_interval_s)
        task = Task.train(round_id=self._machine.open_buffer_id, model_version=version)
        privacy = self._aggregation.client_privacy()
        if privacy is not None:
            return Task(
                kind=task.kind,
                round_id=task.round_id,
                model_version=task.model_version,
                privacy=privacy.to_json(),
            )
        return task

    def ticket(self, client_id: str, *, trained_version: int) -> BufferTicket:
        """Where the client's update goes and with what weight (see BufferedMachine)."""
        return self._machine.ticket(client_id, trained_version=trained_version)

    def submit_plaintext_update(
        self, header: UpdateHeader, delta: Weights, *, now: float = 0.0
    ) -> bool:
        """Accept a plaintext update into the buffer named by ``header.round_id``.

        ``header.base_version`` is the version the client trained on; the staleness
        weight is recomputed here from it, never taken from the client. Nothing changes
        on any error.

        Returns:
            False for a repeat of an update already counted.
        """
        plaintext = self._aggregation.plaintext()
        if plaintext is None:
            raise ProtocolError(
                "This run uses secure aggregation; upload shares to the aggregators instead."
            )
        ticket = self._current_ticket(header.client_id, header.round_id, header.base_version)
        if ticket is None:
            return False
        self._spec.check(delta)
        plaintext.add(header, delta, weight=ticket.weight)
        return self._accept(header, ticket)

    def record_share_upload(self, header: UpdateHeader, *, now: float = 0.0) -> bool:
        """Accept a receipt: the client's shares for this buffer reached the aggregators
        (``header.base_version`` is the version it trained on)."""
        ticket = self._current_ticket(header.client_id, header.round_id, header.base_version)
        if ticket is None:
            return False
        return self._accept(header, ticket)

    def abandon(self, client_id: str) -> None:
        """A client gave up on its current training."""
        self._machine.abandon(client_id)

    # ----------------------------------------------------------------- private
    def _current_ticket(
        self, client_id: str, buffer_id: int, trained_version: int
    ) -> BufferTicket | None:
        if self._machine.accept_would_repeat(client_id, buffer_id):
            return None
        ticket = self._machine.ticket(client_id, trained_version=trained_version)
        if ticket.buffer_id != buffer_id:
            self._machine.require_open(buffer_id)
        return ticket

    def _accept(self, header: UpdateHeader, ticket: BufferTicket) -> bool:
        accepted = self._machine.accept(header.client_id, ticket)
        if accepted:
            self._reports[header.client_id] = ClientReport(
                client_id=header.client_id,
                num_samples=header.num_samples,
                loss=header.loss,
                aggregators=header.aggregators,
            )
        if self._machine.full_buffer() is not None:
            try:
                self._release()
            except VeilflError as exc:  # not the client's error: tick() tries again
                logger.warning("buffer not released yet (%s); retrying on the next tick", exc)
        return accepted

    def _release(self) -> None:
        released = self._machine.full_buffer()
        assert released is not None
        started = time.perf_counter()
        closed = ClosedRound(
            round_id=released.buffer_id,
            base_version=released.base_version,
            participants=tuple(self._reports[c] for c, _, _ in released.contributions),
            opened_at=self._opened_at,
            closed_at=self._clock(),
            sampled=len(released.contributions),
        )
        aggregate = self._aggregation.aggregate(closed)
        if isinstance(self._strategy, FedAsync):
            client_id, staleness, weight = released.contributions[0]
            trained_from = self._history_weights[released.base_version - staleness]
            # the plaintext sum of one update with weight w is w·Δ
            delta = (aggregate.update.weighted_delta_sum / weight).astype(np.float32)
            new_flat = self._strategy.apply(
                self._flat, trained_from, delta, staleness_weight=weight
            )
        else:
            new_flat = self._strategy.apply(
                self._flat,
                aggregate.update.weighted_delta_sum,
                buffer_size=len(released.contributions),
            )
        aggregation_s = time.perf_counter() - started
        losses = [r.loss for r in closed.participants if r.loss is not None]
        metrics = evaluate_and_record(
            closed,
            unflatten(new_flat, self._spec),
            train_loss=(
                aggregate.mean_loss
                if aggregate.mean_loss is not None
                else (float(np.mean(losses)) if len(losses) == len(closed.participants) else None)
            ),
            epsilon=aggregate.epsilon,
            seconds=(closed.closed_at - closed.opened_at) + aggregation_s,
            evaluate=self._evaluate,
            recorder=self._recorder,
        )
        new_version = released.base_version + 1
        self._flat = new_flat
        self._machine.released()
        self._history_weights[new_version] = new_flat
        oldest = new_version - self._machine.config.max_staleness
        self._history_weights = {v: w for v, w in self._history_weights.items() if v >= oldest}
        for client_id, _, _ in released.contributions:
            self._reports.pop(client_id, None)
        self._history.append(metrics)
        self._opened_at = self._clock()
        if not self._aggregation.can_continue():
            self._machine.end_run()
        self._aggregation.start_round(self._machine.open_buffer_id)
