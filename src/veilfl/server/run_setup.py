"""Building a coordinator from a run folder: new, or resumed after a restart.

A run folder holds ``run.sqlite`` (run state, in WAL mode), ``checkpoints/`` (one
safetensors file per model version, written atomically), ``coordinator.key`` (the
coordinator's Ed25519 key, mode 0600, which signs round admissions and its requests
to the aggregators) and the metrics files. A
coordinator started on a folder that already holds a run resumes after its last
completed round, from that round's checkpoint: nothing completed is lost.
"""

from __future__ import annotations

import json
import random
import ssl
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from veilfl.auth.identity import Identity
from veilfl.errors import ConfigurationError, StorageError
from veilfl.keyfiles import PublicKeyFile, load_or_create_identity
from veilfl.privacy.dp_fedavg import DpConfig
from veilfl.protocol.buffered import BufferConfig, BufferedMachine, BufferMode
from veilfl.protocol.buffered_coordinator import BufferedCoordinator
from veilfl.protocol.coordinator import (
    AggregationBackend,
    EvaluateFn,
    PlaintextAggregation,
    SyncCoordinator,
)
from veilfl.protocol.messages import LocalTrainingPlan, RunInfo
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.private_aggregation import PrivateAggregation
from veilfl.protocol.sync_round import ClosedRound, RoundConfig, SyncRoundMachine
from veilfl.reporting import plot_metrics, write_metrics
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig
from veilfl.secagg.coordinator_aggregation import SecureAggregation
from veilfl.server.aggregator_link import HttpAggregatorLink
from veilfl.server.checkpoints import CheckpointStore
from veilfl.server.run_store import ParticipantRecord, RoundRecord, RunStore
from veilfl.server.service import CoordinatorCore
from veilfl.strategy.buffered import FedAsync, FedBuff
from veilfl.strategy.fedavg import FedAvg
from veilfl.tensors import Weights, spec_of

__all__ = [
    "AggregatorEndpoint",
    "CoordinatorSettings",
    "DurableRecorder",
    "PreparedRun",
    "SecureSettings",
    "metrics_from_store",
    "prepare_run",
]


@dataclass(frozen=True)
class AggregatorEndpoint:
    """Where aggregator ``index`` listens, and its public key (as published).

    Attributes:
        index: Share index, 1..m.
        url: Base URL.
        kem: The key's KEM.
        public_key: The public key, base64.
    """

    index: int
    url: str
    kem: str
    public_key: str

    def published(self) -> dict[str, Any]:
        """What clients are told about this aggregator."""
        key = PublicKeyFile.from_json({"kem": self.kem, "public_key": self.public_key})
        return {"index": self.index, "url": self.url, **key.to_json()}


@dataclass(frozen=True)
class SecureSettings:
    """Secure aggregation for a run: parameters and the aggregators."""

    config: SecureAggregationConfig
    aggregators: tuple[AggregatorEndpoint, ...]

    def __post_init__(self) -> None:
        indices = sorted(a.index for a in self.aggregators)
        if indices != list(range(1, self.config.num_aggregators + 1)):
            raise ConfigurationError(
                f"Secure aggregation with {self.config.num_aggregators} aggregators needs "
                f"aggregators 1..{self.config.num_aggregators}; got {indices}."
            )


