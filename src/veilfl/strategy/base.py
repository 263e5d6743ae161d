"""The one interface every server strategy implements.

A strategy turns the current global model and a released :class:`Aggregate` into the
next global model. FedAvg, FedBuff and FedAsync (and the adaptive server optimisers)
are all called the same way; a strategy that needs an earlier model (FedAsync mixes in
the model a client trained from) reads it from the :class:`ModelHistory` it is given.
"""

from __future__ import annotations

from typing import Protocol

from veilfl.strategy.aggregate import Aggregate
from veilfl.tensors import FloatArray

__all__ = ["ModelHistory", "ServerStrategy"]


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
