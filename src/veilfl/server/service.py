"""The coordinator's async edge: the sans-I/O core behind one asyncio lock.

Every client request becomes one call on :class:`~veilfl.protocol.coordinator.Coordinator`
under the lock; the call only changes state and queues effects. A background runner
drains those effects and performs the commands (asking the aggregators, writing the
round's checkpoint) **outside** the lock, concurrently, then hands each answer back to
the core. So while a round closes, status, task and upload requests are answered at
once; nothing under the lock waits on the network or the disk. A ticket request that
finds every place of the open buffer held waits here, off the lock, until one frees
(or ``ticket_wait_s`` passes), so clients that have trained queue for a place instead
of polling or doing work for a buffer that cannot take them. Evaluation, the metrics
files and the log line of a completed round are consumers of its ``RoundCompleted``
notice, run one after another off the request path. Every command, answer and notice
is also shown to the service's :class:`~veilfl.server.run_observer.RunObserver`, which
the dashboard and ``/metrics`` read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from veilfl.errors import (
    BufferFullError,
    ForbiddenError,
    ProtocolError,
    RoundMismatchError,
    UnknownClientError,
    VeilflError,
)
from veilfl.protocol.buffered import BufferTicket
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.effects import (
    AggregationStalled,
    ClientsExcluded,
    Command,
    Event,
    Notice,
    RoundAbandoned,
    RoundCompleted,
    RoundOutcome,
)
from veilfl.protocol.messages import RunInfo, Task, UpdateHeader
from veilfl.protocol.run_description import RunDescription
from veilfl.secagg.run_consent import RunConsent
from veilfl.server.run_observer import RunObserver
from veilfl.tensors import Weights
from veilfl.wire.tensor_codec import decode_weights, encode_weights

__all__ = ["CommandPerformer", "CoordinatorService", "EncodedModel"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class CommandPerformer(Protocol):
    """Performs the core's commands (I/O) and returns the answers as events."""

    async def perform(self, command: Command) -> list[Event]:
        """Carry out ``command``; never raise for a failure that the core should hear
        about (an aggregator down becomes an ``AggregatorFailed`` event)."""
        ...


@dataclass(frozen=True)
class EncodedModel:
    """A global model version, encoded once for every client that downloads it."""

    version: int
    body: bytes


