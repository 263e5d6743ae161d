"""Server momentum and a learning-rate schedule around FedAvg or FedBuff.

FedAvgM (Hsu et al. 2019, "Measuring the Effects of Non-Identical Data Distribution
for Federated Visual Classification") keeps a momentum buffer on the server and feeds
it the round's pseudo-gradient ``Δ_t`` (FedAvg's weighted mean delta, or FedBuff's
staleness-weighted buffer mean), in the heavy-ball form::

    m_t = β m_{t-1} + Δ_t            (m_{-1} = 0)
    w_{t+1} = w_t + η_t m_t          (heavy ball)
    w_{t+1} = w_t + η_t (Δ_t + β m_t) (Nesterov)

with ``η_t`` the server learning rate at step ``t``
(:class:`~veilfl.strategy.schedule.LearningRateSchedule`). β = 0 is the inner strategy
with a scheduled learning rate.

Under differential privacy ``Δ_t`` is the released, noised estimate (under DP-FTRL, the
change of the noised prefix sum), so momentum and the schedule are post-processing and
the guarantee is unchanged: this is DP-FTRL with momentum (Kairouz et al. 2021, "DP-FTRLM").

The buffer and the step count are server state: the coordinator persists a
:class:`ServerSgdState` after each step and a restarted coordinator continues from it
(:meth:`ServerSgd.restore`).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from veilfl.errors import ConfigurationError, StorageError, UpdateRejectedError
from veilfl.strategy.aggregate import Aggregate, Float64Array
from veilfl.strategy.base import ModelHistory
from veilfl.strategy.fedavg import check_fits
from veilfl.strategy.schedule import LearningRateSchedule
from veilfl.tensors import FloatArray

__all__ = ["PseudoGradientStrategy", "ServerSgd", "ServerSgdState"]

_STATE_MAGIC = b"VFSGD1"


class PseudoGradientStrategy(Protocol):
    """A strategy that steps along a pseudo-gradient with a server learning rate
    (:class:`~veilfl.strategy.fedavg.FedAvg`, :class:`~veilfl.strategy.buffered.FedBuff`)."""

    @property
    def name(self) -> str:
        """The strategy's name."""
        ...

    @property
    def server_learning_rate(self) -> float:
        """η, the peak server learning rate."""
        ...

    def pseudo_gradient(self, aggregate: Aggregate) -> Float64Array:
        """Δ_t: the direction the strategy steps along with rate 1."""
        ...


