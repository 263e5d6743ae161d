"""Messages exchanged between the coordinator's protocol core and its clients.

Frozen, typed and validated on construction, so that a value which exists is a value
the protocol can act on. The HTTP edge converts these to and from JSON and binary
bodies; the simulator passes them directly.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from veilfl.auth.identity import decode_public_key
from veilfl.crypto.envelope import KemChoice, PublicKey
from veilfl.crypto.keys import fingerprint, load_public_key, verify_aggregator_signature
from veilfl.crypto.shamir import MAX_SHARES
from veilfl.declared import check_declared, setting
from veilfl.errors import AuthenticationError, ConfigurationError, WireFormatError
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan, DpConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.strategy.federated_evaluation import FederatedEvaluation

__all__ = [
    "ClientReport",
    "DpRunInfo",
    "LocalTrainingPlan",
    "PublishedAggregator",
    "RunInfo",
    "RunMode",
    "SecureRunInfo",
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
        admission: Under secure aggregation, the coordinator's signed admission of this
            client to the round, which the aggregators require with its shares.
    """

    kind: TaskKind
    round_id: int | None = None
    model_version: int | None = None
    retry_after_s: float = 0.0
    privacy: ClientPrivacyPlan | None = None
    admission: str | None = None

    def __post_init__(self) -> None:
        if self.kind is TaskKind.TRAIN and (self.round_id is None or self.model_version is None):
            raise WireFormatError("A TRAIN task needs a round_id and a model_version.")

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
            "privacy": None if self.privacy is None else self.privacy.to_json(),
            "admission": self.admission,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        """Parse :meth:`to_json` output.

        Raises:
            WireFormatError: if the dict is not a task.
        """
        try:
            privacy = data.get("privacy")
            admission = data.get("admission")
            return cls(
                kind=TaskKind(data["kind"]),
                round_id=None if data.get("round_id") is None else int(data["round_id"]),
                model_version=(
                    None if data.get("model_version") is None else int(data["model_version"])
                ),
                retry_after_s=float(data.get("retry_after_s", 0.0)),
                privacy=None if privacy is None else ClientPrivacyPlan.from_json(privacy),
                admission=None if admission is None else str(admission),
            )
        except (KeyError, TypeError, ValueError, OverflowError, ConfigurationError) as exc:
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

    learning_rate: float = setting(
        default=0.05, flag="--lr", help="local SGD learning rate", above=0
    )
    momentum: float = setting(
        default=0.0,
        flag="--momentum",
        help="local SGD momentum",
        at_least=0,
        below=1,
        cli_default=0.9,
    )
    epochs: int = setting(default=1, flag="--epochs", help="local epochs E", at_least=1)
    batch_size: int = setting(
        default=32, flag="--batch-size", help="local batch size B", at_least=1
    )
    max_batches: int | None = setting(
        default=None, flag="--max-batches", help="cap batches per epoch", at_least=1
    )
    proximal_mu: float = setting(
        default=0.0,
        flag="--proximal-mu",
        help="FedProx's mu: clients add mu/2 ||w - w_global||^2 to their loss (0: off)",
        at_least=0,
    )

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
        check_declared(self)


