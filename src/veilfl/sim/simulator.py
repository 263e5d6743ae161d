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

from veilfl.errors import ConfigurationError
from veilfl.ml.learner import Learner
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan, DpConfig
from veilfl.protocol.coordinator import AggregationBackend, PlaintextAggregation, SyncCoordinator
from veilfl.protocol.messages import LocalTrainingPlan, Task, TaskKind
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.private_aggregation import PrivateAggregation
from veilfl.protocol.sync_round import RoundConfig, SyncRoundMachine
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.coordinator_aggregation import SecureAggregation
from veilfl.sim.hand_in import HandIn, PhaseTimings
from veilfl.sim.in_process_aggregators import InProcessAggregators
from veilfl.sim.profiles import ClientProfiles
from veilfl.strategy.fedavg import FedAvg
from veilfl.tensors import Weights, spec_of

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
    coordinator = SyncCoordinator(
        machine=SyncRoundMachine(config.rounds, rng=random.Random(config.seed)),
        spec=spec,
        initial_weights=weights,
        aggregation=aggregation,
        strategy=FedAvg(server_learning_rate=config.server_learning_rate),
        evaluate=timed_evaluate if evaluator is not None else None,  # type: ignore[arg-type]
    )
    hand_in = HandIn(
        spec=spec,
        secure=config.secure,
        aggregators=aggregators,
        through_wire=config.through_wire,
        timings=timings,
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
            hand_in.deliver(
                coordinator,
                client_id=client_id,
                round_id=task.round_id,
                base_version=task.model_version,
                update=update,
                privacy=plan,
                now=clock.now(),
            )
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
