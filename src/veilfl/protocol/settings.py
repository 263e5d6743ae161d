"""Everything that defines a run, as one typed value.

The server stores these settings with the run (a restart must find the same ones), the
simulators take them, and :func:`veilfl.protocol.assembly.build_coordinator` turns them
into a coordinator core: one assembly, one set of rules, on every path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_fedavg import DpConfig
from veilfl.protocol.buffered import BufferConfig, BufferMode
from veilfl.protocol.messages import LocalTrainingPlan, PublishedAggregator, RunMode
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.strategy.settings import ServerOptimizerConfig

__all__ = ["CoordinatorSettings", "SecureSettings"]


@dataclass(frozen=True)
class SecureSettings:
    """Secure aggregation for a run: parameters and the aggregators.

    Attributes:
        config: Encoding and sharing parameters.
        aggregators: Aggregators 1..m (URL and public key each).
    """

    config: SecureAggregationConfig
    aggregators: tuple[PublishedAggregator, ...]

    def __post_init__(self) -> None:
        indices = [a.index for a in self.aggregators]
        if indices != list(range(1, self.config.num_aggregators + 1)):
            raise ConfigurationError(
                f"Secure aggregation with {self.config.num_aggregators} aggregators needs "
                f"aggregators 1..{self.config.num_aggregators}; got {sorted(indices)}."
            )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "config": self.config.to_json(),
            "aggregators": [a.to_json() for a in self.aggregators],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SecureSettings:
        """Inverse of :meth:`to_json`."""
        return cls(
            config=SecureAggregationConfig.from_json(data["config"]),
            aggregators=tuple(PublishedAggregator.from_json(a) for a in data["aggregators"]),
        )


@dataclass(frozen=True)
class CoordinatorSettings:
    """Everything that defines a run; stored with it so a restart resumes the same run.

    Attributes:
        model_name: The model every party builds.
        rounds: Round settings (also the minimum clients and timeouts of buffered runs).
        plan: Local training hyper-parameters.
        server_learning_rate: The server learning rate of FedAvg and FedBuff.
        seed: Seeds the initial model (and, without DP, client sampling).
        secure: Secure aggregation, or None for plaintext FedAvg.
        dp: Client-level differential privacy, or None.
        buffer: Buffered asynchronous aggregation (FedBuff/FedAsync); None for rounds.
        fedasync_mixing: FedAsync's mixing rate α.
        population: How many clients the run draws from. Under DP it fixes the sampling
            rate the accountant charges; by default the clients needed to start.
        server_optimizer: An adaptive server optimiser (FedAdam, FedYogi, FedAdagrad;
            Reddi et al. 2021) with ``server_learning_rate`` as its η; None for FedAvg
            (or FedBuff).
    """

    model_name: str
    rounds: RoundConfig
    plan: LocalTrainingPlan = field(default_factory=LocalTrainingPlan)
    server_learning_rate: float = 1.0
    seed: int = 0
    secure: SecureSettings | None = None
    dp: DpConfig | None = None
    buffer: BufferConfig | None = None
    fedasync_mixing: float = 0.6
    population: int | None = None
    server_optimizer: ServerOptimizerConfig | None = None

    def __post_init__(self) -> None:
        if self.population is not None and self.population < 1:
            raise ConfigurationError(f"--population must be at least 1; got {self.population}.")
        if self.buffer is not None and self.buffer.mode is BufferMode.FEDASYNC:
            if self.secure is not None:
                raise ConfigurationError(
                    "FedAsync applies each update on its own, which secure aggregation cannot "
                    "hide; use --mode fedbuff with --buffer-size 2 or more."
                )
            if self.dp is not None:
                raise ConfigurationError(
                    "FedAsync releases single updates, which client-level DP cannot protect "
                    "with a fixed cohort; use --mode fedbuff."
                )
            if self.server_optimizer is not None:
                raise ConfigurationError(
                    "FedAsync mixes single client models into the global model and takes no "
                    "server optimiser; use --mode fedbuff or sync with --server-optimizer."
                )

    @property
    def mode(self) -> RunMode:
        """Rounds, FedBuff or FedAsync."""
        return RunMode.SYNC if self.buffer is None else RunMode(self.buffer.mode.value)

    @property
    def expected_population(self) -> int:
        """The population the sampling rate is computed over."""
        return self.population or self.rounds.clients_needed_to_start

    @property
    def num_releases(self) -> int:
        """Rounds (or buffers) the run releases before it is done."""
        return self.rounds.num_rounds if self.buffer is None else self.buffer.max_versions

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "model_name": self.model_name,
            "rounds": asdict(self.rounds),
            "plan": asdict(self.plan),
            "server_learning_rate": self.server_learning_rate,
            "seed": self.seed,
            "secure": None if self.secure is None else self.secure.to_json(),
            "dp": None if self.dp is None else self.dp.to_json(),
            "buffer": (
                None
                if self.buffer is None
                else {**asdict(self.buffer), "mode": self.buffer.mode.value}
            ),
            "fedasync_mixing": self.fedasync_mixing,
            "population": self.population,
            "server_optimizer": (
                None if self.server_optimizer is None else self.server_optimizer.to_json()
            ),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CoordinatorSettings:
        """Inverse of :meth:`to_json`."""
        buffer = data.get("buffer")
        return cls(
            model_name=str(data["model_name"]),
            rounds=RoundConfig(**data["rounds"]),
            plan=LocalTrainingPlan(**data["plan"]),
            server_learning_rate=float(data["server_learning_rate"]),
            seed=int(data["seed"]),
            secure=None if data.get("secure") is None else SecureSettings.from_json(data["secure"]),
            dp=None if data.get("dp") is None else DpConfig.from_json(data["dp"]),
            buffer=(
                None
                if buffer is None
                else BufferConfig(**{**buffer, "mode": BufferMode(buffer["mode"])})
            ),
            fedasync_mixing=float(data.get("fedasync_mixing", 0.6)),
            population=None if data.get("population") is None else int(data["population"]),
            server_optimizer=(
                None
                if data.get("server_optimizer") is None
                else ServerOptimizerConfig.from_json(data["server_optimizer"])
            ),
        )
