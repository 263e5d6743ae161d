"""Building a coordinator from a run folder: new, or resumed after a restart.

A run folder holds ``run.sqlite`` (run state, in WAL mode), ``checkpoints/`` (one
safetensors file per model version, written atomically), ``coordinator.key`` (the
coordinator's Ed25519 key, mode 0600, which signs round admissions and its requests
to the aggregators) and the metrics files. A coordinator started on a folder that
already holds a run resumes after its last completed round, from that round's
checkpoint (and the server optimiser's state saved with it): nothing completed is
lost. Under DP it also continues the privacy state exactly: the ledger, the adaptive
clipping norm and the sampling attempts recorded with the last completed round, and
each client's participations counted from the completed rounds' participant lists
(never from round ids, which abandoned rounds skip). The core itself comes from
:func:`veilfl.protocol.assembly.build_coordinator`, as in the simulators.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from veilfl.auth.identity import Identity
from veilfl.errors import ConfigurationError, StorageError
from veilfl.keyfiles import load_or_create_identity
from veilfl.privacy.run_state import DpRunState
from veilfl.protocol.assembly import (
    CohortPlan,
    PrivacyBackend,
    ResumePoint,
    build_coordinator,
)
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.effects import RoundOutcome
from veilfl.protocol.messages import RunInfo
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.run_description import RunDescription
from veilfl.protocol.run_spec import RunSpec
from veilfl.server.checkpoints import CheckpointStore
from veilfl.server.run_store import ParticipantRecord, RoundRecord, RunStore
from veilfl.tensors import Weights, spec_of, unflatten

__all__ = ["PreparedRun", "RunRecorder", "metrics_from_store", "prepare_run"]


class RunRecorder:
    """Persists each completed round: checkpoint first, then the run-state row.

    The checkpoint of version v+1 is written (atomically) before the row that says round
    r completed, in one SQLite transaction with its participants and (under DP) the
    privacy state after it. A crash between the two leaves an
    unreferenced checkpoint that the redone round overwrites; a crash before either loses
    only the round in progress, whose model was never served. Server-side evaluation
    comes later, off the request path, and is added to the row.
    """

    def __init__(self, store: RunStore, checkpoints: CheckpointStore) -> None:
        self._store = store
        self._checkpoints = checkpoints

    def persist(self, outcome: RoundOutcome, *, spec_weights: Callable[[], Weights]) -> None:
        """Write the checkpoint, then the round's row with the server optimiser's state
        (durable when this returns)."""
        cohort, metrics = outcome.cohort, outcome.metrics
        self._checkpoints.save(
            outcome.new_version, spec_weights(), metadata={"round_id": str(cohort.round_id)}
        )
        self._store.record_round(
            RoundRecord(
                round_id=cohort.round_id,
                model_version_before=cohort.base_version,
                model_version_after=outcome.new_version,
                opened_at=cohort.opened_at,
                closed_at=cohort.closed_at,
                num_participants=len(cohort.participants),
                train_loss=metrics.train_loss,
                test_loss=None,
                test_accuracy=None,
                seconds=metrics.seconds,
                extra_json=json.dumps(
                    {
                        "epsilon": metrics.epsilon,
                        "epsilon_coordinator": metrics.epsilon_coordinator,
                        "accounting": metrics.accounting,
                        "delta": metrics.delta,
                        "sampled": cohort.sampled,
                        "excluded": list(metrics.excluded),
                        "federated_loss": metrics.federated_loss,
                        "federated_accuracy": metrics.federated_accuracy,
                        "federated_examples": metrics.federated_examples,
                    }
                ),
            ),
            [
                ParticipantRecord(
                    round_id=cohort.round_id,
                    client_id=p.client_id,
                    num_samples=p.num_samples,
                    loss=p.loss,
                )
                for p in cohort.participants
            ],
            strategy_state=(
                None if outcome.strategy_state is None else outcome.strategy_state.to_bytes()
            ),
            privacy_state=None if outcome.privacy is None else outcome.privacy.to_json(),
        )

    def record_evaluation(self, metrics: RoundMetrics) -> None:
        """Add a round's server-side evaluation to its row."""
        self._store.record_evaluation(
            metrics.round_id, test_loss=metrics.test_loss, test_accuracy=metrics.test_accuracy
        )


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
                epsilon_coordinator=extra.get("epsilon_coordinator"),
                accounting=extra.get("accounting"),
                delta=extra.get("delta"),
                excluded=tuple(extra.get("excluded", ())),
                federated_loss=extra.get("federated_loss"),
                federated_accuracy=extra.get("federated_accuracy"),
                federated_examples=extra.get("federated_examples"),
            )
        )
    return out


