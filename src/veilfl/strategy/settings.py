"""Which server optimiser a run uses, as a typed setting a run stores.

``--server-optimizer fedadam|fedyogi|fedadagrad`` (with ``--server-beta1``,
``--server-beta2`` and ``--server-tau``; η is the run's ``--server-lr``) becomes a
:class:`ServerOptimizerConfig` in the run's
:class:`~veilfl.protocol.run_spec.RunSpec`; plain FedAvg (or FedBuff) is no
config at all. :meth:`ServerOptimizerConfig.build` makes the optimiser of Reddi et al.
2021 (:mod:`veilfl.strategy.fedopt`).

``--server-lr-schedule constant|cosine|linear|step`` (with ``--server-lr-warmup``,
``--server-lr-final-fraction``, ``--server-lr-decay`` and ``--server-lr-step-rounds``)
becomes a :class:`LrScheduleConfig`, which every run has (constant by default);
:meth:`LrScheduleConfig.build` makes the :mod:`veilfl.strategy.schedule` over the run's
releases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from veilfl.declared import check_declared, setting
from veilfl.errors import ConfigurationError
from veilfl.strategy.fedopt import SERVER_OPTIMIZERS, FedAdagrad, FedOpt
from veilfl.strategy.schedule import LR_SCHEDULES, LearningRateSchedule

__all__ = ["SERVER_OPTIMIZER_CHOICES", "LrScheduleConfig", "ServerOptimizerConfig"]

SERVER_OPTIMIZER_CHOICES = ("fedavg", *sorted(SERVER_OPTIMIZERS))
"""What ``--server-optimizer`` takes: ``fedavg`` (no adaptive optimiser) or one of
:data:`~veilfl.strategy.fedopt.SERVER_OPTIMIZERS`."""


@dataclass(frozen=True)
class ServerOptimizerConfig:
    """An adaptive server optimiser and its hyper-parameters (η is the run's server
    learning rate).

    Attributes:
        name: ``fedadam``, ``fedyogi`` or ``fedadagrad``.
        beta1: β1, the first moment's decay, in [0, 1).
        beta2: β2, the second moment's decay, in [0, 1) (FedAdagrad has none and
            ignores it).
        tau: τ, the adaptivity; positive.

    Raises:
        ConfigurationError: for an unknown name or a value out of range, naming the flag.
    """

    name: str = setting(
        flag="--server-optimizer",
        help="how the server applies a round's mean update: FedAvg, or an adaptive "
        "optimiser of Reddi et al. 2021",
        choices=tuple(sorted(SERVER_OPTIMIZERS)),
        lowercase=True,
    )
    beta1: float = setting(
        default=0.9, flag="--server-beta1", help="adaptive optimisers' first-moment decay"
    )
    beta2: float = setting(
        default=0.99, flag="--server-beta2", help="FedAdam's and FedYogi's second-moment decay"
    )
    tau: float = setting(
        default=1e-3, flag="--server-tau", help="adaptive optimisers' tau (adaptivity)"
    )

    def __post_init__(self) -> None:
        if self.name == "fedavg":
            raise ConfigurationError(
                "FedAvg takes no server optimiser config; leave server_optimizer as None."
            )
        if self.name not in SERVER_OPTIMIZERS:
            raise ConfigurationError(
                f"--server-optimizer {self.name!r} is not known; choose one of "
                f"{', '.join(SERVER_OPTIMIZER_CHOICES)}."
            )
        for flag, value in (("--server-beta1", self.beta1), ("--server-beta2", self.beta2)):
            if not 0 <= value < 1:
                raise ConfigurationError(f"{flag} must lie in [0, 1); got {value}.")
        if not self.tau > 0:
            raise ConfigurationError(f"--server-tau must be more than 0; got {self.tau}.")
        check_declared(self)

    def build(
        self, *, server_learning_rate: float, schedule: LearningRateSchedule | None = None
    ) -> FedOpt:
        """A fresh optimiser with these hyper-parameters, η = ``server_learning_rate``
        and the learning-rate ``schedule`` (default: constant).

        Raises:
            ConfigurationError: if the learning rate is not a positive number.
        """
        kind = SERVER_OPTIMIZERS[self.name]
        if kind is FedAdagrad:
            return kind(
                server_learning_rate=server_learning_rate,
                beta1=self.beta1,
                tau=self.tau,
                schedule=schedule,
            )
        return kind(  # type: ignore[call-arg]
            server_learning_rate=server_learning_rate,
            beta1=self.beta1,
            beta2=self.beta2,
            tau=self.tau,
            schedule=schedule,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "beta1": self.beta1, "beta2": self.beta2, "tau": self.tau}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerOptimizerConfig:
        """Inverse of :meth:`to_json`."""
        return cls(
            name=str(data["name"]),
            beta1=float(data["beta1"]),
            beta2=float(data["beta2"]),
            tau=float(data["tau"]),
        )


@dataclass(frozen=True)
class LrScheduleConfig:
    """The server learning rate's schedule over the run
    (:class:`~veilfl.strategy.schedule.LearningRateSchedule`), as a run stores it.

    Attributes:
        name: ``constant``, ``cosine``, ``linear`` or ``step``.
        warmup_rounds: Rounds of linear warm-up before the schedule starts.
        final_fraction: The fraction of ``--server-lr`` that ``cosine`` and ``linear``
            decay towards by the last round.
        decay_factor: What ``step`` multiplies the rate by every ``step_rounds`` rounds.
        step_rounds: Rounds between two decays of ``step``.

    Raises:
        ConfigurationError: for an unknown name or a value out of range, naming the flag.
    """

    name: str = setting(
        default="constant",
        flag="--server-lr-schedule",
        help="how the server learning rate changes over the rounds",
        choices=tuple(LR_SCHEDULES),
        lowercase=True,
    )
    warmup_rounds: int = setting(
        default=0,
        flag="--server-lr-warmup",
        help="rounds of linear warm-up of the server learning rate",
        at_least=0,
    )
    final_fraction: float = setting(
        default=0.0,
        flag="--server-lr-final-fraction",
        help="fraction of --server-lr that cosine and linear decay to by the last round",
        at_least=0,
        at_most=1,
    )
    decay_factor: float = setting(
        default=0.5,
        flag="--server-lr-decay",
        help="what the step schedule multiplies the server learning rate by",
        above=0,
        at_most=1,
    )
    step_rounds: int = setting(
        default=10,
        flag="--server-lr-step-rounds",
        help="rounds between two decays of the step schedule",
        at_least=1,
    )

    def __post_init__(self) -> None:
        if self.name not in LR_SCHEDULES:
            raise ConfigurationError(
                f"--server-lr-schedule {self.name!r} is not known; choose one of "
                f"{', '.join(LR_SCHEDULES)}."
            )
        check_declared(self)

    @property
    def is_constant(self) -> bool:
        """Whether the rate never changes (constant, no warm-up)."""
        return self.name == "constant" and self.warmup_rounds == 0

    def build(self, *, total_steps: int) -> LearningRateSchedule:
        """The schedule over a run that releases ``total_steps`` rounds (or buffers).

        Raises:
            ConfigurationError: if the warm-up covers the whole run.
        """
        if self.warmup_rounds and self.warmup_rounds >= total_steps:
            raise ConfigurationError(
                f"--server-lr-warmup {self.warmup_rounds} covers all {total_steps} rounds; "
                "give fewer warm-up rounds than the run has."
            )
        return LearningRateSchedule(
            name=self.name,
            total_steps=total_steps,
            warmup_steps=self.warmup_rounds,
            final_fraction=self.final_fraction,
            decay_factor=self.decay_factor,
            step_size=self.step_rounds,
        )
