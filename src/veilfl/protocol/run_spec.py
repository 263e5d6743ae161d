"""Everything that defines a run, as one typed, versioned value: the :class:`RunSpec`.

The server stores the spec with the run (a restart must find the same one), the
simulators take it, and :func:`veilfl.protocol.assembly.build_coordinator` turns it into
a coordinator core: one assembly, one set of rules, on every path.

The run id is not chosen: it is the SHA-256 of the spec's canonical JSON
(:attr:`RunSpec.run_id`), as DAP derives a task id from its configuration. Every share's
HPKE context, every commitment, certificate and noise deal carries the run id, so a
party shown a different description (other aggregators, other noise, another cohort
rule) works on another run id: its shares do not open, its signatures do not verify,
and a split view costs nothing but a refused round.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, Self

from veilfl.auth.identity import encode_public_key
from veilfl.crypto.envelope import KemChoice
from veilfl.declared import check_declared, config_from_json, nested, setting, to_json_value
from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.buffered import BufferConfig, BufferMode
from veilfl.protocol.messages import LocalTrainingPlan, PublishedAggregator, RunMode
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.strategy.settings import LrScheduleConfig, ServerOptimizerConfig

__all__ = [
    "RUN_SPEC_VERSION",
    "AggregatorPublicKeys",
    "RunSpec",
    "SecureSettings",
    "canonical_json",
]

RUN_SPEC_VERSION = 1
"""The version of the run description's format; part of every run id."""


def canonical_json(data: Any) -> bytes:
    """The one byte string a JSON value hashes as: keys sorted, no spaces, ASCII, no NaN.

    Raises:
        ValueError: for a value JSON cannot hold exactly (NaN, infinity).
    """
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


class AggregatorPublicKeys(Protocol):
    """An aggregator's public keys, as :meth:`SecureSettings.for_aggregators` reads them."""

    @property
    def kem(self) -> KemChoice:
        """The HPKE key-encapsulation mechanism."""

    @property
    def public_bytes(self) -> bytes:
        """The raw HPKE public key."""

    @property
    def signing_public_bytes(self) -> bytes:
        """The raw Ed25519 public key."""