@dataclass(frozen=True)
class CoordinatorSettings:
    """Everything that defines a run; stored with it so a restart resumes the same run.

    Attributes:
        model_name: Registered model every party builds.
        rounds: Round settings.
        plan: Local training hyper-parameters.
        server_learning_rate: FedAvg server learning rate.
        seed: Seeds the initial model and client sampling.
        secure: Secure aggregation, or None for plaintext FedAvg.
        dp: Client-level differential privacy, or None.
        buffer: Buffered asynchronous aggregation (FedBuff/FedAsync); None for rounds.
        fedasync_mixing: FedAsync's mixing rate α.
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

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["dp"] = None if self.dp is None else self.dp.to_json()
        if self.buffer is not None:
            data["buffer"] = {**asdict(self.buffer), "mode": self.buffer.mode.value}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CoordinatorSettings:
        """Inverse of :meth:`to_json`."""
        return cls(
            model_name=str(data["model_name"]),
            rounds=RoundConfig(**data["rounds"]),
            plan=LocalTrainingPlan(**data["plan"]),
            server_learning_rate=float(data["server_learning_rate"]),
            seed=int(data["seed"]),
            secure=(
                None
                if data.get("secure") is None
                else SecureSettings(
                    config=SecureAggregationConfig(**data["secure"]["config"]),
                    aggregators=tuple(
                        AggregatorEndpoint(**a) for a in data["secure"]["aggregators"]
                    ),
                )
            ),
            dp=None if data.get("dp") is None else DpConfig.from_json(data["dp"]),
            buffer=(
                None
                if data.get("buffer") is None
                else BufferConfig(**{**data["buffer"], "mode": BufferMode(data["buffer"]["mode"])})
            ),
            fedasync_mixing=float(data.get("fedasync_mixing", 0.6)),
        )


class DurableRecorder:
    """Persists each completed round: checkpoint first, then the run-state row.

    The checkpoint of version v+1 is written (atomically) before the row that says
    round r completed, in one SQLite transaction. A crash between the two leaves an
    unreferenced checkpoint that the redone round overwrites; a crash before either
    loses only the round in progress.
    """

    def __init__(self, run_dir: Path, store: RunStore, checkpoints: CheckpointStore) -> None:
        self._run_dir = run_dir
        self._store = store
        self._checkpoints = checkpoints

    def record_round(
        self, metrics: RoundMetrics, closed: ClosedRound, *, new_version: int, weights: Weights
    ) -> None:
        """Write the checkpoint, then the round, then refresh the metrics files."""
        self._checkpoints.save(new_version, weights, metadata={"round_id": str(closed.round_id)})
        self._store.record_round(
            RoundRecord(
                round_id=closed.round_id,
                model_version_before=closed.base_version,
                model_version_after=new_version,
                opened_at=closed.opened_at,
                closed_at=closed.closed_at,
                num_participants=len(closed.participants),
                train_loss=metrics.train_loss,
                test_loss=metrics.test_loss,
                test_accuracy=metrics.test_accuracy,
                seconds=metrics.seconds,
                extra_json=json.dumps({"epsilon": metrics.epsilon, "sampled": closed.sampled}),
            ),
            [
                ParticipantRecord(
                    round_id=closed.round_id,
                    client_id=p.client_id,
                    num_samples=p.num_samples,
                    loss=p.loss,
                )
                for p in closed.participants
            ],
        )
        history = metrics_from_store(self._store)
        write_metrics(self._run_dir, history)
        plot_metrics(self._run_dir, history, title=f"veilfl run {self._store.run_id()}")


def metrics_from_store(store: RunStore) -> list[RoundMetrics]:
    """Every completed round's metrics, in order."""
    out = []
    for record in store.completed_rounds():
        extra = json.loads(record.extra_json or "{}")
        out.append(
            RoundMetrics(
                round_id=record.round_id,
                num_clients=record.num_participants,
                train_loss=record.train_loss,
                test_loss=record.test_loss,
                test_accuracy=record.test_accuracy,
                seconds=record.seconds,
                epsilon=extra.get("epsilon"),
            )
        )
    return out


@dataclass
class PreparedRun:
    """A coordinator core ready to serve, with the stores behind it."""

    coordinator: CoordinatorCore
    run_info: RunInfo
    store: RunStore
    checkpoints: CheckpointStore
    resumed_from_round: int | None
    identity: Identity


