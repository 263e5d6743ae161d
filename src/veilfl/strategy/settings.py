"""Which server optimiser a run uses, as a typed setting a run stores.

``--server-optimizer fedadam|fedyogi|fedadagrad`` (with ``--server-beta1``,
``--server-beta2`` and ``--server-tau``; η is the run's ``--server-lr``) becomes a
:class:`ServerOptimizerConfig` in the run's
:class:`~veilfl.protocol.run_spec.RunSpec`; plain FedAvg (or FedBuff) is no
config at all. :meth:`ServerOptimizerConfig.build` makes the optimiser of Reddi et al.
2021 (:mod:`veilfl.strategy.fedopt`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from veilfl.declared import check_declared, setting
from veilfl.errors import ConfigurationError
from veilfl.strategy.fedopt import SERVER_OPTIMIZERS, FedAdagrad, FedOpt

__all__ = ["SERVER_OPTIMIZER_CHOICES", "ServerOptimizerConfig"]

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

    def build(self, *, server_learning_rate: float) -> FedOpt:
        """A fresh optimiser with these hyper-parameters and η = ``server_learning_rate``.

        Raises:
            ConfigurationError: if the learning rate is not a positive number.
        """
        kind = SERVER_OPTIMIZERS[self.name]
        if kind is FedAdagrad:
            return kind(server_learning_rate=server_learning_rate, beta1=self.beta1, tau=self.tau)
        return kind(  # type: ignore[call-arg]
            server_learning_rate=server_learning_rate,
            beta1=self.beta1,
            beta2=self.beta2,
            tau=self.tau,
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