@dataclass
class PreparedRun:
    """A coordinator core ready to serve, with the stores behind it (and, under DP, its
    private backend: the privacy report and state)."""

    coordinator: Coordinator
    cohort: CohortPlan
    description: RunDescription
    store: RunStore
    checkpoints: CheckpointStore
    recorder: RunRecorder
    resumed_from_round: int | None
    identity: Identity
    privacy: PrivacyBackend | None = None
    resume: ResumePoint | None = None

    @property
    def run_info(self) -> RunInfo:
        """The run as its parties read it."""
        return self.description.info

    def persist(self, outcome: RoundOutcome) -> None:
        """Durably record a completed round (see :class:`RunRecorder`)."""
        spec = self.coordinator.spec
        self.recorder.persist(outcome, spec_weights=lambda: unflatten(outcome.weights, spec))


def prepare_run(
    run_dir: Path,
    settings: RunSpec,
    *,
    initial_weights: Callable[[int], Weights],
) -> PreparedRun:
    """Open (or create) the run in ``run_dir`` and build its coordinator core.

    Args:
        run_dir: The run folder.
        settings: The run's settings. On resume they must match the stored ones.
        initial_weights: Builds the version-0 model from a seed (new runs only).

    A new run's spec is sealed here: the coordinator's key, a fresh salt and the model's
    size are fixed, and the run id is the spec's hash (stored with it).

    Raises:
        ConfigurationError: if the folder holds a run with other settings, or was
            created with another coordinator key.
        StorageError: if the run state or a checkpoint cannot be read, or the stored
            run's id is not its spec's hash.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = load_or_create_identity(run_dir / "coordinator.key")
    store = RunStore(run_dir / "run.sqlite")
    checkpoints = CheckpointStore(run_dir / "checkpoints", model_name=settings.model_name)
    stored_id = store.run_id()
    if stored_id is None:
        start = initial_weights(settings.seed)
        spec = settings.sealed(
            coordinator_key=identity.public_key_text,
            salt=secrets.token_hex(16),
            model_size=spec_of(start).total_size,
        )
        run_id = spec.run_id
        checkpoints.save(0, start)
        store.initialise(run_id, spec.to_json())
    else:
        run_id = stored_id
        spec = RunSpec.from_json(store.config())
        if spec.run_id != run_id:
            raise StorageError(
                f"The run folder {run_dir} holds run {run_id}, whose stored description "
                "does not hash to its id (made by an older veilfl, or altered); use a new "
                "folder."
            )
        if spec.unsealed() != settings.unsealed():
            raise ConfigurationError(
                f"The run folder {run_dir} holds run {run_id} with other settings; "
                "use a new folder, or start with the same settings to resume."
            )
        if spec.coordinator_key != identity.public_key_text:
            raise ConfigurationError(
                f"The run folder {run_dir} holds run {run_id} of another coordinator key "
                "than its coordinator.key; restore that key file, or use a new folder."
            )
    last = store.last_completed_round()
    resume: ResumePoint | None = None
    version = 0
    if last is None:
        if not checkpoints.path_for(0).exists():
            checkpoints.save(0, initial_weights(settings.seed))
    else:
        version = last.model_version_after
        stored_privacy = store.privacy_state(last.round_id)
        resume = ResumePoint(
            next_round=last.round_id + 1,
            model_version=version,
            releases=len(store.completed_rounds()),
            strategy_state=store.strategy_state(last.round_id),
            privacy=None if stored_privacy is None else DpRunState.from_json(stored_privacy),
            participations=store.participations() if settings.dp is not None else {},
            last_steps=(
                _last_steps(store) if settings.dp is not None and settings.dp.is_ftrl else {}
            ),
        )
    try:
        weights = checkpoints.load(version)
    except StorageError as exc:
        raise StorageError(
            f"Run {run_id} is at model version {version}, but that checkpoint cannot be "
            f"loaded: {exc}"
        ) from exc
    assembled = build_coordinator(spec, initial_weights=weights, run_id=run_id, resume=resume)
    coordinator = assembled.coordinator
    for client in store.clients():
        coordinator.join(client.client_id, now=0.0)
    return PreparedRun(
        coordinator=coordinator,
        cohort=assembled.cohort,
        description=RunDescription(spec),
        store=store,
        checkpoints=checkpoints,
        recorder=RunRecorder(store, checkpoints),
        resumed_from_round=None if last is None else last.round_id,
        identity=identity,
        privacy=assembled.privacy,
        resume=resume,
    )


def _last_steps(store: RunStore) -> dict[str, int]:
    """The last released round (counted from 1, as DP-FTRL's steps) each client took
    part in, from the completed rounds' participant lists."""
    last: dict[str, int] = {}
    for step, record in enumerate(store.completed_rounds(), start=1):
        for participant in store.participants(record.round_id):
            last[participant.client_id] = step
    return last