def prepare_run(
    run_dir: Path,
    settings: CoordinatorSettings,
    *,
    initial_weights: Callable[[int], Weights],
    evaluate: EvaluateFn | None,
    verify: ssl.SSLContext | bool = True,
) -> PreparedRun:
    """Open (or create) the run in ``run_dir`` and build its coordinator core.

    Args:
        run_dir: The run folder.
        settings: The run's settings. On resume they must match the stored ones.
        initial_weights: Builds the version-0 model from a seed (new runs only).
        evaluate: Server-side evaluation of each new model.
        verify: How to verify the aggregators' TLS certificates.

    Raises:
        ConfigurationError: if the folder holds a run with other settings.
        StorageError: if the run state or a checkpoint cannot be read.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = load_or_create_identity(run_dir / "coordinator.key")
    store = RunStore(run_dir / "run.sqlite")
    checkpoints = CheckpointStore(run_dir / "checkpoints", model_name=settings.model_name)
    stored_id = store.run_id()
    if stored_id is None:
        run_id = uuid.uuid4().hex[:16]
        store.initialise(run_id, settings.to_json())
    else:
        run_id = stored_id
        stored = CoordinatorSettings.from_json(store.config())
        if stored != settings:
            raise ConfigurationError(
                f"The run folder {run_dir} holds run {run_id} with other settings; "
                "use a new folder, or start with the same settings to resume."
            )
    last = store.last_completed_round()
    if last is None:
        version = 0
        next_round = 1
        if not checkpoints.path_for(0).exists():
            checkpoints.save(0, initial_weights(settings.seed))
    else:
        version = last.model_version_after
        next_round = last.round_id + 1
    try:
        weights = checkpoints.load(version)
    except StorageError as exc:
        raise StorageError(
            f"Run {run_id} completed round {next_round - 1}, but its checkpoint (version "
            f"{version}) cannot be loaded: {exc}"
        ) from exc
    buffered = settings.buffer
    spec = spec_of(weights)
    recorder = DurableRecorder(run_dir, store, checkpoints)
    aggregation: AggregationBackend = PlaintextAggregation(spec)
    secure_info: dict[str, Any] | None = None
    if settings.secure is not None:
        vector_length = spec.total_size + EXTRA_COORDINATES
        link = HttpAggregatorLink(
            {a.index: a.url for a in settings.secure.aggregators},
            vector_length=vector_length,
            run_id=run_id,
            identity=identity,
            verify=verify,
        )
        aggregation = SecureAggregation(
            settings.secure.config,
            link,
            min_participants=(
                settings.rounds.min_clients if buffered is None else buffered.buffer_size
            ),
        )
        secure_info = {
            "config": settings.secure.config.to_json(),
            "aggregators": [a.published() for a in settings.secure.aggregators],
            "vector_length": vector_length,
        }
    dp_info: dict[str, Any] | None = None
    if settings.dp is not None:
        if settings.secure is None:
            aggregation = PlaintextAggregation(spec, uniform_weights=True)
        population = settings.rounds.clients_needed_to_start
        expected = (
            settings.rounds.sample_size(population)
            if buffered is None
            else min(buffered.buffer_size, population)
        )
        aggregation = PrivateAggregation(
            aggregation,
            settings.dp,
            expected_clients=expected,
            sample_rate=expected / population,
            rounds_released=0 if last is None else last.round_id,
        )
        dp_info = {**settings.dp.to_json(), "sample_rate": expected / population}
    coordinator: CoordinatorCore
    if buffered is None:
        machine = SyncRoundMachine(
            settings.rounds,
            rng=random.Random(f"{settings.seed}:{next_round}"),
            next_round=next_round,
            model_version=version,
        )
        coordinator = SyncCoordinator(
            machine=machine,
            spec=spec,
            initial_weights=weights,
            aggregation=aggregation,
            strategy=FedAvg(server_learning_rate=settings.server_learning_rate),
            evaluate=evaluate,
            recorder=recorder,
        )
    else:
        coordinator = BufferedCoordinator(
            machine=BufferedMachine(buffered, version=version),
            spec=spec,
            initial_weights=weights,
            aggregation=aggregation,
            strategy=(
                FedAsync(mixing=settings.fedasync_mixing)
                if buffered.mode is BufferMode.FEDASYNC
                else FedBuff(server_learning_rate=settings.server_learning_rate)
            ),
            evaluate=evaluate,
            recorder=recorder,
        )
    for client in store.clients():
        coordinator.join(client.client_id, now=0.0)
    return PreparedRun(
        coordinator=coordinator,
        run_info=RunInfo(
            run_id=run_id,
            model_name=settings.model_name,
            num_rounds=settings.rounds.num_rounds,
            plan=settings.plan,
            secure=secure_info,
            dp=dp_info,
            mode="sync" if buffered is None else buffered.mode.value,
        ),
        store=store,
        checkpoints=checkpoints,
        resumed_from_round=None if last is None else last.round_id,
        identity=identity,
    )
