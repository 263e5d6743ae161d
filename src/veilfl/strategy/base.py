"""The one interface every server strategy implements.

A strategy turns the current global model and a released :class:`Aggregate` into the
next global model. FedAvg, FedBuff and FedAsync (and the adaptive server optimisers)
are all called the same way; a strategy that needs an earlier model (FedAsync mixes in
the model a client trained from) reads it from the :class:`ModelHistory` it is given.
A strategy that keeps state across rounds (the adaptive server optimisers) is also a
:class:`StatefulStrategy`: the coordinator hands a snapshot of its state out with each
round to persist, and a resumed run restores it, so it continues exactly.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from veilfl.strategy.aggregate import Aggregate
from veilfl.tensors import FloatArray

__all__ = ["ModelHistory", "ServerStrategy", "StatefulStrategy", "StrategyState"]


class ModelHistory(Protocol):
    """Recent global models, by version."""

    def weights_at(self, version: int) -> FloatArray:
        """The flat global model of ``version``.

        Raises:
            ProtocolError: if that version is no longer kept.
        """
        ...


class ServerStrategy(Protocol):
    """How an aggregate becomes the next global model."""

    @property
    def name(self) -> str:
        """A short name for logs and run settings (``fedavg``, ``fedbuff``, ...)."""
        ...

    def apply(
        self, current: FloatArray, aggregate: Aggregate, *, history: ModelHistory
    ) -> FloatArray:
        """The next global model as a flat float32 vector.

        Raises:
            UpdateRejectedError: if the aggregate does not fit the model.
        """
        ...


class StrategyState(Protocol):
    """A snapshot of a strategy's state after a round."""

    def to_bytes(self) -> bytes:
        """The state, exactly, as bytes (what the run store keeps)."""
        ...


@runtime_checkable
class StatefulStrategy(Protocol):
    """A strategy whose next step depends on state it keeps across rounds."""

    def state(self) -> StrategyState:
        """A snapshot of the state now (after the last :meth:`apply`)."""
        ...

    def restore(self, data: bytes) -> None:
        """Continue from ``state().to_bytes()`` of an earlier run of the same settings.

        Raises:
            StorageError: if ``data`` is not such a state.
        """
        ...
