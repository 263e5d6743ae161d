"""The in-process simulator: many virtual clients, one process, no HTTP.

It drives the same :class:`~veilfl.protocol.coordinator.SyncCoordinator` as the HTTP
server, with a virtual clock, so experiments with hundreds of clients exercise the
real protocol logic (sampling, deadlines, dropouts, aggregation) without sockets.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ConfigurationError
from veilfl.ml.learner import Learner
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan, DpConfig, privatize
from veilfl.protocol.coordinator import AggregationBackend, PlaintextAggregation, SyncCoordinator
from veilfl.protocol.messages import LocalTrainingPlan, Task, TaskKind, UpdateHeader
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.private_aggregation import PrivateAggregation
from veilfl.protocol.sync_round import RoundConfig, SyncRoundMachine
from veilfl.secagg.client_shares import seal_update
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.coordinator_aggregation import SecureAggregation
from veilfl.sim.in_process_aggregators import InProcessAggregators
from veilfl.sim.profiles import ClientProfiles
from veilfl.strategy.fedavg import FedAvg
from veilfl.tensors import Weights, flatten, spec_of, unflatten
from veilfl.wire.tensor_codec import decode_weights, encode_weights

__all__ = ["PhaseTimings", "SimulationConfig", "SimulationResult", "simulate"]

DataT = TypeVar("DataT")


@dataclass(frozen=True)
class SimulationConfig:
    """Settings of a simulated run.

    Attributes:
        rounds: Round settings (sampling, minimum clients, deadline).
        plan: Local training hyper-parameters.
        server_learning_rate: FedAvg server learning rate.
        dropout_probability: Chance that a sampled client never reports in a round.
        seed: Seeds client sampling, dropouts and the initial model.
        through_wire: Encode and decode every update with the wire codec, to count
            (in-process) transfer cost.
        secure: Secure-aggregation parameters; None aggregates in plaintext.
        aggregators_down: Aggregators that are unreachable for the whole simulation.
        dp: Client-level differential privacy, or None.
        profiles: Heterogeneous client speeds and dropouts; the clock is then virtual
            and a round lasts until its slowest reporting client finishes (or its
            deadline, when a sampled client dropped out).
    """

    rounds: RoundConfig
    plan: LocalTrainingPlan = field(default_factory=LocalTrainingPlan)
    server_learning_rate: float = 1.0
    dropout_probability: float = 0.0
    seed: int = 0
    through_wire: bool = True
    secure: SecureAggregationConfig | None = None
    aggregators_down: frozenset[int] = frozenset()
    dp: DpConfig | None = None
    profiles: ClientProfiles | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.dropout_probability < 1:
            raise ConfigurationError("dropout_probability must be in [0, 1).")


@dataclass
class PhaseTimings:
    """Seconds spent per phase over a whole simulation.

    ``protection`` is the clients' secure-aggregation work (encode, share, seal);
    ``aggregation`` includes the aggregators' and the coordinator's work.
    """

    training: float = 0.0
    protection: float = 0.0
    transfer: float = 0.0
    aggregation: float = 0.0
    evaluation: float = 0.0


@dataclass(frozen=True)
class SimulationResult(Generic[DataT]):
    """What a simulation produced.

    Attributes:
        history: Metrics of each completed round.
        final_weights: The last global model.
        timings: Seconds per phase.
    """

    history: tuple[RoundMetrics, ...]
    final_weights: Weights
    timings: PhaseTimings


class _VirtualClock:
    """Real elapsed time plus the waits the simulator skips instead of sleeping; or,
    with client profiles, purely virtual time."""

    def __init__(self, *, real: bool = True) -> None:
        self._start = time.perf_counter()
        self._real = real
        self._skipped = 0.0

    def now(self) -> float:
        real = time.perf_counter() - self._start if self._real else 0.0
        return real + self._skipped

    def skip(self, seconds: float) -> None:
        self._skipped += seconds


def simulate(
    learner: Learner[DataT],
    *,
    client_data: Sequence[DataT],
    test_data: DataT | None,
    config: SimulationConfig,
    initial_weights: Weights | None = None,
    on_round: Callable[[RoundMetrics], None] | None = None,
    stop_when: Callable[[RoundMetrics], bool] | None = None,
) -> SimulationResult[DataT]:
    """Run federated training with one virtual client per entry of ``client_data``.

    Args:
        learner: How to build, train and evaluate the model.
        client_data: Each virtual client's local data.
        test_data: Server-side evaluation data, or None to skip evaluation.
        config: Simulation settings.
        initial_weights: Starting model (default: ``learner.initial_weights(seed)``).
        on_round: Called with each completed round's metrics.
        stop_when: Ends the simulation early once it returns True for a round.

    Returns:
        The history, the final weights and where the time went.
    """
    if not client_data:
        raise ConfigurationError("A simulation needs at least one client's data.")
    weights = initial_weights or learner.initial_weights(seed=config.seed)
    spec = spec_of(weights)
    timings = PhaseTimings()
    evaluator = learner.evaluator(test_data) if test_data is not None else None

    def timed_evaluate(candidate: Weights) -> object:
        assert evaluator is not None
        started = time.perf_counter()
        try:
            return evaluator(candidate)
        finally:
            timings.evaluation += time.perf_counter() - started

    aggregators: InProcessAggregators | None = None
    aggregation: AggregationBackend
    if config.secure is not None:
        aggregators = InProcessAggregators(
            config.secure,
            run_id="simulation",
            model_size=spec.total_size,
            down=config.aggregators_down,
        )
        aggregation = SecureAggregation(
            config.secure, aggregators, min_participants=config.rounds.min_clients
        )
    else:
        aggregation = PlaintextAggregation(spec, uniform_weights=config.dp is not None)
    if config.dp is not None:
        expected = config.rounds.sample_size(len(client_data))
        aggregation = PrivateAggregation(
            aggregation,
            config.dp,
            expected_clients=expected,
            sample_rate=expected / len(client_data),
        )
    csprng = CsprngStream()
    coordinator = SyncCoordinator(
        machine=SyncRoundMachine(config.rounds, rng=random.Random(config.seed)),
        spec=spec,
        initial_weights=weights,
        aggregation=aggregation,
        strategy=FedAvg(server_learning_rate=config.server_learning_rate),
        evaluate=timed_evaluate if evaluator is not None else None,  # type: ignore[arg-type]
    )
    client_ids = [f"sim-{index:05d}" for index in range(len(client_data))]
    clock = _VirtualClock(real=config.profiles is None)
    now = clock.now()
    speeds = config.profiles.speeds(len(client_data)) if config.profiles else None
    task_rng = config.profiles.task_rng() if config.profiles else None
    for client_id in client_ids:
        coordinator.join(client_id, now=now)
    dropouts = random.Random(config.seed + 1)
    scratch_model = learner.model_fn()
    completed = 0
    while not coordinator.done:
        now = clock.now()
        coordinator.tick(now=now)
        global_model = coordinator.global_model()
        working: list[tuple[float, int, str, Task]] = []
        for index, client_id in enumerate(client_ids):
            task = coordinator.task_for(client_id, now=now)
            if task.kind is not TaskKind.TRAIN:
                continue
            if dropouts.random() < config.dropout_probability:
                continue
            duration = 0.0
            if config.profiles is not None:
                assert speeds is not None and task_rng is not None
                if task_rng.random() < config.profiles.dropout:
                    continue
                duration = (
                    config.profiles.base_seconds
                    * float(speeds[index])
                    * float(task_rng.lognormal(0.0, config.profiles.jitter_sigma))
                )
            working.append((duration, index, client_id, task))
        # Clients report in the order they finish; with profiles, in virtual time, and
        # those still training at the deadline are stragglers the round closes without.
        deadline = coordinator.machine.status().deadline
        for duration, index, client_id, task in sorted(working, key=lambda w: w[0]):
            if config.profiles is not None:
                finish = now + duration
                if deadline is not None and finish > deadline:
                    break
                clock.skip(max(0.0, finish - clock.now()))
            assert task.round_id is not None and task.model_version is not None
            started = time.perf_counter()
            update = learner.local_update(
                scratch_model, global_model.weights, client_data[index], config.plan
            )
            timings.training += time.perf_counter() - started
            plan = None if task.privacy is None else ClientPrivacyPlan.from_json(task.privacy)
            flat = flatten(update.delta, spec)
            within_bound = False
            if plan is not None:
                started = time.perf_counter()
                private = privatize(flat, plan=plan, rng=csprng)
                flat, within_bound = private.vector.astype(np.float32), private.within_bound
                timings.protection += time.perf_counter() - started
            if aggregators is not None:
                assert config.secure is not None
                started = time.perf_counter()
                sealed = seal_update(
                    flat,
                    num_samples=update.num_samples,
                    loss=update.mean_loss,
                    config=config.secure,
                    public_keys=aggregators.public_keys,
                    run_id="simulation",
                    round_id=task.round_id,
                    client_id=client_id,
                    rng=csprng,
                    privacy=plan,
                    within_bound=within_bound,
                )
                timings.protection += time.perf_counter() - started
                started = time.perf_counter()
                acknowledged = aggregators.upload(task.round_id, client_id, sealed)
                timings.transfer += time.perf_counter() - started
                if len(acknowledged) < config.secure.threshold:
                    continue
                receipt = UpdateHeader(
                    client_id=client_id,
                    round_id=task.round_id,
                    base_version=task.model_version,
                    aggregators=acknowledged,
                )
                started = time.perf_counter()
                coordinator.record_share_upload(receipt, now=clock.now())
                timings.aggregation += time.perf_counter() - started
                continue
            header = UpdateHeader(
                client_id=client_id,
                round_id=task.round_id,
                base_version=task.model_version,
                num_samples=update.num_samples,
                loss=update.mean_loss,
            )
            delta = update.delta if plan is None else unflatten(flat, spec)
            if config.through_wire:
                started = time.perf_counter()
                body = encode_weights(delta, metadata=header.to_metadata())
                delta, _ = decode_weights(body, spec=spec)
                timings.transfer += time.perf_counter() - started
            started = time.perf_counter()
            coordinator.submit_plaintext_update(header, delta, now=clock.now())
            timings.aggregation += time.perf_counter() - started
        if len(coordinator.history) == completed:
            # Some sampled clients dropped out or straggled: let the deadline pass.
            deadline = coordinator.machine.status().deadline
            wait = config.rounds.round_timeout_s if deadline is None else deadline - clock.now()
            clock.skip(max(wait, 0.0))
            started = time.perf_counter()
            coordinator.tick(now=clock.now())
            timings.aggregation += time.perf_counter() - started
        new_rounds = coordinator.history[completed:]
        completed = len(coordinator.history)
        for metrics in new_rounds:
            if on_round is not None:
                on_round(metrics)
        if stop_when is not None and any(stop_when(m) for m in new_rounds):
            break
    timings.aggregation -= timings.evaluation
    return SimulationResult(
        history=coordinator.history,
        final_weights=coordinator.global_model().weights,
        timings=timings,
    )
