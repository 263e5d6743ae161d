"""The coordinator's async edge: one :class:`SyncCoordinator` behind an asyncio lock.

Every request is turned into one call on the transport-free core. CPU-heavy work
(decoding an update, folding it into the sum, closing a round, evaluating, writing a
checkpoint) runs in a worker thread, so the event loop keeps serving other clients
while it happens. Calls into the core are serialised by one lock, so the core itself
needs no locking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from veilfl.errors import ForbiddenError, ProtocolError, RoundMismatchError, VeilflError
from veilfl.protocol.buffered import BufferTicket
from veilfl.protocol.buffered_coordinator import BufferedCoordinator
from veilfl.protocol.coordinator import GlobalModel
from veilfl.protocol.messages import RunInfo, Task, UpdateHeader
from veilfl.protocol.metrics import RoundMetrics
from veilfl.reporting import format_round_fields, round_fields
from veilfl.tensors import TensorSpec, Weights
from veilfl.wire.tensor_codec import decode_weights, encode_weights

__all__ = ["CoordinatorCore", "CoordinatorService", "EncodedModel"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class CoordinatorCore(Protocol):
    """What the HTTP edge needs from a coordinator core (rounds or buffers)."""

    @property
    def spec(self) -> TensorSpec: ...

    @property
    def history(self) -> tuple[RoundMetrics, ...]: ...

    @property
    def done(self) -> bool: ...

    @property
    def model_version(self) -> int: ...

    def join(self, client_id: str, *, now: float) -> None: ...

    def is_joined(self, client_id: str) -> bool: ...

    def task_for(self, client_id: str, *, now: float) -> Task: ...

    def submit_plaintext_update(
        self, header: UpdateHeader, delta: Weights, *, now: float
    ) -> bool: ...

    def record_share_upload(self, header: UpdateHeader, *, now: float) -> bool: ...

    def tick(self, *, now: float) -> object: ...

    def global_model(self) -> GlobalModel: ...

    def status(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class EncodedModel:
    """A global model version, encoded once for every client that downloads it."""

    version: int
    body: bytes


class CoordinatorService:
    """Serialises access to the coordinator core and keeps CPU work off the event loop.

    Args:
        coordinator: The protocol core.
        run_info: What joining clients are told about the run.
        on_round: Called (in a worker thread) with each completed round's metrics.
        max_update_bytes: Largest update body accepted.
        clock: Monotonic clock in seconds.
    """

    def __init__(
        self,
        coordinator: CoordinatorCore,
        *,
        run_info: RunInfo,
        on_round: Callable[[RoundMetrics], None] | None = None,
        max_update_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = coordinator
        self._run_info = run_info
        self._on_round = on_round
        self._max_update_bytes = max_update_bytes
        self._clock = clock
        self._lock = asyncio.Lock()
        self._encoded: EncodedModel | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    @property
    def run_info(self) -> RunInfo:
        """The run's public description."""
        return self._run_info

    async def start(self, *, tick_interval_s: float = 0.25) -> None:
        """Start the background ticker that fires round deadlines."""
        self._ticker = asyncio.create_task(self._tick_forever(tick_interval_s))

    async def stop(self) -> None:
        """Stop the background ticker."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    async def join(self, client_id: str) -> None:
        """Let an enrolled client take part (idempotent; enrollment persists it)."""
        async with self._lock:
            self._core.join(client_id, now=self._clock())

    async def task_for(self, client_id: str) -> Task:
        """What a client should do now."""
        return await self._locked(self._core.task_for, client_id, now=self._clock())

    async def model(self) -> EncodedModel:
        """The current global model, encoded (cached per version)."""
        async with self._lock:
            version = self._core.model_version
            if self._encoded is None or self._encoded.version != version:
                weights = self._core.global_model().weights
                body = await asyncio.to_thread(
                    encode_weights, weights, metadata={"model_version": str(version)}
                )
                self._encoded = EncodedModel(version=version, body=body)
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
        accepted = await self._locked(
            self._core.submit_plaintext_update, header, delta, now=self._clock()
        )
        return header, accepted

    async def submit_receipt(self, header: UpdateHeader) -> bool:
        """Record that a client's shares reached the aggregators (secure aggregation).

        Returns:
            False if the receipt duplicated an accepted one.
        """
        if self._run_info.secure is None:
            raise ProtocolError(
                "This run aggregates in plaintext; upload the update to /v1/rounds/{round}/updates."
            )
        threshold = int(self._run_info.secure["config"]["threshold"])
        if len(header.aggregators) < threshold:
            raise ProtocolError(
                f"The receipt lists {len(header.aggregators)} aggregators; at least {threshold} "
                "must hold the shares."
            )
        return await self._locked(self._core.record_share_upload, header, now=self._clock())

    async def ticket(self, client_id: str, *, trained_version: int) -> BufferTicket:
        """Where a client's update goes next (buffered asynchronous runs only).

        Raises:
            ProtocolError: in a run with synchronous rounds.
        """
        if not isinstance(self._core, BufferedCoordinator):
            raise ProtocolError("This run has synchronous rounds; there are no buffer tickets.")
        core = self._core
        return await self._locked(lambda: core.ticket(client_id, trained_version=trained_version))

    async def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the run."""
        async with self._lock:
            return {"run_id": self._run_info.run_id, **self._core.status()}

    def global_weights(self) -> Weights:
        """The current global weights (for tests and shutdown)."""
        return self._core.global_model().weights

    # ----------------------------------------------------------------- private
    async def _locked(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._lock:
            before = len(self._core.history)
            result = await asyncio.to_thread(fn, *args, **kwargs)
            await self._after_call(before)
            return result

    async def _after_call(self, rounds_before: int) -> None:
        for metrics in self._core.history[rounds_before:]:
            logger.info(
                "round complete: %s",
                format_round_fields(metrics),
                extra={"fields": round_fields(metrics)},
            )
            if self._on_round is not None:
                await asyncio.to_thread(self._on_round, metrics)
        if self._core.done:
            self.finished.set()

    async def _tick_forever(self, interval_s: float) -> None:
        last_problem = ""
        while not self.finished.is_set():
            await asyncio.sleep(interval_s)
            try:
                await self._locked(self._core.tick, now=self._clock())
            except VeilflError as exc:  # say, an aggregator is restarting: say it once
                if str(exc) != last_problem:
                    logger.warning("closing the round failed (%s); retrying every tick", exc)
                last_problem = str(exc)
            except Exception:  # a tick must never kill the ticker; log and go on
                logger.exception("Closing the round failed; will retry on the next tick.")
            else:
                if last_problem:
                    logger.info("the round that could not be closed is moving again")
                last_problem = ""
