"""Buffered asynchronous aggregation as a pure state machine: FedBuff (Nguyen et al.
2022, "Federated Learning with Buffered Asynchronous Aggregation") and FedAsync
(Xie, Koyejo and Gupta 2019, "Asynchronous Federated Optimization").

There are no rounds. Any joined client may train at any time on the current model
version. Before it uploads, it asks which buffer is open: the buffer's base version
minus the version the client trained on is its *staleness* s, and its update's
weight is fixed then (1/√(1 + s) by default), so that under secure aggregation the
weight can go inside the shared vector. Updates staler than ``max_staleness`` are
refused. Once a buffer holds K accepted updates it is released: the coordinator
applies ``w ← w + η · Σ wᵢ Δᵢ / K`` (FedBuff, Algorithm 1) and the model version
advances. FedAsync is the special case K = 1 with a staleness-discounted mixing rate
(see :mod:`veilfl.strategy.buffered`).

Like :mod:`veilfl.protocol.sync_round`, no clock, no I/O, no global randomness.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from veilfl.declared import check_declared, setting
from veilfl.errors import (
    BufferFullError,
    ConfigurationError,
    ProtocolError,
    RoundMismatchError,
    StaleUpdateError,
    UnknownClientError,
)
from veilfl.protocol.cohort import ClosedCohort, Placement, TickOutcome
from veilfl.protocol.messages import ClientReport, Task, UpdateHeader

__all__ = [
    "BufferConfig",
    "BufferMode",
    "BufferTicket",
    "BufferedMachine",
    "polynomial_staleness_weight",
]


def polynomial_staleness_weight(staleness: int, *, exponent: float = 0.5) -> float:
    """``(1 + s)^-exponent``; exponent 0.5 gives FedBuff's 1/√(1 + s)."""
    if staleness < 0:
        raise ValueError("Staleness cannot be negative.")
    return float((1 + staleness) ** -exponent)


class BufferMode(StrEnum):
    """How buffered updates become the next model."""

    FEDBUFF = "fedbuff"
    FEDASYNC = "fedasync"


@dataclass(frozen=True)
class BufferConfig:
    """Settings of buffered asynchronous aggregation.

    Attributes:
        buffer_size: K, accepted updates per released buffer (1 for FedAsync).
        max_staleness: Updates staler than this are refused.
        max_versions: The run ends after this many released buffers.
        mode: FedBuff or FedAsync.
        staleness_exponent: a in the weight ``(1 + s)^-a``.
        max_concurrency: Most clients training at once (others are told to wait).
        poll_interval_s: How long a client that is not needed is told to wait.
        ticket_timeout_s: How long a ticket holds one of the open buffer's K places.
            A buffer issues at most K live tickets, so no more clients prove, share and
            upload for it than it can take (the others wait for a place instead of
            doing that work for a buffer that closes without them). A holder that has
            not handed in by then loses its place; its update still counts if it
            arrives while the buffer is open.
    """

    buffer_size: int = setting(flag="--buffer-size", help="FedBuff's K", at_least=1, cli_default=10)
    max_staleness: int = setting(
        flag="--max-staleness", help="refuse staler updates", at_least=0, cli_default=5
    )
    max_versions: int = setting(flag=None, help="buffers released", shown_as="--rounds")
    mode: BufferMode = setting(
        default=BufferMode.FEDBUFF,
        flag="--mode",
        help="synchronous rounds, or buffered asynchronous aggregation (--rounds = versions)",
    )
    staleness_exponent: float = setting(
        default=0.5, flag=None, help="a in the staleness weight (1 + s)^-a", at_least=0
    )
    max_concurrency: int | None = setting(
        default=None, flag="--max-concurrency", help="most clients training at once", at_least=1
    )
    poll_interval_s: float = setting(
        default=0.5, flag=None, help="how long a client that is not needed is told to wait (s)"
    )
    ticket_timeout_s: float = setting(
        default=120.0, flag=None, help="how long a ticket holds a place in the buffer (s)"
    )

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ConfigurationError("The buffer size K must be at least 1.")
        if self.mode is BufferMode.FEDASYNC and self.buffer_size != 1:
            raise ConfigurationError("FedAsync applies every update on its own: use K = 1.")
        if self.max_staleness < 0:
            raise ConfigurationError("max_staleness must not be negative.")
        if self.max_versions < 1:
            raise ConfigurationError("max_versions must be at least 1.")
        if not (self.staleness_exponent >= 0 and math.isfinite(self.staleness_exponent)):
            raise ConfigurationError("The staleness exponent must be a number >= 0.")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigurationError("max_concurrency must be at least 1, or None.")
        if not (self.ticket_timeout_s > 0 and math.isfinite(self.ticket_timeout_s)):
            raise ConfigurationError("The ticket timeout must be a positive number of seconds.")
        check_declared(self)

    def weight(self, staleness: int) -> float:
        """The weight of an update with this staleness."""
        return polynomial_staleness_weight(staleness, exponent=self.staleness_exponent)