class CoordinatorService:
    """Serialises access to the coordinator core; performs its commands off the lock.

    Args:
        coordinator: The protocol core.
        description: The run's declared spec (served at ``/v1/run``); a secure run's
            aggregators' consents join it when it opens.
        performer: Carries out the core's commands.
        on_round: Called (in a worker thread, one round after another) with each
            completed round, to evaluate and record it; returns nothing.
        on_served: Called at once (on the event loop) when a round's model is served.
        max_update_bytes: Largest update body accepted.
        clock: Monotonic clock in seconds.
        opened: Whether training may start at once. A secure run starts closed: it
            enrolls clients and describes itself, but gives no training task (and no
            ticket) until :meth:`open` is called with the aggregators' signed consents
            to the run (see :mod:`veilfl.server.aggregator_check`).
        ticket_wait_s: How long a ticket request waits for a free place in the open
            buffer before it is answered "ask again" (409 with Retry-After).
    """

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        description: RunDescription,
        performer: CommandPerformer,
        on_round: Callable[[RoundOutcome], None] | None = None,
        on_served: Callable[[RoundOutcome], None] | None = None,
        max_update_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        opened: bool = True,
        ticket_wait_s: float = 20.0,
    ) -> None:
        self._core = coordinator
        self._ticket_wait_s = ticket_wait_s
        self._place_waiters: deque[asyncio.Future[None]] = deque()
        self._promised = 0  # waiters woken for a free place that have not asked again yet
        self._opened = opened
        self._description = description
        self._performer = performer
        self._on_round = on_round
        self._on_served = on_served
        self._max_update_bytes = max_update_bytes
        self._clock = clock
        self._lock = asyncio.Lock()
        self._encode_lock = asyncio.Lock()
        self._encoded: EncodedModel | None = None
        self._wake = asyncio.Event()
        self._rounds: asyncio.Queue[RoundOutcome] = asyncio.Queue()
        self._background: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self.finished = asyncio.Event()
        secure = description.info.secure
        self.observer = RunObserver(
            aggregators={} if secure is None else {a.index: a.url for a in secure.aggregators},
            clock=clock,
        )

    @property
    def run_info(self) -> RunInfo:
        """The run, as its parties read it."""
        return self._description.info

    @property
    def description(self) -> RunDescription:
        """The run's declared spec, with the consents its aggregators signed so far."""
        return self._description

    @property
    def core(self) -> Coordinator:
        """The protocol core (read it; drive it through this service)."""
        return self._core

    @property
    def opened(self) -> bool:
        """Whether training tasks are given (see ``opened``)."""
        return self._opened

    async def open(self, consents: Mapping[int, RunConsent] | None = None) -> None:
        """Start giving training tasks; with ``consents``, first publish the aggregators'
        signed consents with the run's description (clients check them).

        Raises:
            ProtocolError: if the run is open already.
        """
        async with self._lock:
            if self._opened:
                raise ProtocolError("The run is open already.")
            if consents is not None:
                self._description = self._description.with_consents(consents)
            self._opened = True
        self._wake.set()

    async def start(self, *, tick_interval_s: float = 0.25) -> None:
        """Start the ticker (round deadlines), the effect runner and the round consumer."""
        self._background = [
            asyncio.create_task(self._tick_forever(tick_interval_s)),
            asyncio.create_task(self._run_effects()),
            asyncio.create_task(self._consume_rounds()),
        ]
        self._wake.set()

    async def stop(self) -> None:
        """Stop the background tasks (commands in flight are cancelled)."""
        for task in [*self._background, *self._in_flight]:
            task.cancel()
        for task in [*self._background, *self._in_flight]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def join(self, client_id: str) -> None:
        """Let an enrolled client take part (idempotent; enrollment persists it)."""
        await self._call_inline(self._core.join, client_id, now=self._clock())

    async def task_for(self, client_id: str) -> Task:
        """What a client should do now (to wait, until the run is open)."""
        if not self._opened:
            async with self._lock:
                joined = self._core.is_joined(client_id)
            if not joined:
                raise UnknownClientError(f"Client {client_id} has not joined this run.")
            return Task.wait(retry_after_s=1.0)
        return await self._call(self._core.task_for, client_id, now=self._clock())

    async def model(self) -> EncodedModel:
        """The served global model, encoded (once per version, outside the core's lock)."""
        async with self._lock:
            version = self._core.model_version
            cached = self._encoded
        if cached is not None and cached.version == version:
            return cached
        async with self._encode_lock:
            if self._encoded is not None and self._encoded.version == version:
                return self._encoded
            async with self._lock:
                model = self._core.global_model()
            body = await asyncio.to_thread(
                encode_weights, model.weights, metadata={"model_version": str(model.version)}
            )
            self._encoded = EncodedModel(version=model.version, body=body)
            return self._encoded

    async def submit_update(
        self, body: bytes, *, round_id: int, sender: str | None = None
    ) -> tuple[UpdateHeader, bool]:
        """Decode, validate and accept one plaintext update sent for ``round_id``.

        Args:
            body: The safetensors bytes.
            round_id: The round named in the URL.
            sender: The authenticated client (the update must be its own).

        Returns:
            The update's header, and False if it duplicated an accepted update.

        Raises:
            VeilflError: (a subclass) naming what is wrong; state is then unchanged.
        """
        delta, metadata = await asyncio.to_thread(
            decode_weights, body, spec=self._core.spec, max_bytes=self._max_update_bytes
        )
        header = UpdateHeader.from_metadata(metadata)
        if header.round_id != round_id:
            raise RoundMismatchError(
                f"The URL names round {round_id} but the update says round {header.round_id}."
            )
        if sender is not None and header.client_id != sender:
            raise ForbiddenError(
                f"Client {sender} signed an update that says it is from {header.client_id}."
            )
        accepted = await self._call(
            self._core.submit_plaintext_update, header, delta, now=self._clock()
        )
        return header, accepted

    async def submit_receipt(self, header: UpdateHeader) -> bool:
        """Note that a client says its shares reached the aggregators.

        Returns:
            False if the receipt duplicated an accepted one.
        """
        return await self._call_inline(self._core.record_receipt, header, now=self._clock())

    async def ticket(self, client_id: str, *, trained_version: int) -> BufferTicket:
        """Where a client's update goes next (buffered asynchronous runs only).

        If every place in the open buffer is held (or a full one is being applied), the
        request waits, first come first served, until a place frees, for at most
        ``ticket_wait_s``.

        Raises:
            BufferFullError: no place freed in time; ask again after ``retry_after_s``.
        """
        if not self._opened:
            raise RoundMismatchError(
                "The run has not opened yet (it waits for the aggregators' policies); ask "
                "for a task first."
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ticket_wait_s
        woken = False
        while True:
            async with self._lock:
                if woken:
                    self._promised -= 1
                    woken = False
                try:
                    return self._core.ticket(
                        client_id, trained_version=trained_version, now=self._clock()
                    )
                except BufferFullError:
                    if loop.time() >= deadline:
                        raise
                finally:
                    self._offer_places()
                    self._wake.set()
                place: asyncio.Future[None] = loop.create_future()
                self._place_waiters.append(place)
            try:
                await asyncio.wait_for(asyncio.shield(place), max(0.0, deadline - loop.time()))
            except TimeoutError:
                pass
            except asyncio.CancelledError:  # the client went away: pass its place on
                if place.done():
                    self._promised -= 1
                place.cancel()
                raise
            if place.done():
                woken = True
            else:
                place.cancel()  # timed out: the next round of the loop answers 409

    def _offer_places(self) -> None:
        """Wake as many waiting ticket requests as the open buffer has unpromised places,
        or all of them once the run is over, to hear so (call under the lock: it reads
        the core)."""
        if not self._place_waiters:
            return
        if self._core.done:
            free = len(self._place_waiters)
        else:
            free = self._core.free_places(now=self._clock()) - self._promised
        while free > 0 and self._place_waiters:
            place = self._place_waiters.popleft()
            if not place.done():
                place.set_result(None)
                self._promised += 1
                free -= 1

    async def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the run."""
        async with self._lock:
            return {
                "run_id": self.run_info.run_id,
                **self._core.status(),
                "opened": self._opened,
            }

    async def live_status(self) -> dict[str, Any]:
        """:meth:`status`, plus the coordinator's phase (``coordinator_phase``:
        collecting, aggregating, persisting or done) and the seconds until the open
        round closes at the latest (``closes_in_s``; None without a deadline)."""
        async with self._lock:
            status = {"run_id": self.run_info.run_id, **self._core.status()}
            status["coordinator_phase"] = self._core.phase.value
            deadline = self._core.schedule.deadline
            now = self._clock()
        status["closes_in_s"] = None if deadline is None else max(0.0, deadline - now)
        return status

    def global_weights(self) -> Weights:
        """The served global weights (for tests and shutdown)."""
        return self._core.global_model().weights

    # ----------------------------------------------------------------- private
    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One core call under the lock (in a worker thread: it may do CPU work)."""
        async with self._lock:
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            finally:
                self._offer_places()
                self._wake.set()

    async def _call_inline(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One quick core call under the lock, on the event loop (a bookkeeping call:
        handing it to a worker thread would cost more than it does)."""
        async with self._lock:
            try:
                return fn(*args, **kwargs)
            finally:
                self._offer_places()
                self._wake.set()

    async def _run_effects(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            async with self._lock:
                effects = self._core.drain()
                done = self._core.done
            for effect in effects:
                if isinstance(
                    effect, RoundCompleted | RoundAbandoned | ClientsExcluded | AggregationStalled
                ):
                    self._observe(self.observer.notice, effect)
                    self._publish(effect)
                else:
                    self._observe(self.observer.command_sent, effect)
                    task = asyncio.create_task(self._perform(effect))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
            if done and not self._in_flight and not effects:
                await self._rounds.join()
                self.finished.set()

    async def _perform(self, command: Command) -> None:
        while True:
            try:
                events = await self._performer.perform(command)
                break
            except VeilflError as exc:  # say, the disk is full: nothing is served meanwhile
                logger.error(
                    "could not carry out %s (%s); retrying in 1 s", type(command).__name__, exc
                )
                await asyncio.sleep(1.0)
        for event in events:
            self._observe(self.observer.event_received, event)
            await self._call(self._core.handle, event, now=self._clock())

    @staticmethod
    def _observe(see: Callable[[T], None], what: T) -> None:
        try:
            see(what)
        except Exception:  # watching the run must never stop it
            logger.exception("the run observer failed on %s", type(what).__name__)

    def _publish(self, notice: Notice) -> None:
        if isinstance(notice, RoundCompleted):
            if self._on_served is not None:
                self._on_served(notice.outcome)
            self._rounds.put_nowait(notice.outcome)
        elif isinstance(notice, RoundAbandoned):
            logger.warning(
                "round %d abandoned: %s; round %d runs it again with a fresh sample",
                notice.round_id,
                notice.reason,
                notice.new_round_id,
            )
        elif isinstance(notice, ClientsExcluded):
            logger.warning(
                "round %d: %d client(s) excluded, %s: %s",
                notice.round_id,
                len(notice.clients),
                notice.reason,
                ", ".join(notice.clients[:5]) + (" ..." if len(notice.clients) > 5 else ""),
            )
        elif isinstance(notice, AggregationStalled):
            logger.warning(
                "round %d cannot be aggregated yet (%s); asking again shortly",
                notice.round_id,
                notice.reason,
            )

    async def _consume_rounds(self) -> None:
        while True:
            outcome = await self._rounds.get()
            try:
                if self._on_round is not None:
                    await asyncio.to_thread(self._on_round, outcome)
            except Exception:  # a report must never stop the run; the round is recorded
                logger.exception("reporting round %d failed", outcome.cohort.round_id)
            finally:
                self._rounds.task_done()
                self._wake.set()

    async def _tick_forever(self, interval_s: float) -> None:
        while not self.finished.is_set():
            await asyncio.sleep(interval_s)
            try:
                await self._call(self._core.tick, now=self._clock())
            except Exception:  # a tick must never kill the ticker; log and go on
                logger.exception("Advancing the round failed; will retry on the next tick.")
