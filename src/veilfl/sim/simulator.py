"""The in-process simulator: many virtual clients, one process, no HTTP.

It builds its coordinator with the same :func:`~veilfl.protocol.assembly.build_coordinator`
as the HTTP server, answers the core's commands in process, and hands updates in through
the same pipeline as the HTTP client, with a virtual clock. So experiments with hundreds
of clients exercise the real protocol logic (sampling, deadlines, dropouts, secure
aggregation, DP, accounting) without sockets.

Each round's local training goes to a :class:`~veilfl.sim.executor.TrainingExecutor`
as one list of jobs (:mod:`veilfl.sim.backends`: in process, batched when the learner
can be, or on Ray), seeded per round and client, so every executor trains the same
updates. Updates come back one at a time and are handed in as they come, so memory
grows with the clients training together, not with the population; apart from the
coordinator's list of joined clients, the simulator keeps nothing per client.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Generic, TypeVar

from veilfl.errors import ConfigurationError
from veilfl.ml.learner import Learner, derive_seed
from veilfl.ml.local_data import LocalData
from veilfl.privacy.report import PrivacyReport
from veilfl.protocol.aggregator_minimums import DEFAULT_MIN_PARTICIPANTS
from veilfl.protocol.assembly import CohortPlan
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.effects import RoundOutcome
from veilfl.protocol.hand_in import HandInContext
from veilfl.protocol.messages import PublishedAggregator, Task, TaskKind
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.run_description import RunDescription
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.sim.assembly import assemble_simulated_run
from veilfl.sim.backends import build_executor
from veilfl.sim.effects import InProcessEffects
from veilfl.sim.executor import TrainingExecutor, TrainingJob
from veilfl.sim.hand_in import PhaseTimings, SimulatedHandIn
from veilfl.sim.profiles import ClientProfiles
from veilfl.tensors import Weights, spec_of, unflatten

if TYPE_CHECKING:
    import torch

__all__ = [
    "PhaseTimings",
    "SimulationConfig",
    "SimulationResult",
    "client_id",
    "simulate",
    "simulated_spec",
]

DataT = TypeVar("DataT")


@dataclass(frozen=True)
class SimulationConfig:
    """A simulated run: the run's description, and what only a simulation has.

    Attributes:
        spec: The run (:class:`~veilfl.protocol.run_spec.RunSpec`): rounds, local
            training, server learning rate and optimiser, seed, DP and every other
            setting, as ``veilfl server`` would run it. Its population is the clients
            simulated; its aggregators are the in-process ones (``secure``).
        secure: The in-process aggregators' secure-aggregation parameters (default:
            the spec's, when it has secure aggregation); None aggregates in plaintext.
        dropout_probability: Chance that a sampled client never reports in a round.
        through_wire: Encode and decode every update with the wire codec, to count
            (in-process) transfer cost.
        aggregators_down: Aggregators that are unreachable for the whole simulation.
        profiles: Heterogeneous client speeds and dropouts; the clock is then virtual
            and a round lasts until its slowest reporting client finishes (or its
            deadline, when a sampled client dropped out).
        aggregator_min_participants: The fewest clients each in-process aggregator sums
            over (an aggregator operator's setting; default 2, as ``veilfl aggregator``).
            As ``veilfl server`` does at start-up, a run whose clients per round (or
            expected sample) is smaller is refused, and a smaller ``min_clients`` is
            raised to it.

    Raises:
        ConfigurationError: for a buffered run (simulate it with ``simulate_async``) or
            a dropout probability outside [0, 1).
    """

    spec: RunSpec
    secure: SecureAggregationConfig | None = None
    dropout_probability: float = 0.0
    through_wire: bool = True
    aggregators_down: frozenset[int] = frozenset()
    profiles: ClientProfiles | None = None
    aggregator_min_participants: int = DEFAULT_MIN_PARTICIPANTS

    def __post_init__(self) -> None:
        if self.spec.buffer is not None:
            raise ConfigurationError(
                "This run is buffered (FedBuff or FedAsync); simulate it with simulate_async."
            )
        if not 0 <= self.dropout_probability < 1:
            raise ConfigurationError("dropout_probability must be in [0, 1).")
        if self.secure is None and self.spec.secure is not None:
            object.__setattr__(self, "secure", self.spec.secure.config)

    def settings(
        self, *, population: int, aggregators: tuple[PublishedAggregator, ...] = ()
    ) -> RunSpec:
        """The run this simulation runs, for ``population`` clients and the in-process
        ``aggregators``."""
        return simulated_spec(
            self.spec, self.secure, population=population, aggregators=aggregators
        )


def simulated_spec(
    spec: RunSpec,
    secure: SecureAggregationConfig | None,
    *,
    population: int,
    aggregators: tuple[PublishedAggregator, ...],
) -> RunSpec:
    """``spec`` with the simulation's population and in-process aggregators."""
    secured = None if secure is None else SecureSettings(config=secure, aggregators=aggregators)
    return replace(spec, population=population, secure=secured)


@dataclass(frozen=True)
class SimulationResult(Generic[DataT]):
    """What a simulation produced.

    Attributes:
        history: Metrics of each completed round (evaluated, when there is test data).
        final_weights: The last global model.
        timings: Seconds per phase.
        excluded: Clients left out of each round's sum, by round.
        cohort: The cohort sizes and sampling rate the run was assembled with.
        privacy: Under DP, the final privacy report (both observers).
        description: The run description the simulated parties agreed to.
    """

    history: tuple[RoundMetrics, ...]
    final_weights: Weights
    timings: PhaseTimings
    excluded: dict[int, tuple[str, ...]] = field(default_factory=dict)
    cohort: CohortPlan | None = None
    privacy: PrivacyReport | None = None
    description: RunDescription | None = None


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


def client_id(index: int) -> str:
    """The id of virtual client ``index`` (its data is ``client_data[index]``)."""
    return f"sim-{index:05d}"


def simulate(
    learner: Learner[DataT],
    *,
    client_data: Sequence[DataT | LocalData[DataT]],
    test_data: DataT | None,
    config: SimulationConfig,
    initial_weights: Weights | None = None,
    on_round: Callable[[RoundMetrics], None] | None = None,
    stop_when: Callable[[RoundMetrics], bool] | None = None,
    executor: TrainingExecutor | None = None,
    device: str | torch.device | None = None,
    on_client_trained: Callable[[], None] | None = None,
    on_model: Callable[[int, Weights], None] | None = None,
) -> SimulationResult[DataT]:
    """Run federated training with one virtual client per entry of ``client_data``.

    Args:
        learner: How to build, train and evaluate the model.
        client_data: Each virtual client's local data (any sequence: a list, or a
            :class:`~veilfl.ml.datasets.ClientPartitions` that copies a client's data
            out only when it trains). An entry may be a
            :class:`~veilfl.ml.local_data.LocalData`: its client then trains on
            ``train`` and, before training, evaluates the model it received on
            ``evaluation`` (federated evaluation, in the round's metrics).
        test_data: Server-side evaluation data, or None to skip evaluation.
        config: Simulation settings.
        initial_weights: Starting model (default: ``learner.initial_weights(seed)``).
        on_round: Called with each completed round's metrics.
        stop_when: Ends the simulation early once it returns True for a round.
        executor: Trains each round's clients (see :mod:`veilfl.sim.backends`; it
            must hold this ``client_data``); None trains them in this process,
            together when the learner can be batched. An executor given here is left
            open; one made here is closed.
        device: Train and evaluate there (``auto``, ``cpu``, ``cuda[:N]``); None keeps
            the learner's device.
        on_client_trained: Called as each client's update comes back from training
            (progress displays).
        on_model: Called with each model version the run serves and its weights:
            version 0 (the initial model) first, then each completed round's model,
            before ``on_round`` (``veilfl simulate`` keeps the best one by it).

    Returns:
        The history, the final weights and where the time went.

    Raises:
        ConfigurationError: for no clients, or settings that contradict each other.
    """
    if not client_data:
        raise ConfigurationError("A simulation needs at least one client's data.")
    if device is not None:
        learner = learner.on(device)
    owned = executor is None
    trainer = build_executor(learner, client_data) if executor is None else executor
    try:
        return _simulate(
            learner,
            trainer,
            client_data=client_data,
            test_data=test_data,
            config=config,
            initial_weights=initial_weights,
            on_round=on_round,
            stop_when=stop_when,
            on_client_trained=on_client_trained,
            on_model=on_model,
        )
    finally:
        if owned:
            trainer.close()


def _simulate(
    learner: Learner[DataT],
    executor: TrainingExecutor,
    *,
    client_data: Sequence[DataT | LocalData[DataT]],
    test_data: DataT | None,
    config: SimulationConfig,
    initial_weights: Weights | None,
    on_round: Callable[[RoundMetrics], None] | None,
    stop_when: Callable[[RoundMetrics], bool] | None,
    on_client_trained: Callable[[], None] | None,
    on_model: Callable[[int, Weights], None] | None = None,
) -> SimulationResult[DataT]:
    population = len(client_data)
    weights = initial_weights or learner.initial_weights(seed=config.spec.seed)
    spec = spec_of(weights)
    timings = PhaseTimings()
    evaluator = learner.evaluator(test_data) if test_data is not None else None
    simulated = assemble_simulated_run(
        lambda published: config.settings(population=population, aggregators=published),
        secure=config.secure,
        weights=weights,
        min_participants=config.aggregator_min_participants,
        down=config.aggregators_down,
    )
    assembled, run, aggregators = simulated.assembled, simulated.run, simulated.aggregators
    policies = simulated.policies
    core = assembled.coordinator
    clock = _VirtualClock(real=config.profiles is None)
    history: list[RoundMetrics] = []
    stop = [False]

    if on_model is not None:
        on_model(0, weights)

    def completed(outcome: RoundOutcome) -> None:
        metrics = outcome.metrics
        if on_model is not None:
            on_model(outcome.new_version, unflatten(outcome.weights, spec))
        if evaluator is not None:
            started = time.perf_counter()
            evaluation = evaluator(unflatten(outcome.weights, spec))
            timings.evaluation += time.perf_counter() - started
            metrics = replace(metrics, test_loss=evaluation.loss, test_accuracy=evaluation.accuracy)
        history.append(metrics)
        if on_round is not None:
            on_round(metrics)
        if stop_when is not None and stop_when(metrics):
            stop[0] = True

    effects = InProcessEffects(core, aggregators=aggregators, on_round=completed, clock=clock.now)
    hand = SimulatedHandIn(
        core,
        spec,
        aggregators=aggregators,
        through_wire=config.through_wire,
        timings=timings,
        policy=ClientPolicy.accepting(run, min_cohort=config.aggregator_min_participants),
    )

    def settle() -> None:
        started = time.perf_counter()
        effects.settle()
        timings.aggregation += time.perf_counter() - started

    now = clock.now()
    speeds = config.profiles.speeds(population) if config.profiles else None
    task_rng = config.profiles.task_rng() if config.profiles else None
    for index in range(population):
        core.join(client_id(index), now=now)
    dropouts = random.Random(config.spec.seed + 1)
    while not core.done and not stop[0]:
        now = clock.now()
        core.tick(now=now)
        settle()
        completed_before = len(history)
        global_model = core.global_model()
        working: list[tuple[float, int, Task]] = []
        for index in range(population):
            task = core.task_for(client_id(index), now=now)
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
            working.append((duration, index, task))
        settle()
        # Clients report in the order they finish; with profiles, in virtual time, and
        # those still training at the deadline are stragglers the round closes without.
        round_deadline = core.schedule.deadline
        finishing = []
        for duration, index, task in sorted(working, key=lambda w: w[0]):
            late = round_deadline is not None and now + duration > round_deadline
            if config.profiles is not None and late:
                break
            finishing.append((duration, index, task))
        jobs = [
            TrainingJob(
                client_index=index,
                model_version=global_model.version,
                weights=global_model.weights,
                plan=run.plan,
                seed=derive_seed(config.spec.seed, "train", task.round_id or 0, index),
            )
            for _, index, task in finishing
        ]
        started = time.perf_counter()
        updates = executor.stream(jobs)
        for (duration, index, task), update in zip(finishing, updates, strict=True):
            timings.training += time.perf_counter() - started
            if on_client_trained is not None:
                on_client_trained()
            if config.profiles is not None:
                clock.skip(max(0.0, now + duration - clock.now()))
            assert task.round_id is not None and task.model_version is not None
            hand.deliver(
                update,
                context=HandInContext(
                    client_id=client_id(index),
                    run=run,
                    round_id=task.round_id,
                    base_version=task.model_version,
                    admission="in-process" if run.secure is not None else None,
                    privacy=task.privacy,
                    aggregator_policies=policies,
                ),
                now=clock.now(),
            )
            settle()
            started = time.perf_counter()
        if len(history) == completed_before and not core.done:
            # Some sampled clients dropped out or straggled: let the deadline pass.
            round_deadline = core.schedule.deadline
            wait = (
                config.spec.rounds.round_timeout_s
                if round_deadline is None
                else round_deadline - clock.now()
            )
            clock.skip(max(wait, 0.0))
            core.tick(now=clock.now())
            settle()
    timings.aggregation -= timings.evaluation
    return SimulationResult(
        history=tuple(history),
        final_weights=core.global_model().weights,
        timings=timings,
        excluded=dict(effects.excluded),
        cohort=assembled.cohort,
        privacy=None if assembled.privacy is None else assembled.privacy.report(),
        description=simulated.description,
    )
