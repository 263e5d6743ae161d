"""Asynchronous (FedBuff / FedAsync) simulation with virtual time.

A discrete-event simulation: each client joins at its join time, takes a task, and
finishes it after its (heterogeneous) training time, unless it drops out. The
coordinator core is the same :class:`~veilfl.protocol.coordinator.Coordinator` the HTTP server would
drive; secure aggregation and DP plug in as for rounds. Training is computed when a
task finishes, from the model version the client started on, so only in-flight
versions are kept in memory.

A task's training depends only on the version it started from, its client's data,
the plan and its seed, so when one finishes the simulator trains it together with the
next tasks due to finish (as many as the executor likes at once,
:attr:`~veilfl.sim.executor.TrainingExecutor.preferred_batch`) and keeps their updates
until their turn comes: the executor sees batches, and the protocol sees the same
events in the same virtual-time order as with one client at a time. An update that
became too stale is refused at its turn (trained for nothing, if it was trained ahead
with others).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from veilfl.errors import BufferFullError, ConfigurationError, StaleUpdateError
from veilfl.ml.learner import Learner, LocalUpdate, derive_seed
from veilfl.ml.local_data import LocalData
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.privacy.report import PrivacyReport
from veilfl.protocol.aggregator_minimums import DEFAULT_MIN_PARTICIPANTS
from veilfl.protocol.buffered import BufferConfig
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.effects import RoundOutcome
from veilfl.protocol.hand_in import HandInContext
from veilfl.protocol.messages import PublishedAggregator, TaskKind
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.run_description import RunDescription
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.sim.assembly import assemble_simulated_run
from veilfl.sim.backends import build_executor
from veilfl.sim.effects import InProcessEffects
from veilfl.sim.executor import TrainingExecutor, TrainingJob
from veilfl.sim.hand_in import SimulatedHandIn
from veilfl.sim.profiles import ClientProfiles
from veilfl.sim.simulator import client_id, simulated_spec
from veilfl.tensors import Weights, spec_of, unflatten

if TYPE_CHECKING:
    import torch

__all__ = [
    "AsyncSimulationConfig",
    "AsyncSimulationResult",
    "buffered_spec",
    "simulate_async",
]


DataT = TypeVar("DataT")


@dataclass(frozen=True)
class AsyncSimulationConfig:
    """A simulated buffered run: the run's description, and what only a simulation has.

    Attributes:
        spec: The run (:class:`~veilfl.protocol.run_spec.RunSpec`), with its
            ``buffer`` (size K, staleness bound, versions, mode, concurrency), local
            training, server learning rate (η for FedBuff) or FedAsync's α, DP, seed,
            and ``rounds.min_clients`` (the fewest clients a release sums over). Its
            population is the clients simulated; its aggregators are the in-process
            ones (``secure``).
        secure: The in-process aggregators' secure-aggregation parameters (default:
            the spec's, when it has secure aggregation); None aggregates in plaintext.
        profiles: Client speeds, dropouts and join times.
        poll_seconds: Virtual wait of a client told to wait (default: half the median
            training time).
        aggregator_min_participants: The fewest clients each in-process aggregator sums
            over (an aggregator operator's setting).

    Raises:
        ConfigurationError: for a run of synchronous rounds (simulate it with
            ``simulate``).
    """

    spec: RunSpec
    secure: SecureAggregationConfig | None = None
    profiles: ClientProfiles = field(default_factory=ClientProfiles)
    poll_seconds: float | None = None
    aggregator_min_participants: int = DEFAULT_MIN_PARTICIPANTS

    def __post_init__(self) -> None:
        if self.spec.buffer is None:
            raise ConfigurationError(
                "This run has synchronous rounds (no buffer); simulate it with simulate."
            )
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


def buffered_spec(
    buffer: BufferConfig,
    *,
    min_clients: int = 1,
    model_name: str = "simulation",
    **settings: Any,
) -> RunSpec:
    """A run of buffered aggregation whose rounds settings follow from its buffer: as
    many versions as ``buffer.max_versions``, K clients per release (at least
    ``min_clients``).

    Args:
        buffer: Buffer size K, staleness bound, versions, mode, concurrency.
        min_clients: The fewest clients a release sums over.
        model_name: What the run records as its model.
        settings: Any other :class:`~veilfl.protocol.run_spec.RunSpec` field (``plan``,
            ``dp``, ``server_learning_rate``, ...).
    """
    rounds = RoundConfig(
        num_rounds=buffer.max_versions,
        clients_per_round=max(buffer.buffer_size, min_clients),
        min_clients=min_clients,
    )
    return RunSpec(model_name=model_name, rounds=rounds, buffer=buffer, **settings)


@dataclass(frozen=True)
class AsyncSimulationResult:
    """What an asynchronous simulation produced.

    Attributes:
        history: Metrics per released buffer; ``seconds`` is the virtual time the buffer
            took, from opening to release.
        final_weights: The last model.
        accepted: Updates accepted into buffers.
        refused_stale: Updates refused as too stale.
        dropped: Tasks never finished.
        wall_seconds: Real time the simulation took.
        privacy: Under DP, the final privacy report (both observers).
        description: The run description the simulated parties agreed to.
    """

    history: tuple[RoundMetrics, ...]
    final_weights: Weights
    accepted: int
    refused_stale: int
    dropped: int
    wall_seconds: float
    privacy: PrivacyReport | None = None
    description: RunDescription | None = None


@dataclass(order=True)
class _Event:
    at: float
    sequence: int
    client: int = field(compare=False)
    kind: str = field(compare=False)  # "ask" or "finish"
    version: int = field(compare=False, default=-1)
    privacy: ClientPrivacyPlan | None = field(compare=False, default=None)


def simulate_async(
    learner: Learner[DataT],
    *,
    client_data: Sequence[DataT | LocalData[DataT]],
    test_data: DataT | None,
    config: AsyncSimulationConfig,
    on_release: Callable[[RoundMetrics], None] | None = None,
    stop_when: Callable[[RoundMetrics], bool] | None = None,
    executor: TrainingExecutor | None = None,
    device: str | torch.device | None = None,
    on_client_trained: Callable[[], None] | None = None,
    on_model: Callable[[int, Weights], None] | None = None,
) -> AsyncSimulationResult:
    """Run buffered asynchronous training over ``client_data`` in virtual time.

    Args:
        learner: How to build, train and evaluate the model.
        client_data: Each virtual client's local data (a data set, or a
            :class:`~veilfl.ml.local_data.LocalData` whose evaluation split the client
            evaluates the model it received on: federated evaluation).
        test_data: Server-side evaluation data, or None to skip evaluation.
        config: Simulation settings.
        on_release: Called with each released buffer's metrics.
        stop_when: Ends the simulation early once it returns True for a release.
        executor: Trains the clients' tasks (see :mod:`veilfl.sim.backends`); None
            trains them in this process, together when the learner can be batched.
            An executor given here is left open; one made here is closed.
        device: Train and evaluate there; None keeps the learner's device.
        on_client_trained: Called as each trained update is handed in.
        on_model: Called with each model version the run serves and its weights:
            version 0 (the initial model) first, then each completed round's model,
            before ``on_release`` (``veilfl simulate`` keeps the best one by it).

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
        return _simulate_async(
            learner,
            trainer,
            client_data=client_data,
            test_data=test_data,
            config=config,
            on_release=on_release,
            stop_when=stop_when,
            on_client_trained=on_client_trained,
            on_model=on_model,
        )
    finally:
        if owned:
            trainer.close()