@dataclass(frozen=True)
class PublishedAggregator:
    """What the coordinator publishes about aggregator ``index``.

    Attributes:
        index: Share index, 1..m.
        url: Base URL.
        kem: The HPKE key-encapsulation mechanism of its key.
        public_key: The HPKE public key, standard base64.
        signing_key: Its Ed25519 public key (URL-safe base64, 43 characters), which
            signs its commitments and its policy.
    """

    index: int
    url: str
    kem: KemChoice
    public_key: str
    signing_key: str

    def __post_init__(self) -> None:
        if not 1 <= self.index <= MAX_SHARES:
            raise WireFormatError(f"An aggregator index must be in 1..{MAX_SHARES}.")
        self.key_bytes()  # raises WireFormatError if the key does not decode
        self.signing_bytes()

    def key_bytes(self) -> bytes:
        """The public key's bytes.

        Raises:
            WireFormatError: if ``public_key`` is not base64.
        """
        try:
            return base64.b64decode(self.public_key, validate=True)
        except (binascii.Error, ValueError):
            raise WireFormatError(
                f"Aggregator {self.index}'s published public key is not base64."
            ) from None

    def signing_bytes(self) -> bytes:
        """The Ed25519 public key's bytes.

        Raises:
            WireFormatError: if ``signing_key`` is not such a key.
        """
        try:
            return decode_public_key(self.signing_key)
        except AuthenticationError:
            raise WireFormatError(
                f"Aggregator {self.index}'s published signing key is not an Ed25519 key."
            ) from None

    @property
    def fingerprint(self) -> str:
        """The fingerprint of both keys (what operators and clients pin)."""
        return fingerprint(self.kem, self.key_bytes(), self.signing_bytes())

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this aggregator's signature of ``message``."""
        return verify_aggregator_signature(self.signing_bytes(), message, signature)

    def hpke_key(self) -> PublicKey:
        """The key to seal shares to."""
        return load_public_key(self.kem, self.key_bytes())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (with the fingerprint, for people)."""
        return {
            "index": self.index,
            "url": self.url,
            "kem": self.kem,
            "public_key": self.public_key,
            "signing_key": self.signing_key,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PublishedAggregator:
        """Parse :meth:`to_json` output (the fingerprint is recomputed, not trusted).

        Raises:
            WireFormatError: if it is malformed.
        """
        try:
            kem = str(data["kem"])
            if kem not in ("x25519", "mlkem768-x25519"):
                raise WireFormatError(f"Unknown key type {kem!r}.")
            return cls(
                index=int(data["index"]),
                url=str(data["url"]),
                kem=kem,  # type: ignore[arg-type]
                public_key=str(data["public_key"]),
                signing_key=str(data["signing_key"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WireFormatError(f"A published aggregator does not parse: {exc}.") from exc


@dataclass(frozen=True)
class SecureRunInfo:
    """Secure aggregation as the coordinator announces it.

    Attributes:
        config: Encoding and sharing parameters.
        aggregators: The aggregators, in index order 1..m.
        model_size: Parameters in the model (the contributions' update length).
    """

    config: SecureAggregationConfig
    aggregators: tuple[PublishedAggregator, ...]
    model_size: int

    def __post_init__(self) -> None:
        indices = [a.index for a in self.aggregators]
        if indices != list(range(1, self.config.num_aggregators + 1)):
            raise WireFormatError(
                f"Secure aggregation with {self.config.num_aggregators} aggregators needs "
                f"aggregators 1..{self.config.num_aggregators} in order; got {indices}."
            )

    @property
    def layout(self) -> ContributionLayout:
        """The contributions' encoding and proof parameters."""
        return ContributionLayout(self.model_size, self.config)

    @property
    def signing_keys(self) -> dict[int, bytes]:
        """Each aggregator's Ed25519 public key, by index."""
        return {a.index: a.signing_bytes() for a in self.aggregators}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "config": self.config.to_json(),
            "aggregators": [a.to_json() for a in self.aggregators],
            "model_size": self.model_size,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SecureRunInfo:
        """Parse :meth:`to_json` output.

        Raises:
            WireFormatError: if it is malformed.
        """
        try:
            return cls(
                config=SecureAggregationConfig.from_json(data["config"]),
                aggregators=tuple(
                    PublishedAggregator.from_json(a)
                    for a in sorted(data["aggregators"], key=lambda a: int(a["index"]))
                ),
                model_size=int(data["model_size"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError, ConfigurationError) as exc:
            raise WireFormatError(f"The secure-aggregation block does not parse: {exc}.") from exc


@dataclass(frozen=True)
class DpRunInfo:
    """Differential privacy as the coordinator announces it.

    Attributes:
        config: The DP settings.
        sample_rate: q, the chance that a given client takes part in a release.
        expected_clients: Clients expected per release (the fixed denominator; the
            aggregators size the noise they deal under distributed placement from it).
    """

    config: DpConfig
    sample_rate: float
    expected_clients: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data: dict[str, Any] = {**self.config.to_json(), "sample_rate": self.sample_rate}
        if self.expected_clients is not None:
            data["expected_clients"] = self.expected_clients
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DpRunInfo:
        """Parse :meth:`to_json` output.

        Raises:
            WireFormatError: if it is malformed.
        """
        try:
            expected = data.get("expected_clients")
            return cls(
                config=DpConfig.from_json(dict(data)),
                sample_rate=float(data["sample_rate"]),
                expected_clients=None if expected is None else float(expected),
            )
        except (KeyError, TypeError, ValueError, OverflowError, ConfigurationError) as exc:
            raise WireFormatError(f"The differential-privacy block does not parse: {exc}.") from exc


class RunMode(StrEnum):
    """Synchronous rounds, or buffered asynchronous aggregation."""

    SYNC = "sync"
    FEDBUFF = "fedbuff"
    FEDASYNC = "fedasync"


@dataclass(frozen=True)
class RunInfo:
    """What a client (and an aggregator) learns about the run: its public description.

    Attributes:
        run_id: Identifier of the run (binds encryption contexts in secure mode).
        model_name: Name of the model architecture every party builds.
        num_rounds: Planned number of rounds (released buffers, when buffered).
        plan: Local training hyper-parameters.
        mode: Synchronous rounds or buffered asynchronous aggregation.
        coordinator_key: The coordinator's Ed25519 public key (signs round admissions).
        secure: Secure aggregation, if on.
        dp: Differential privacy, if on.
        weight_floor: The smallest staleness weight a buffered run's ticket can carry,
            ``(1 + max_staleness)^-a`` (0 in rounds): a client refuses a ticket below it.
        min_cohort: The fewest clients a release of the run sums (its minimum clients
            per round or buffer, and the DP minimum): an aggregator whose operator set a
            larger ``--min-participants`` refuses to consent.
    """

    run_id: str
    model_name: str
    num_rounds: int
    plan: LocalTrainingPlan
    mode: RunMode = RunMode.SYNC
    coordinator_key: str = ""
    secure: SecureRunInfo | None = field(default=None)
    dp: DpRunInfo | None = field(default=None)
    weight_floor: float = 0.0
    min_cohort: int = 1

    @property
    def buffered(self) -> bool:
        """Whether updates go into buffers (FedBuff or FedAsync) rather than rounds."""
        return self.mode is not RunMode.SYNC

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``GET /v1/run`` answers)."""
        return {
            "run_id": self.run_id,
            "model_name": self.model_name,
            "num_rounds": self.num_rounds,
            "plan": asdict(self.plan),
            "mode": self.mode.value,
            "coordinator_key": self.coordinator_key,
            "secure": None if self.secure is None else self.secure.to_json(),
            "dp": None if self.dp is None else self.dp.to_json(),
            "weight_floor": self.weight_floor,
            "min_cohort": self.min_cohort,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunInfo:
        """Parse :meth:`to_json` output.

        Raises:
            WireFormatError: naming what does not parse.
        """
        try:
            secure, dp = data.get("secure"), data.get("dp")
            return cls(
                run_id=str(data["run_id"]),
                model_name=str(data["model_name"]),
                num_rounds=int(data["num_rounds"]),
                plan=LocalTrainingPlan(**data["plan"]),
                mode=RunMode(data.get("mode", "sync")),
                coordinator_key=str(data.get("coordinator_key", "")),
                secure=None if secure is None else SecureRunInfo.from_json(secure),
                dp=None if dp is None else DpRunInfo.from_json(dp),
                weight_floor=float(data.get("weight_floor", 0.0)),
                min_cohort=int(data.get("min_cohort", 1)),
            )
        except (KeyError, TypeError, ValueError, OverflowError, ConfigurationError) as exc:
            raise WireFormatError(f"The run description does not parse: {exc}.") from exc


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
        evaluation: The client's federated evaluation of the model it received
            (plaintext mode only; None when it evaluated nothing).
    """

    client_id: str
    round_id: int
    base_version: int
    num_samples: int | None = None
    loss: float | None = None
    aggregators: tuple[int, ...] = ()
    evaluation: FederatedEvaluation | None = None

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
        if self.evaluation is not None:
            metadata["eval_examples"] = repr(float(self.evaluation.examples))
            metadata["eval_loss_sum"] = repr(float(self.evaluation.loss_sum))
            metadata["eval_correct"] = repr(float(self.evaluation.correct))
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
                evaluation=(
                    FederatedEvaluation(
                        examples=float(metadata["eval_examples"]),
                        loss_sum=float(metadata["eval_loss_sum"]),
                        correct=float(metadata["eval_correct"]),
                    )
                    if "eval_examples" in metadata
                    else None
                ),
            )
        except KeyError as exc:
            raise WireFormatError(f"The update's metadata lacks the field {exc}.") from exc
        except ValueError as exc:
            raise WireFormatError(f"The update's metadata has a malformed number: {exc}.") from exc


@dataclass(frozen=True)
class ClientReport:
    """An accepted update's (or receipt's) metadata, as the coordinator records it.

    Attributes:
        client_id: The client.
        num_samples: Its sample count (plaintext only).
        loss: Its mean training loss (plaintext only).
        aggregators: The aggregators its receipt named (secure aggregation; a claim that
            the aggregators' own holdings confirm or refute).
        trained_version: The model version it trained from.
        weight: A weight fixed by the protocol (a buffered update's staleness weight);
            None where the client's own weight applies.
        evaluation: Its federated evaluation of the model it received (plaintext only).
    """

    client_id: str
    num_samples: int | None
    loss: float | None
    aggregators: tuple[int, ...] = ()
    trained_version: int = 0
    weight: float | None = None
    evaluation: FederatedEvaluation | None = None