@dataclass(frozen=True)
class SecureSettings:
    """Secure aggregation for a run: parameters and the aggregators.

    Attributes:
        config: Encoding and sharing parameters.
        aggregators: Aggregators 1..m (URL and public key each).
    """

    config: SecureAggregationConfig = nested()
    aggregators: tuple[PublishedAggregator, ...] = setting(
        flag=None, help="the aggregators, in index order", shown_as="--aggregator"
    )

    def __post_init__(self) -> None:
        indices = [a.index for a in self.aggregators]
        if indices != list(range(1, self.config.num_aggregators + 1)):
            raise ConfigurationError(
                f"Secure aggregation with {self.config.num_aggregators} aggregators needs "
                f"aggregators 1..{self.config.num_aggregators}; got {sorted(indices)}."
            )

    @classmethod
    def for_aggregators(
        cls, aggregators: Sequence[tuple[str, AggregatorPublicKeys]], **config: Any
    ) -> SecureSettings:
        """Secure aggregation over these aggregators, in index order.

        Args:
            aggregators: Each aggregator's base URL and public keys (an
                :class:`~veilfl.crypto.keys.AggregatorKeyPair`, or anything with its
                ``kem``, ``public_bytes`` and ``signing_public_bytes``).
            **config: Other :class:`SecureAggregationConfig` fields (``threshold``,
                ``norm_bound``, ``quorum`` ...); ``num_aggregators`` and ``kem`` follow
                from ``aggregators``.

        Raises:
            ConfigurationError: if no aggregator is given, their keys are of different
                kinds, or ``config`` does not make a valid configuration.
        """
        if not aggregators:
            raise ConfigurationError("Secure aggregation needs at least one aggregator.")
        kems = {key.kem for _, key in aggregators}
        if len(kems) != 1:
            raise ConfigurationError(
                f"Every aggregator's key must be of one kind; got {sorted(kems)}."
            )
        published = tuple(
            PublishedAggregator(
                index=index,
                url=url.rstrip("/"),
                kem=key.kem,
                public_key=base64.b64encode(key.public_bytes).decode(),
                signing_key=encode_public_key(key.signing_public_bytes),
            )
            for index, (url, key) in enumerate(aggregators, start=1)
        )
        settings = SecureAggregationConfig(
            **{**config, "num_aggregators": len(published), "kem": published[0].kem}
        )
        return cls(config=settings, aggregators=published)

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
class RunSpec:
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
        server_momentum: β of the server's heavy-ball momentum over FedAvg's or
            FedBuff's step (FedAvgM, Hsu et al. 2019); 0 for none.
        server_nesterov: Whether the momentum step is Nesterov's.
        server_lr_schedule: How the server learning rate changes over the releases.
        coordinator_key: The coordinator's Ed25519 public key (signs round admissions).
            Filled when the run is created (:meth:`sealed`); clients count their
            participations per coordinator key, across runs.
        salt: Random hex chosen when the run is created, so that two runs with the same
            settings have different ids (a share of one never opens in the other).
        model_size: Parameters in the model: the length every contribution proves.
            Filled when the run is created, from the model.
    """

    model_name: str = setting(
        flag="--model",
        help="simple-cnn or mnist-cnn",
        cli_default="simple-cnn",
        shown_as="--model/--learner",
    )
    rounds: RoundConfig = nested(group="rounds")
    plan: LocalTrainingPlan = nested(default_factory=LocalTrainingPlan, group="rounds")
    server_learning_rate: float = setting(
        default=1.0,
        flag="--server-lr",
        help="server learning rate (default 1 for fedavg, 0.01 for the adaptive optimisers)",
        above=0,
        cli_default=None,
    )
    seed: int = setting(default=0, flag="--seed", help="seed for model init and sampling")
    secure: SecureSettings | None = nested(
        default=None, shown_as="--aggregator", group="secure aggregation"
    )
    dp: DpConfig | None = nested(
        default=None, switch="placement", off="off", group="differential privacy"
    )
    buffer: BufferConfig | None = nested(
        default=None, switch="mode", off="sync", group="asynchronous aggregation"
    )
    fedasync_mixing: float = setting(
        default=0.6,
        flag="--fedasync-mixing",
        help="FedAsync's alpha",
        above=0,
        at_most=1,
        group="asynchronous aggregation",
    )
    population: int | None = setting(
        default=None,
        flag="--population",
        help="clients the run draws from (fixes the DP sampling rate; default: --min-available)",
        at_least=1,
    )
    server_optimizer: ServerOptimizerConfig | None = nested(
        default=None, switch="name", off="fedavg", group="rounds"
    )
    server_momentum: float = setting(
        default=0.0,
        flag="--server-momentum",
        help="server momentum beta over FedAvg's or FedBuff's step (FedAvgM; 0: none)",
        at_least=0,
        below=1,
        metavar="BETA",
        group="rounds",
    )
    server_nesterov: bool = setting(
        default=False,
        flag="--server-nesterov",
        help="take the server momentum step in Nesterov's form",
        group="rounds",
    )
    server_lr_schedule: LrScheduleConfig = nested(default_factory=LrScheduleConfig, group="rounds")
    # Fixed when the run is created, not given by an operator: no declaration.
    coordinator_key: str = ""
    salt: str = ""
    model_size: int | None = None

    def __post_init__(self) -> None:
        if self.model_size is not None and self.model_size < 1:
            raise ConfigurationError(f"model_size must be at least 1; got {self.model_size}.")
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
            if self.server_momentum or not self.server_lr_schedule.is_constant:
                raise ConfigurationError(
                    "FedAsync mixes single client models in with --fedasync-mixing and takes "
                    "no server momentum or learning-rate schedule; use --mode fedbuff."
                )
        check_declared(self)
        if self.server_momentum and self.server_optimizer is not None:
            raise ConfigurationError(
                f"--server-momentum is FedAvg's and FedBuff's; --server-optimizer "
                f"{self.server_optimizer.name} keeps its own first moment (--server-beta1): "
                "drop one of them."
            )
        if self.server_nesterov and not self.server_momentum:
            raise ConfigurationError(
                "--server-nesterov needs server momentum; give --server-momentum BETA too."
            )
        self.server_lr_schedule.build(total_steps=self.num_releases)  # refuses bad warm-up

    @property
    def run_id(self) -> str:
        """SHA-256 (hex) of the canonical JSON of this description: the run's id.

        The JSON is taken after one parse (so ``1`` and ``1.0`` given for a float hash
        alike): what a party recomputes from the JSON it was served is this id.
        """
        normal = type(self).from_json(self.to_json()).to_json()
        return hashlib.sha256(canonical_json(normal)).hexdigest()

    def sealed(self, *, coordinator_key: str, salt: str, model_size: int) -> RunSpec:
        """This spec with the fields fixed when a run is created (its id follows)."""
        return replace(self, coordinator_key=coordinator_key, salt=salt, model_size=model_size)

    def unsealed(self) -> RunSpec:
        """This spec without the fields fixed at creation: the settings an operator
        gives (what a restart compares with the stored run)."""
        return replace(self, coordinator_key="", salt="", model_size=None)

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
        """A JSON-ready dict: every field, each nested config by its own ``to_json``."""
        fields_json = {f.name: to_json_value(getattr(self, f.name)) for f in fields(self)}
        return {"version": RUN_SPEC_VERSION, **fields_json}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """Inverse of :meth:`to_json` (a field left out takes its default).

        Raises:
            ConfigurationError: for a description of another format version.
        """
        version = data.get("version", RUN_SPEC_VERSION)
        if version != RUN_SPEC_VERSION:
            raise ConfigurationError(
                f"The run description is of format version {version}; this veilfl reads "
                f"version {RUN_SPEC_VERSION}. Use the same veilfl version on every party."
            )
        return config_from_json(cls, {k: v for k, v in data.items() if k != "version"})