@dataclass(frozen=True)
class BufferTicket:
    """What a client learns just before uploading: where its update goes, with what weight.

    Attributes:
        buffer_id: The open buffer (plays the role of the round for aggregators).
        base_version: The buffer's base model version.
        trained_version: The version the client trained on.
        staleness: ``base_version - trained_version``.
        weight: The update's staleness weight, fixed now.
    """

    buffer_id: int
    base_version: int
    trained_version: int
    staleness: int
    weight: float


@dataclass
class _OpenBuffer:
    buffer_id: int
    base_version: int
    opened_at: float | None = None
    accepted: dict[str, tuple[int, float]] = field(default_factory=dict)
    tickets: dict[str, float] = field(default_factory=dict)
    """Clients holding a place (not yet accepted), with when their ticket expires."""


class BufferedMachine:
    """Tickets, staleness checks and buffer releases for FedBuff and FedAsync.

    It offers the same schedule interface as
    :class:`~veilfl.protocol.sync_round.SyncRoundMachine` (tasks, admit/accept, tick,
    close, complete, abandon), so one coordinator core drives either.

    Args:
        config: Buffer settings.
        version: The current model version (after a restart, the last released one).
        next_buffer: The id of the next buffer (after a restart: one more than the last
            released buffer's id; ids only grow, also past abandoned buffers).
        weight_fn: Override of the staleness weight (default: the config's polynomial).
    """

    def __init__(
        self,
        config: BufferConfig,
        *,
        version: int = 0,
        next_buffer: int | None = None,
        weight_fn: Callable[[int], float] | None = None,
    ) -> None:
        self._config = config
        self._version = version
        self._weight = weight_fn or config.weight
        self._joined: set[str] = set()
        self._training: dict[str, int] = {}
        self._buffer = _OpenBuffer(
            buffer_id=version + 1 if next_buffer is None else next_buffer, base_version=version
        )
        self._closing = False
        self._counted: set[tuple[int, str]] = set()
        self._reports: dict[str, ClientReport] = {}
        self._ended = False

    # ----------------------------------------------------------------- queries
    @property
    def config(self) -> BufferConfig:
        """The buffer settings."""
        return self._config

    @property
    def model_version(self) -> int:
        """The current model version."""
        return self._version

    @property
    def done(self) -> bool:
        """Whether the planned number of buffers has been released."""
        return self._ended or self._version >= self._config.max_versions

    @property
    def round_id(self) -> int:
        """The buffer accepting updates now (aggregators treat it as a round)."""
        return self._buffer.buffer_id

    @property
    def deadline(self) -> None:
        """Buffers have no deadline: they close when full."""
        return None

    @property
    def pending(self) -> int:
        """Accepted updates waiting in the open buffer."""
        return len(self._buffer.accepted)

    def free_places(self, *, now: float) -> int:
        """Places in the open buffer a new ticket could take now (0 while one is applied)."""
        if self.done or self._closing:
            return 0
        held = sum(1 for expires in self._buffer.tickets.values() if expires > now)
        return max(0, self._config.buffer_size - len(self._buffer.accepted) - held)

    def is_joined(self, client_id: str) -> bool:
        """Whether ``client_id`` joined."""
        return client_id in self._joined

    def describe(self) -> dict[str, object]:
        """A JSON-ready snapshot for status pages."""
        return {
            "phase": "done" if self.done else ("closing" if self._closing else "open"),
            "round_id": self._buffer.buffer_id,
            "model_version": self._version,
            "num_rounds": self._config.max_versions,
            "joined": len(self._joined),
            "pending": len(self._buffer.accepted),
            "buffer_size": self._config.buffer_size,
        }

    # ---------------------------------------------------------------- commands
    def join(self, client_id: str, *, now: float = 0.0) -> None:
        """Register a client."""
        if not client_id:
            raise ProtocolError("A client id must not be empty.")
        self._joined.add(client_id)

    def task_for(self, client_id: str, *, now: float = 0.0) -> Task:
        """Train on the current version if concurrency allows and the client's update is
        not already in the open buffer; else wait, or stop."""
        self._require_joined(client_id)
        if self.done:
            return Task.done()
        if self._closing or client_id in self._buffer.accepted:
            # A second update for the same buffer would only repeat the first.
            return Task.wait(retry_after_s=self._config.poll_interval_s)
        limit = self._config.max_concurrency
        if client_id not in self._training and limit is not None and len(self._training) >= limit:
            return Task.wait(retry_after_s=self._config.poll_interval_s)
        self._training[client_id] = self._version
        return Task.train(round_id=self._buffer.buffer_id, model_version=self._version)

    def ticket(self, client_id: str, *, trained_version: int, now: float = 0.0) -> BufferTicket:
        """Which buffer the client's update goes to, and its weight; the ticket holds one
        of the buffer's places until ``now + ticket_timeout_s``.

        Asking again while holding a live ticket renews it and answers the same.

        Raises:
            UnknownClientError: the client never joined.
            StaleUpdateError: the update is staler than ``max_staleness``.
            BufferFullError: every place is held, or a full buffer awaits release.
            RoundMismatchError: the run is over.
        """
        placement = self._placement(client_id, trained_version=trained_version)
        buffer = self._buffer
        if client_id not in buffer.tickets and client_id not in buffer.accepted:
            for holder in [c for c, expires in buffer.tickets.items() if expires <= now]:
                del buffer.tickets[holder]
            if self.free_places(now=now) == 0:
                raise BufferFullError(
                    f"All {self._config.buffer_size} places in buffer {buffer.buffer_id} are "
                    "held by clients handing in; keep the update and ask again shortly.",
                    retry_after_s=self._config.poll_interval_s,
                )
        if client_id not in buffer.accepted:
            buffer.tickets[client_id] = now + self._config.ticket_timeout_s
        return placement

    def _placement(self, client_id: str, *, trained_version: int) -> BufferTicket:
        """The open buffer and the weight an update trained on ``trained_version`` gets."""
        self._require_joined(client_id)
        if self.done:
            raise RoundMismatchError("The run is over; no buffer is open.")
        if self._closing:
            raise BufferFullError(
                "A full buffer is being applied; keep the update and ask again shortly.",
                retry_after_s=self._config.poll_interval_s,
            )
        if trained_version > self._version or trained_version < 0:
            raise ProtocolError(
                f"Version {trained_version} does not exist yet (current: {self._version})."
            )
        staleness = self._buffer.base_version - trained_version
        if staleness > self._config.max_staleness:
            raise StaleUpdateError(
                f"The update was trained on version {trained_version}, {staleness} versions "
                f"behind the open buffer (at most {self._config.max_staleness} are "
                "accepted); fetch the current model and train again."
            )
        return BufferTicket(
            buffer_id=self._buffer.buffer_id,
            base_version=self._buffer.base_version,
            trained_version=trained_version,
            staleness=staleness,
            weight=self._weight(staleness),
        )

    def admit(self, header: UpdateHeader) -> Placement | None:
        """Where an update for buffer ``header.round_id``, trained on
        ``header.base_version``, counts; the staleness weight is computed here, never
        taken from the client. Nothing changes.

        Returns:
            Its placement, or None for a repeat of an update already counted.

        Raises:
            The errors of :meth:`ticket` but BufferFullError (an update that arrives
            counts without a place); RoundMismatchError if the buffer is not open.
        """
        if self._repeats(header.client_id, header.round_id):
            return None
        if self._closing:  # the update was shared for a buffer that can no longer take it
            self._require_open(header.round_id)
        ticket = self._placement(header.client_id, trained_version=header.base_version)
        if ticket.buffer_id != header.round_id:
            self._require_open(header.round_id)
        return Placement(
            round_id=ticket.buffer_id, trained_version=ticket.trained_version, weight=ticket.weight
        )

    def accept(self, header: UpdateHeader, placement: Placement) -> bool:
        """Count one update under its placement; nothing changes on any error.

        Returns:
            True if newly accepted, False for a repeat (already counted).

        Raises:
            RoundMismatchError: the placement's buffer is not the open one.
        """
        self._require_joined(header.client_id)
        if (placement.round_id, header.client_id) in self._counted:
            return False
        self._require_open(placement.round_id)
        if header.client_id in self._buffer.accepted:
            return False
        weight = 1.0 if placement.weight is None else placement.weight
        staleness = self._buffer.base_version - placement.trained_version
        self._buffer.accepted[header.client_id] = (staleness, weight)
        self._buffer.tickets.pop(header.client_id, None)
        self._reports[header.client_id] = ClientReport(
            client_id=header.client_id,
            num_samples=header.num_samples,
            loss=header.loss,
            aggregators=header.aggregators,
            trained_version=placement.trained_version,
            evaluation=header.evaluation,
            weight=weight,
        )
        self._counted.add((placement.round_id, header.client_id))
        self._training.pop(header.client_id, None)
        return True

    def tick(self, *, now: float) -> TickOutcome:
        """Note when the open buffer started; say when it is full and can close."""
        if self.done or self._closing:
            return TickOutcome()
        opened = None
        if self._buffer.opened_at is None:
            self._buffer.opened_at = now
            opened = self._buffer.buffer_id
        full = len(self._buffer.accepted) >= self._config.buffer_size
        return TickOutcome(opened=opened, ready_to_close=full)

    def close(self, *, now: float) -> ClosedCohort:
        """Take the full buffer out for aggregation; tickets wait until it is applied.

        Raises:
            ProtocolError: if the buffer is not full or already closing.
        """
        if self._closing or len(self._buffer.accepted) < self._config.buffer_size:
            raise ProtocolError("There is no full buffer to close.")
        self._closing = True
        buffer = self._buffer
        return ClosedCohort(
            round_id=buffer.buffer_id,
            base_version=buffer.base_version,
            participants=tuple(self._reports[c] for c in buffer.accepted),
            opened_at=now if buffer.opened_at is None else buffer.opened_at,
            closed_at=now,
            sampled=len(buffer.accepted),
        )

    def complete(self) -> int:
        """Mark the closed buffer applied; open the next. Returns the new version.

        Raises:
            ProtocolError: if no buffer is closing.
        """
        if not self._closing:
            raise ProtocolError("complete() needs a buffer closed with close().")
        for client_id in self._buffer.accepted:
            self._reports.pop(client_id, None)
        self._version += 1
        self._closing = False
        self._buffer = _OpenBuffer(buffer_id=self._buffer.buffer_id + 1, base_version=self._version)
        # Forget dedup records of buffers no ticket can name any more.
        oldest = self._buffer.buffer_id - self._config.max_staleness - 1
        self._counted = {(b, c) for b, c in self._counted if b >= oldest}
        return self._version

    def abandon(self, *, now: float) -> int:
        """Give up on the closing buffer (it cannot be aggregated): its updates are
        dropped and a new buffer, with a new id, opens on the same model version.

        Returns:
            The new buffer's id.

        Raises:
            ProtocolError: unless a buffer is closing.
        """
        if not self._closing:
            raise ProtocolError("abandon() needs a buffer closed with close().")
        for client_id in self._buffer.accepted:
            self._reports.pop(client_id, None)
        self._closing = False
        self._buffer = _OpenBuffer(
            buffer_id=self._buffer.buffer_id + 1, base_version=self._version, opened_at=now
        )
        return self._buffer.buffer_id

    def end_run(self) -> None:
        """End the run early (a privacy budget is spent)."""
        self._ended = True

    def abandon_training(self, client_id: str) -> None:
        """A client stopped training (dropped out); free its concurrency slot and any
        place its ticket held."""
        self._training.pop(client_id, None)
        self._buffer.tickets.pop(client_id, None)

    # ----------------------------------------------------------------- private
    def _repeats(self, client_id: str, buffer_id: int) -> bool:
        return (buffer_id, client_id) in self._counted or (
            buffer_id == self._buffer.buffer_id and client_id in self._buffer.accepted
        )

    def _require_open(self, buffer_id: int) -> None:
        if buffer_id != self._buffer.buffer_id or self._closing:
            raise RoundMismatchError(
                f"Buffer {buffer_id} is not open (open: {self._buffer.buffer_id}); ask for a "
                "new ticket."
            )

    def _require_joined(self, client_id: str) -> None:
        if client_id not in self._joined:
            raise UnknownClientError(f"Client {client_id!r} has not joined this run; join first.")