def _simulate_async(
    learner: Learner[DataT],
    executor: TrainingExecutor,
    *,
    client_data: Sequence[DataT | LocalData[DataT]],
    test_data: DataT | None,
    config: AsyncSimulationConfig,
    on_release: Callable[[RoundMetrics], None] | None,
    stop_when: Callable[[RoundMetrics], bool] | None,
    on_client_trained: Callable[[], None] | None,
    on_model: Callable[[int, Weights], None] | None = None,
) -> AsyncSimulationResult:
    started = time.perf_counter()
    population = len(client_data)
    weights = learner.initial_weights(seed=config.spec.seed)
    spec = spec_of(weights)
    simulated = assemble_simulated_run(
        lambda published: config.settings(population=population, aggregators=published),
        secure=config.secure,
        weights=weights,
        min_participants=config.aggregator_min_participants,
    )
    assembled, run, aggregators = simulated.assembled, simulated.run, simulated.aggregators
    policies = simulated.policies
    coordinator = assembled.coordinator
    evaluator = learner.evaluator(test_data) if test_data is not None else None
    virtual_now = [0.0]
    history: list[RoundMetrics] = []
    stop = [False]

    if on_model is not None:
        on_model(0, weights)

    def completed(outcome: RoundOutcome) -> None:
        metrics = outcome.metrics
        if on_model is not None:
            on_model(outcome.new_version, unflatten(outcome.weights, spec))
        if evaluator is not None:
            evaluation = evaluator(unflatten(outcome.weights, spec))
            metrics = replace(metrics, test_loss=evaluation.loss, test_accuracy=evaluation.accuracy)
        history.append(metrics)
        if on_release is not None:
            on_release(metrics)
        if stop_when is not None and stop_when(metrics):
            stop[0] = True

    effects = InProcessEffects(
        coordinator, aggregators=aggregators, on_round=completed, clock=lambda: virtual_now[0]
    )
    hand = SimulatedHandIn(
        coordinator,
        spec,
        aggregators=aggregators,
        policy=ClientPolicy.accepting(run, min_cohort=config.aggregator_min_participants),
    )
    speeds = config.profiles.speeds(population)
    task_rng = config.profiles.task_rng()
    events: list[_Event] = []
    sequence = 0
    for index, join_at in enumerate(config.profiles.join_times(population)):
        coordinator.join(client_id(index), now=0.0)
        events.append(_Event(float(join_at), sequence, index, "ask"))
        sequence += 1
    heapq.heapify(events)
    versions: dict[int, Weights] = {0: weights}
    in_flight: dict[int, int] = {}
    trained_ahead: dict[int, LocalUpdate] = {}
    together = max(1, executor.preferred_batch)

    def job(finish: _Event) -> TrainingJob:
        return TrainingJob(
            client_index=finish.client,
            model_version=finish.version,
            weights=versions[finish.version],
            plan=run.plan,
            seed=derive_seed(config.spec.seed, "task", finish.sequence, finish.client),
        )

    def train(finish: _Event) -> LocalUpdate:
        """This task's update: trained ahead, or trained now with the next ones due."""
        update = trained_ahead.pop(finish.sequence, None)
        if update is not None:
            return update
        due = [finish]
        if together > 1:
            waiting = (e for e in events if e.kind == "finish" and e.sequence not in trained_ahead)
            due += heapq.nsmallest(together - 1, waiting)
        updates = executor.train([job(e) for e in due])
        for later, later_update in zip(due[1:], updates[1:], strict=True):
            trained_ahead[later.sequence] = later_update
        return updates[0]

    poll = config.poll_seconds or config.profiles.base_seconds / 2
    accepted = refused = dropped = 0
    while events and not coordinator.done and not stop[0]:
        event = heapq.heappop(events)
        virtual_now[0] = event.at
        client = client_id(event.client)
        if event.kind == "ask":
            task = coordinator.task_for(client, now=event.at)
            effects.settle()
            if task.kind is TaskKind.DONE:
                continue
            if task.kind is TaskKind.WAIT:
                heapq.heappush(events, _Event(event.at + poll, sequence, event.client, "ask"))
                sequence += 1
                continue
            assert task.model_version is not None
            version = task.model_version
            if version not in versions:
                versions[version] = coordinator.global_model().weights
            in_flight[version] = in_flight.get(version, 0) + 1
            if task_rng.random() < config.profiles.dropout:
                dropped += 1
                coordinator.drop_out(client)
                _release_version(versions, in_flight, version, coordinator.model_version)
                heapq.heappush(
                    events,
                    _Event(event.at + config.profiles.base_seconds, sequence, event.client, "ask"),
                )
                sequence += 1
                continue
            duration = (
                config.profiles.base_seconds
                * speeds[event.client]
                * task_rng.lognormal(0.0, config.profiles.jitter_sigma)
            )
            heapq.heappush(
                events,
                _Event(
                    event.at + float(duration),
                    sequence,
                    event.client,
                    "finish",
                    version,
                    task.privacy,
                ),
            )
            sequence += 1
            continue
        # a client finished training on event.version
        version = event.version
        try:
            ticket = coordinator.ticket(client, trained_version=version, now=virtual_now[0])
        except StaleUpdateError:
            refused += 1
            trained_ahead.pop(event.sequence, None)
            coordinator.drop_out(client)
        except BufferFullError as full:  # keep the update; ask for a place again later
            heapq.heappush(events, replace(event, at=event.at + full.retry_after_s))
            continue
        else:
            update = train(event)
            if on_client_trained is not None:
                on_client_trained()
            result = hand.deliver(
                update,
                context=HandInContext(
                    client_id=client,
                    run=run,
                    round_id=ticket.buffer_id,
                    base_version=version,
                    weight=ticket.weight,
                    admission="in-process" if run.secure is not None else None,
                    privacy=event.privacy,
                    aggregator_policies=policies,
                ),
                now=virtual_now[0],
            )
            accepted += int(result.taken and not result.duplicate)
            if not result.taken:
                coordinator.drop_out(client)  # frees the place its ticket held
            effects.settle()
        _release_version(versions, in_flight, version, coordinator.model_version)
        heapq.heappush(events, _Event(event.at, sequence, event.client, "ask"))
        sequence += 1
    return AsyncSimulationResult(
        history=tuple(history),
        final_weights=coordinator.global_model().weights,
        accepted=accepted,
        refused_stale=refused,
        dropped=dropped,
        wall_seconds=time.perf_counter() - started,
        privacy=None if assembled.privacy is None else assembled.privacy.report(),
        description=simulated.description,
    )


def _release_version(
    versions: dict[int, Weights], in_flight: dict[int, int], version: int, current: int
) -> None:
    in_flight[version] -= 1
    if in_flight[version] == 0 and version != current:
        del in_flight[version]
        versions.pop(version, None)
