"""Asynchronous (FedBuff / FedAsync) simulation with virtual time.

A discrete-event simulation: each client joins at its join time, takes a task, and
finishes it after its (heterogeneous) training time, unless it drops out. The
coordinator core is the same :class:`~veilfl.protocol.coordinator.Coordinator` the HTTP server would
drive; secure aggregation and DP plug in as for rounds. Training is computed when a
task finishes, from the model version the client started on, so only in-flight
versions are kept in memory; an update that became too stale is refused without
training it.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from veilfl.errors import ConfigurationError, StaleUpdateError
from veilfl.ml.learner import Learner
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan, DpConfig
from veilfl.privacy.report import PrivacyReport
from veilfl.protocol.assembly import build_coordinator, describe_run
from veilfl.protocol.buffered import BufferConfig
from veilfl.protocol.effects import RoundOutcome
from veilfl.protocol.hand_in import HandInContext
from veilfl.protocol.messages import LocalTrainingPlan, PublishedAggregator, TaskKind
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.settings import CoordinatorSettings, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.sim.effects import InProcessEffects
from veilfl.sim.hand_in import SimulatedHandIn
from veilfl.sim.in_process_aggregators import InProcessAggregators
from veilfl.sim.profiles import ClientProfiles
from veilfl.tensors import Weights, spec_of, unflatten

__all__ = ["AsyncSimulationConfig", "AsyncSimulationResult", "simulate_async"]

RUN_ID = "simulation"

DataT = TypeVar("DataT")


@dataclass(frozen=True)
class AsyncSimulationConfig:
    """Settings of an asynchronous simulation.

    Attributes:
        buffer: Buffer size, staleness bound, versions to release, mode, concurrency.
        profiles: Client speeds, dropouts and join times.
        plan: Local training hyper-parameters.
        server_learning_rate: η for FedBuff.
        fedasync_mixing: α for FedAsync.
        secure: Secure aggregation per buffer, or None.
        dp: DP per released buffer, or None.
        poll_seconds: Virtual wait of a client told to wait (default: half the median
            training time).
        seed: Seeds the initial model.
    """

    buffer: BufferConfig
    profiles: ClientProfiles = field(default_factory=ClientProfiles)
    plan: LocalTrainingPlan = field(default_factory=LocalTrainingPlan)
    server_learning_rate: float = 1.0
    fedasync_mixing: float = 0.6
    secure: SecureAggregationConfig | None = None
    dp: DpConfig | None = None
    poll_seconds: float | None = None
    seed: int = 0
    min_clients: int = 1
    aggregator_min_participants: int = 1

    def settings(
        self, *, population: int, aggregators: tuple[PublishedAggregator, ...] = ()
    ) -> CoordinatorSettings:
        """The coordinator settings this simulation runs, for ``population`` clients."""
        return CoordinatorSettings(
            model_name="simulation",
            rounds=RoundConfig(
                num_rounds=self.buffer.max_versions,
                clients_per_round=max(self.buffer.buffer_size, self.min_clients),
                min_clients=self.min_clients,
            ),
            plan=self.plan,
            server_learning_rate=self.server_learning_rate,
            seed=self.seed,
            secure=(
                None
                if self.secure is None
                else SecureSettings(config=self.secure, aggregators=aggregators)
            ),
            dp=self.dp,
            buffer=self.buffer,
            fedasync_mixing=self.fedasync_mixing,
            population=population,
        )


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
    """

    history: tuple[RoundMetrics, ...]
    final_weights: Weights
    accepted: int
    refused_stale: int
    dropped: int
    wall_seconds: float
    privacy: PrivacyReport | None = None


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
    client_data: Sequence[DataT],
    test_data: DataT | None,
    config: AsyncSimulationConfig,
    on_release: Callable[[RoundMetrics], None] | None = None,
    stop_when: Callable[[RoundMetrics], bool] | None = None,
) -> AsyncSimulationResult:
    """Run buffered asynchronous training over ``client_data`` in virtual time."""
    if not client_data:
        raise ConfigurationError("A simulation needs at least one client's data.")
    started = time.perf_counter()
    weights = learner.initial_weights(seed=config.seed)
    spec = spec_of(weights)
    aggregators = (
        None
        if config.secure is None
        else InProcessAggregators(
            config.secure,
            run_id=RUN_ID,
            model_size=spec.total_size,
            min_participants=config.aggregator_min_participants,
        )
    )
    settings = config.settings(
        population=len(client_data),
        aggregators=() if aggregators is None else aggregators.published,
    )
    assembled = build_coordinator(settings, initial_weights=weights, run_id=RUN_ID)
    coordinator = assembled.coordinator
    run = describe_run(settings, run_id=RUN_ID, coordinator_key="", spec=spec)
    evaluator = learner.evaluator(test_data) if test_data is not None else None
    virtual_now = [0.0]
    history: list[RoundMetrics] = []
    stop = [False]

    def completed(outcome: RoundOutcome) -> None:
        metrics = outcome.metrics
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
    hand = SimulatedHandIn(coordinator, spec, aggregators=aggregators)
    ids = [f"sim-{i:05d}" for i in range(len(client_data))]
    speeds = config.profiles.speeds(len(ids))
    task_rng = config.profiles.task_rng()
    events: list[_Event] = []
    sequence = 0
    for index, join_at in enumerate(config.profiles.join_times(len(ids))):
        coordinator.join(ids[index], now=0.0)
        events.append(_Event(float(join_at), sequence, index, "ask"))
        sequence += 1
    heapq.heapify(events)
    versions: dict[int, Weights] = {0: weights}
    in_flight: dict[int, int] = {}
    scratch = learner.model_fn()
    poll = config.poll_seconds or config.profiles.base_seconds / 2
    accepted = refused = dropped = 0
    while events and not coordinator.done and not stop[0]:
        event = heapq.heappop(events)
        virtual_now[0] = event.at
        client_id = ids[event.client]
        if event.kind == "ask":
            task = coordinator.task_for(client_id, now=event.at)
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
                coordinator.drop_out(client_id)
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
            ticket = coordinator.ticket(client_id, trained_version=version)
        except StaleUpdateError:
            refused += 1
            coordinator.drop_out(client_id)
        else:
            update = learner.local_update(
                scratch, versions[version], client_data[event.client], config.plan
            )
            result = hand.deliver(
                update,
                context=HandInContext(
                    client_id=client_id,
                    run=run,
                    round_id=ticket.buffer_id,
                    base_version=version,
                    weight=ticket.weight,
                    admission="in-process" if run.secure is not None else None,
                    privacy=event.privacy,
                ),
                now=virtual_now[0],
            )
            accepted += int(result.taken and not result.duplicate)
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
    )


def _release_version(
    versions: dict[int, Weights], in_flight: dict[int, int], version: int, current: int
) -> None:
    in_flight[version] -= 1
    if in_flight[version] == 0 and version != current:
        del in_flight[version]
        versions.pop(version, None)
