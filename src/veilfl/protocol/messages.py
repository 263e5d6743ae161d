"""Messages exchanged between the coordinator's protocol core and its clients.

Frozen, typed and validated on construction, so that a value which exists is a value
the protocol can act on. The HTTP edge converts these to and from JSON and binary
bodies; the simulator passes them directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from veilfl.errors import ConfigurationError, WireFormatError

__all__ = [
    "ClientReport",
    "LocalTrainingPlan",
    "RunInfo",
    "Task",
    "TaskKind",
    "UpdateHeader",
]


class TaskKind(StrEnum):
    """What the coordinator asks a client to do next."""

    TRAIN = "train"
    WAIT = "wait"
    DONE = "done"


@dataclass(frozen=True)
class Task:
    """The answer to "what should I do now?".

    Attributes:
        kind: Train on ``model_version`` for ``round_id``, wait and ask again, or stop.
        round_id: The round to train for (``TRAIN`` only).
        model_version: The global model version to start from (``TRAIN`` only).
        retry_after_s: How long to wait before asking again (``WAIT`` only).
        privacy: Under DP, the round's client privacy plan (clipping norm and noise).
    """

    kind: TaskKind
    round_id: int | None = None
    model_version: int | None = None
    retry_after_s: float = 0.0
    privacy: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind is TaskKind.TRAIN and (self.round_id is None or self.model_version is None):
            raise ValueError("A TRAIN task needs a round_id and a model_version.")

    @classmethod
    def train(cls, *, round_id: int, model_version: int) -> Task:
        """A task to train for ``round_id`` starting from ``model_version``."""
        return cls(TaskKind.TRAIN, round_id=round_id, model_version=model_version)

    @classmethod
    def wait(cls, *, retry_after_s: float) -> Task:
        """A task to ask again after ``retry_after_s`` seconds."""
        return cls(TaskKind.WAIT, retry_after_s=retry_after_s)

    @classmethod
    def done(cls) -> Task:
        """The run is over; the client should exit."""
        return cls(TaskKind.DONE)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "kind": self.kind.value,
            "round_id": self.round_id,
            "model_version": self.model_version,
            "retry_after_s": self.retry_after_s,
            "privacy": self.privacy,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        """Parse :meth:`to_json` output.

        Raises:
            WireFormatError: if the dict is not a task.
        """
        try:
            return cls(
                kind=TaskKind(data["kind"]),
                round_id=None if data.get("round_id") is None else int(data["round_id"]),
                model_version=(
                    None if data.get("model_version") is None else int(data["model_version"])
                ),
                retry_after_s=float(data.get("retry_after_s", 0.0)),
                privacy=data.get("privacy"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WireFormatError(f"The server sent a task that does not parse: {exc}.") from exc


@dataclass(frozen=True)
class LocalTrainingPlan:
    """How clients train locally: SGD hyper-parameters chosen by the coordinator.

    Attributes:
        learning_rate: SGD step size.
        momentum: SGD momentum.
        epochs: Local epochs E per round.
        batch_size: Local batch size B.
        max_batches: Optional cap on batches per epoch (for quick runs and tests).
        proximal_mu: FedProx's mu (Li et al. 2020): clients descend
            ``loss(w) + mu/2 ||w - w_global||^2``; 0 is plain FedAvg training.
    """

    learning_rate: float = 0.05
    momentum: float = 0.0
    epochs: int = 1
    batch_size: int = 32
    max_batches: int | None = None
    proximal_mu: float = 0.0

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigurationError("The local learning rate must be a positive number.")
        if not 0 <= self.momentum < 1:
            raise ConfigurationError("The local momentum must be in [0, 1).")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigurationError("Local epochs and batch size must be at least 1.")
        if self.max_batches is not None and self.max_batches < 1:
            raise ConfigurationError("max_batches must be at least 1, or None for no cap.")
        if not (self.proximal_mu >= 0 and math.isfinite(self.proximal_mu)):
            raise ConfigurationError("FedProx's proximal_mu must be a number of at least 0.")


@dataclass(frozen=True)
class RunInfo:
    """What a client learns about the run when it joins.

    Attributes:
        run_id: Identifier of the run (binds encryption contexts in secure mode).
        model_name: Name of the model architecture every party builds.
        num_rounds: Planned number of rounds.
        plan: Local training hyper-parameters.
        secure: Extra JSON describing secure aggregation, if on.
        dp: Extra JSON describing differential privacy, if on.
        mode: ``sync`` (rounds), ``fedbuff`` or ``fedasync`` (buffered, asynchronous).
    """

    run_id: str
    model_name: str
    num_rounds: int
    plan: LocalTrainingPlan
    secure: dict[str, Any] | None = field(default=None)
    dp: dict[str, Any] | None = field(default=None)
    mode: str = "sync"


@dataclass(frozen=True)
class UpdateHeader:
    """The metadata that travels with a client's model update, or with its receipt.

    In plaintext mode the client states its sample count (the FedAvg weight) and its
    training loss. Under secure aggregation both travel inside the secret-shared vector
    instead; the receipt then says which aggregators acknowledged the client's shares.

    Attributes:
        client_id: Who sends it.
        round_id: The round it is for.
        base_version: The global model version it was trained from.
        num_samples: Local examples used (plaintext mode only).
        loss: Mean local training loss (plaintext mode only).
        aggregators: Indices of the aggregators holding this client's shares (secure mode).
    """

    client_id: str
    round_id: int
    base_version: int
    num_samples: int | None = None
    loss: float | None = None
    aggregators: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.client_id:
            raise WireFormatError("The update names no client_id.")
        if self.round_id < 1:
            raise WireFormatError("The update's round_id must be at least 1.")
        if self.base_version < 0:
            raise WireFormatError("The update's base_version must not be negative.")
        if self.num_samples is not None and self.num_samples < 1:
            raise WireFormatError("The update's num_samples must be at least 1.")
        if self.loss is not None and not math.isfinite(self.loss):
            raise WireFormatError("The update's loss must be a finite number.")
        if len(set(self.aggregators)) != len(self.aggregators) or any(
            not 1 <= j <= 16 for j in self.aggregators
        ):
            raise WireFormatError("The aggregator indices must be distinct, in 1..16.")

    def to_metadata(self) -> dict[str, str]:
        """String metadata for the binary update body."""
        metadata = {
            "client_id": self.client_id,
            "round_id": str(self.round_id),
            "base_version": str(self.base_version),
        }
        if self.num_samples is not None:
            metadata["num_samples"] = str(self.num_samples)
        if self.loss is not None:
            metadata["loss"] = repr(float(self.loss))
        return metadata

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> UpdateHeader:
        """Parse :meth:`to_metadata` output.

        Raises:
            WireFormatError: naming the missing or malformed field.
        """
        try:
            return cls(
                client_id=metadata["client_id"],
                round_id=int(metadata["round_id"]),
                base_version=int(metadata["base_version"]),
                num_samples=(int(metadata["num_samples"]) if "num_samples" in metadata else None),
                loss=float(metadata["loss"]) if "loss" in metadata else None,
            )
        except KeyError as exc:
            raise WireFormatError(f"The update's metadata lacks the field {exc}.") from exc
        except ValueError as exc:
            raise WireFormatError(f"The update's metadata has a malformed number: {exc}.") from exc


@dataclass(frozen=True)
class ClientReport:
    """An accepted update's metadata, as the round state machine records it."""

    client_id: str
    num_samples: int | None
    loss: float | None
    aggregators: tuple[int, ...] = ()
