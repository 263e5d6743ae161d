"""Adaptive server optimisers: FedAdagrad, FedYogi and FedAdam.

Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR), Algorithm 2 (FedOpt):
the server treats a round's mean client delta ``Δ_t = Σ n_k Δ_k / Σ n_k`` as a
pseudo-gradient and takes one step of an adaptive optimiser with it::

    m_t = β1 m_{t-1} + (1 - β1) Δ_t
    v_t = v_{t-1} + Δ_t²                                   (FedAdagrad)
    v_t = v_{t-1} - (1 - β2) Δ_t² sign(v_{t-1} - Δ_t²)      (FedYogi)
    v_t = β2 v_{t-1} + (1 - β2) Δ_t²                        (FedAdam)
    x_{t+1} = x_t + η m_t / (√v_t + τ)

with ``m_{-1} = 0`` and ``v_{-1} = τ²`` (the paper asks for ``v_{-1} ≥ τ²``), and,
as in the paper, no bias correction. ``τ`` bounds the adaptivity; ``η`` is the
server learning rate, scaled at step t by the run's learning-rate schedule
(:mod:`veilfl.strategy.schedule`; constant unless one is given).

Only the mean delta is needed, so the optimisers compose with secure aggregation
(which releases only the sum) and with DP (whose noise is already in the sum).
Their state (``m``, ``v`` and the step count) is a pair of float64 vectors. A
coordinator takes a :class:`FedOptState` snapshot after each step and the run store
keeps its bytes (:meth:`FedOptState.to_bytes`, exact) next to the round it belongs
to, so a restarted coordinator continues where it stopped (:meth:`FedOpt.restore`);
:meth:`FedOpt.to_json` writes the same state as JSON.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError, StorageError, UpdateRejectedError
from veilfl.strategy.aggregate import Aggregate
from veilfl.strategy.base import ModelHistory
from veilfl.strategy.schedule import LearningRateSchedule
from veilfl.tensors import FloatArray

__all__ = [
    "SERVER_OPTIMIZERS",
    "FedAdagrad",
    "FedAdam",
    "FedOpt",
    "FedOptState",
    "FedYogi",
    "server_optimizer",
]

Float64Array = npt.NDArray[np.float64]


def _check_rate(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"{name} must be a positive number, not {value}.")


def _check_decay(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigurationError(f"{name} must be in [0, 1), not {value}.")


def _encode(array: Float64Array) -> str:
    return base64.b64encode(array.astype("<f8").tobytes()).decode("ascii")


def _decode(text: Any, size: int, name: str) -> Float64Array:
    try:
        raw = base64.b64decode(str(text), validate=True)
    except ValueError as exc:
        raise StorageError(f"The server optimiser's {name} is not valid base64.") from exc
    if len(raw) != 8 * size:
        raise StorageError(
            f"The server optimiser's {name} holds {len(raw) // 8} values, not {size}; the "
            "saved state belongs to another model."
        )
    return np.frombuffer(raw, dtype="<f8").astype(np.float64)


_STATE_MAGIC = b"VFOPT1"


def _frozen(array: Float64Array | None) -> Float64Array | None:
    if array is not None:
        array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class FedOptState:
    """A server optimiser's state after a step: which optimiser, its hyper-parameters,
    the step count and the moments ``m`` and ``v`` (read-only float64 vectors; None
    before the first step).

    Taking one is cheap (the optimiser computes fresh moment arrays each step and the
    snapshot shares them); :meth:`to_bytes` writes it exactly, for the run store.
    """

    kind: str
    hyperparameters: Mapping[str, float]
    steps: int
    m: Float64Array | None
    v: Float64Array | None

    def to_bytes(self) -> bytes:
        """``VFOPT1``, a 4-byte header length, a JSON header, then ``m`` and ``v`` as
        little-endian float64."""
        size = None if self.m is None else int(self.m.shape[0])
        header = json.dumps(
            {
                "kind": self.kind,
                "hyperparameters": dict(self.hyperparameters),
                "steps": self.steps,
                "size": size,
            },
            sort_keys=True,
        ).encode()
        parts = [_STATE_MAGIC, struct.pack("<I", len(header)), header]
        if self.m is not None and self.v is not None:
            parts += [self.m.astype("<f8").tobytes(), self.v.astype("<f8").tobytes()]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> FedOptState:
        """Inverse of :meth:`to_bytes`.

        Raises:
            StorageError: if ``data`` is not a saved server-optimiser state.
        """
        start = len(_STATE_MAGIC) + 4
        if len(data) < start or not data.startswith(_STATE_MAGIC):
            raise StorageError(
                "The saved server-optimiser state does not start as one; the run store is "
                "damaged or was written by another program."
            )
        (length,) = struct.unpack("<I", data[len(_STATE_MAGIC) : start])
        try:
            header = json.loads(data[start : start + length])
            kind = str(header["kind"])
            hyper = {str(k): float(v) for k, v in header["hyperparameters"].items()}
            steps = int(header["steps"])
            size = None if header["size"] is None else int(header["size"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorageError(
                f"The saved server-optimiser state's header does not parse ({exc!r})."
            ) from exc
        body = data[start + length :]
        expected = 0 if size is None else 16 * size
        if len(body) != expected:
            raise StorageError(
                f"The saved server-optimiser state holds {len(body)} bytes of moments, not "
                f"{expected}; the run store is damaged."
            )
        if size is None:
            return cls(kind, hyper, steps, None, None)
        m = np.frombuffer(body[: 8 * size], dtype="<f8").astype(np.float64)
        v = np.frombuffer(body[8 * size :], dtype="<f8").astype(np.float64)
        return cls(kind, hyper, steps, _frozen(m), _frozen(v))


class FedOpt(ABC):
    """A server optimiser of Reddi et al. 2021, Algorithm 2, with its state.

    Args:
        server_learning_rate: η.
        beta1: β1, the first moment's decay, in [0, 1).
        tau: τ, the adaptivity (added to √v; also ``v_{-1} = τ²``).
        schedule: η_t / η by step (default: constant).

    Raises:
        ConfigurationError: for a hyper-parameter out of range, saying which.
    """

    kind: ClassVar[str]

    def __init__(
        self,
        *,
        server_learning_rate: float,
        beta1: float = 0.9,
        tau: float = 1e-3,
        schedule: LearningRateSchedule | None = None,
    ):
        _check_rate("The server learning rate", server_learning_rate)
        _check_decay("beta1", beta1)
        _check_rate("tau", tau)
        self.server_learning_rate = server_learning_rate
        self.beta1 = beta1
        self.tau = tau
        self.schedule = schedule or LearningRateSchedule()
        self.steps = 0
        self._m: Float64Array | None = None
        self._v: Float64Array | None = None

    def hyperparameters(self) -> dict[str, float]:
        """The hyper-parameters by name (as the constructor takes them)."""
        return {
            "server_learning_rate": self.server_learning_rate,
            "beta1": self.beta1,
            "tau": self.tau,
        }

    @abstractmethod
    def _second_moment(self, v: Float64Array, squared: Float64Array) -> Float64Array:
        """``v_t`` from ``v_{t-1}`` and ``Δ_t²``."""

    @property
    def name(self) -> str:
        """The optimiser's name (``fedadam``, ``fedyogi``, ``fedadagrad``)."""
        return self.kind

    def apply(
        self, current: FloatArray, aggregate: Aggregate, *, history: ModelHistory
    ) -> FloatArray:
        """The :class:`~veilfl.strategy.base.ServerStrategy` step: the aggregate's mean
        delta is the pseudo-gradient."""
        return self.step(current, aggregate.mean_delta())

    def step(self, current_flat: FloatArray, mean_delta: Float64Array) -> FloatArray:
        """One server step: the next global model as a flat float32 vector.

        Args:
            current_flat: ``x_t``, the global model.
            mean_delta: ``Δ_t``, the round's (weighted) mean client delta.

        Raises:
            UpdateRejectedError: if the delta does not fit the model or the state, or
                is not finite (the state is left unchanged).
        """
        if mean_delta.shape != current_flat.shape or current_flat.ndim != 1:
            raise UpdateRejectedError(
                "The mean delta's length does not match the model; it cannot be applied."
            )
        delta = mean_delta.astype(np.float64, copy=False)
        if not np.isfinite(delta).all():
            raise UpdateRejectedError(
                "The mean delta holds NaN or infinite values; it was not applied, and the "
                "server optimiser's state is unchanged."
            )
        if self._m is None or self._v is None:
            self._m = np.zeros(delta.shape, dtype=np.float64)
            self._v = np.full(delta.shape, self.tau**2, dtype=np.float64)
        elif self._m.shape != delta.shape:
            raise UpdateRejectedError(
                f"The server optimiser holds state for {self._m.shape[0]} parameters, not "
                f"{delta.shape[0]}; it belongs to another model."
            )
        m = self.beta1 * self._m + (1.0 - self.beta1) * delta
        v = self._second_moment(self._v, delta * delta)
        rate = self.schedule.rate(self.server_learning_rate, self.steps)
        step = rate * m / (np.sqrt(v) + self.tau)
        # Fresh arrays each step, never changed after: snapshots share them.
        self._m, self._v = _frozen(m), _frozen(v)
        self.steps += 1
        return (current_flat.astype(np.float64) + step).astype(np.float32)

    def state(self) -> FedOptState:
        """A snapshot of the state now (what a restarted coordinator restores)."""
        return FedOptState(self.kind, self.hyperparameters(), self.steps, self._m, self._v)

    def restore(self, data: bytes) -> None:
        """Continue from a state saved with ``state().to_bytes()``.

        Raises:
            StorageError: if ``data`` does not parse, or was saved by another optimiser
                or with other hyper-parameters (the run's settings changed).
        """
        saved = FedOptState.from_bytes(data)
        if saved.kind != self.kind or dict(saved.hyperparameters) != self.hyperparameters():
            raise StorageError(
                f"The saved server-optimiser state is {saved.kind} with "
                f"{dict(saved.hyperparameters)}, not {self.kind} with "
                f"{self.hyperparameters()}; resume with the settings the run was started with."
            )
        self._m, self._v, self.steps = saved.m, saved.v, saved.steps

    def to_json(self) -> dict[str, Any]:
        """The optimiser and its state as a JSON-ready dict (exact, for restarts)."""
        return {
            "kind": self.kind,
            "hyperparameters": self.hyperparameters(),
            "steps": self.steps,
            "size": None if self._m is None else int(self._m.shape[0]),
            "m": None if self._m is None else _encode(self._m),
            "v": None if self._v is None else _encode(self._v),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FedOpt:
        """Rebuild an optimiser (of the kind it names) from :meth:`to_json`.

        Raises:
            StorageError: if the dict is not a saved server optimiser.
            ConfigurationError: if its hyper-parameters are out of range.
        """
        try:
            kind = SERVER_OPTIMIZERS[str(data["kind"])]
            hyperparameters: dict[str, Any] = {
                k: float(v) for k, v in data["hyperparameters"].items()
            }
            optimizer = kind(**hyperparameters)
            steps = int(data["steps"])
            size = data["size"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StorageError(
                f"The saved server optimiser does not parse ({exc!r}); it was written by "
                "another version, or the file is damaged."
            ) from exc
        if size is not None:
            optimizer._m = _frozen(_decode(data.get("m"), int(size), "first moment"))
            optimizer._v = _frozen(_decode(data.get("v"), int(size), "second moment"))
        optimizer.steps = steps
        return optimizer


class FedAdagrad(FedOpt):
    """FedAdagrad: ``v_t = v_{t-1} + Δ_t²`` (Reddi et al. 2021, Algorithm 2)."""

    kind = "fedadagrad"

    def _second_moment(self, v: Float64Array, squared: Float64Array) -> Float64Array:
        return v + squared


class _WithBeta2(FedOpt):
    """A server optimiser whose second moment decays with β2."""

    def __init__(
        self,
        *,
        server_learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        schedule: LearningRateSchedule | None = None,
    ):
        super().__init__(
            server_learning_rate=server_learning_rate, beta1=beta1, tau=tau, schedule=schedule
        )
        _check_decay("beta2", beta2)
        self.beta2 = beta2

    def hyperparameters(self) -> dict[str, float]:
        """The hyper-parameters by name (as the constructor takes them)."""
        return {**super().hyperparameters(), "beta2": self.beta2}


class FedYogi(_WithBeta2):
    """FedYogi: ``v_t = v_{t-1} - (1 - β2) Δ_t² sign(v_{t-1} - Δ_t²)`` (Reddi et al.
    2021, Algorithm 2, after Zaheer et al. 2018's Yogi)."""

    kind = "fedyogi"

    def _second_moment(self, v: Float64Array, squared: Float64Array) -> Float64Array:
        return v - (1.0 - self.beta2) * squared * np.sign(v - squared)


class FedAdam(_WithBeta2):
    """FedAdam: ``v_t = β2 v_{t-1} + (1 - β2) Δ_t²`` (Reddi et al. 2021, Algorithm 2)."""

    kind = "fedadam"

    def _second_moment(self, v: Float64Array, squared: Float64Array) -> Float64Array:
        return self.beta2 * v + (1.0 - self.beta2) * squared


SERVER_OPTIMIZERS: dict[str, type[FedOpt]] = {
    FedAdagrad.kind: FedAdagrad,
    FedAdam.kind: FedAdam,
    FedYogi.kind: FedYogi,
}
"""The server optimisers by name, as a ``--server-optimizer`` option would take them."""


def server_optimizer(name: str, **hyperparameters: float) -> FedOpt:
    """A fresh server optimiser by name (``fedadam``, ``fedyogi`` or ``fedadagrad``).

    Raises:
        ConfigurationError: for an unknown name, naming the known ones, or a
            hyper-parameter the optimiser does not take or that is out of range.
    """
    try:
        kind = SERVER_OPTIMIZERS[name.lower()]
    except KeyError:
        raise ConfigurationError(
            f"Unknown server optimiser {name!r}; choose one of "
            f"{', '.join(sorted(SERVER_OPTIMIZERS))} (or plain FedAvg)."
        ) from None
    given: dict[str, Any] = dict(hyperparameters)
    try:
        return kind(**given)
    except TypeError as exc:
        raise ConfigurationError(
            f"{name} takes server_learning_rate, beta1"
            f"{', beta2' if issubclass(kind, _WithBeta2) else ''} and tau; got "
            f"{', '.join(sorted(hyperparameters))}."
        ) from exc