@dataclass(frozen=True, eq=False)
class ServerSgdState:
    """The server step's state after a step: its settings, the step count and the
    momentum buffer (None before the first step, and always with β = 0)."""

    settings: Mapping[str, float | str | bool]
    steps: int
    buffer: Float64Array | None

    def to_bytes(self) -> bytes:
        """``VFSGD1``, a 4-byte header length, a JSON header, then the buffer as
        little-endian float64."""
        size = None if self.buffer is None else int(self.buffer.shape[0])
        header = json.dumps(
            {"settings": dict(self.settings), "steps": self.steps, "size": size}, sort_keys=True
        ).encode()
        body = b"" if self.buffer is None else self.buffer.astype("<f8").tobytes()
        return b"".join([_STATE_MAGIC, struct.pack("<I", len(header)), header, body])

    @classmethod
    def from_bytes(cls, data: bytes) -> ServerSgdState:
        """Inverse of :meth:`to_bytes`.

        Raises:
            StorageError: if ``data`` is not a saved server-momentum state.
        """
        start = len(_STATE_MAGIC) + 4
        if len(data) < start or not data.startswith(_STATE_MAGIC):
            raise StorageError(
                "The saved server-momentum state does not start as one; the run store is "
                "damaged or was written by another program."
            )
        (length,) = struct.unpack("<I", data[len(_STATE_MAGIC) : start])
        try:
            header = json.loads(data[start : start + length])
            settings = dict(header["settings"])
            steps = int(header["steps"])
            size = None if header["size"] is None else int(header["size"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorageError(
                f"The saved server-momentum state's header does not parse ({exc!r})."
            ) from exc
        body = data[start + length :]
        if len(body) != (0 if size is None else 8 * size):
            raise StorageError(
                f"The saved server-momentum state holds {len(body)} bytes of buffer, not "
                f"{0 if size is None else 8 * size}; the run store is damaged."
            )
        if size is None:
            return cls(settings, steps, None)
        buffer = np.frombuffer(body, dtype="<f8").astype(np.float64)
        buffer.setflags(write=False)
        return cls(settings, steps, buffer)


class ServerSgd:
    """``inner``'s step with server momentum β (optionally Nesterov) and a scheduled
    learning rate (see the module docstring).

    Args:
        inner: FedAvg or FedBuff: what the pseudo-gradient is, and the peak rate η.
        momentum: β, in [0, 1).
        nesterov: Step along ``Δ_t + β m_t`` instead of ``m_t``.
        schedule: η_t / η by step.

    Raises:
        ConfigurationError: for a momentum out of range.
    """

    def __init__(
        self,
        inner: PseudoGradientStrategy,
        *,
        momentum: float = 0.0,
        nesterov: bool = False,
        schedule: LearningRateSchedule | None = None,
    ) -> None:
        if not (0 <= momentum < 1 and math.isfinite(momentum)):
            raise ConfigurationError(f"--server-momentum must lie in [0, 1); got {momentum}.")
        self.inner = inner
        self.momentum = momentum
        self.nesterov = nesterov
        self.schedule = schedule or LearningRateSchedule()
        self.steps = 0
        self._buffer: Float64Array | None = None

    @property
    def name(self) -> str:
        """The inner strategy's name, with ``m`` when it keeps momentum (``fedavgm``)."""
        return f"{self.inner.name}m" if self.momentum > 0 else self.inner.name

    def settings(self) -> dict[str, float | str | bool]:
        """What the saved state must have been written with."""
        return {
            "strategy": self.inner.name,
            "server_learning_rate": self.inner.server_learning_rate,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
        }

    def apply(
        self, current: FloatArray, aggregate: Aggregate, *, history: ModelHistory
    ) -> FloatArray:
        """The next global model as float32.

        Raises:
            UpdateRejectedError: if the aggregate does not fit the model or the buffer,
                or is not finite (the state is left unchanged).
        """
        check_fits(current, aggregate)
        gradient = self.inner.pseudo_gradient(aggregate)
        if not np.isfinite(gradient).all():
            raise UpdateRejectedError(
                "The aggregate holds NaN or infinite values; it was not applied, and the "
                "server momentum is unchanged."
            )
        direction = gradient
        if self.momentum > 0:
            previous = self._buffer
            if previous is None:
                previous = np.zeros_like(gradient)
            elif previous.shape != gradient.shape:
                raise UpdateRejectedError(
                    f"The server momentum holds {previous.shape[0]} values, not "
                    f"{gradient.shape[0]}; it belongs to another model."
                )
            buffer = self.momentum * previous + gradient
            buffer.setflags(write=False)  # snapshots share it
            self._buffer = buffer
            direction = gradient + self.momentum * buffer if self.nesterov else buffer
        rate = self.schedule.rate(self.inner.server_learning_rate, self.steps)
        self.steps += 1
        return (current.astype(np.float64) + rate * direction).astype(np.float32)

    def state(self) -> ServerSgdState:
        """A snapshot of the state now (what a restarted coordinator restores)."""
        return ServerSgdState(self.settings(), self.steps, self._buffer)

    def restore(self, data: bytes) -> None:
        """Continue from a state saved with ``state().to_bytes()``.

        Raises:
            StorageError: if ``data`` does not parse or was saved with other settings.
        """
        saved = ServerSgdState.from_bytes(data)
        if dict(saved.settings) != self.settings():
            raise StorageError(
                f"The saved server-momentum state was written with {dict(saved.settings)}, "
                f"not {self.settings()}; resume with the settings the run was started with."
            )
        self._buffer, self.steps = saved.buffer, saved.steps
