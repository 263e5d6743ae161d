"""Asynchronous (FedBuff / FedAsync) simulation with virtual time.

A discrete-event simulation: each client joins at its join time, takes a task, and
finishes it after its (heterogeneous) training time, unless it drops out. The
coordinator core is the same :class:`BufferedCoordinator` the HTTP server would
drive; secure aggregation and DP plug in as for rounds. Training is computed when a
task finishes, from the model version the client started on, so only in-flight
versions are kept in memory; an update that became too stale is refused without
training it.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from veilfl.errors import ConfigurationError, StaleUpdateError
from veilfl.ml.learner import Learner
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan, DpConfig
from veilfl.protocol.buffered import BufferConfig, BufferedMachine, BufferMode
from veilfl.protocol.buffered_coordinator import BufferedCoordinator
from veilfl.protocol.coordinator import AggregationBackend, PlaintextAggregation
from veilfl.protocol.messages import LocalTrainingPlan, TaskKind
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.private_aggregation import PrivateAggregation
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.coordinator_aggregation import SecureAggregation
from veilfl.sim.hand_in import HandIn
from veilfl.sim.in_process_aggregators import InProcessAggregators
from veilfl.sim.profiles import ClientProfiles
from veilfl.strategy.buffered import FedAsync, FedBuff
from veilfl.tensors import Weights, spec_of

__all__ = ["AsyncSimulationConfig", "AsyncSimulationResult", "simulate_async"]

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


@dataclass(frozen=True)
class AsyncSimulationResult:
    """What an asynchronous simulation produced.

    Attributes:
        history: Metrics per released buffer; ``seconds`` is virtual time since start.
        final_weights: The last model.
        accepted: Updates accepted into buffers.
        refused_stale: Updates refused as too stale.
        dropped: Tasks never finished.
        wall_seconds: Real time the simulation took.
    """

    history: tuple[RoundMetrics, ...]
    final_weights: Weights
    accepted: int
    refused_stale: int
    dropped: int
    wall_seconds: float


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
    aggregators: InProcessAggregators | None = None
    aggregation: AggregationBackend
    if config.secure is not None:
        aggregators = InProcessAggregators(
            config.secure, run_id="simulation", model_size=spec.total_size
        )
        aggregation = SecureAggregation(config.secure, aggregators, min_participants=1)
    else:
        aggregation = PlaintextAggregation(spec, uniform_weights=True)
    if config.dp is not None:
        aggregation = PrivateAggregation(
            aggregation,
            config.dp,
            expected_clients=config.buffer.buffer_size,
            sample_rate=min(1.0, config.buffer.buffer_size / len(client_data)),
        )
    strategy: FedBuff | FedAsync = (
        FedAsync(mixing=config.fedasync_mixing)
        if config.buffer.mode is BufferMode.FEDASYNC
        else FedBuff(server_learning_rate=config.server_learning_rate)
    )
    virtual_now = [0.0]
    coordinator = BufferedCoordinator(
        machine=BufferedMachine(config.buffer),
        spec=spec,
        initial_weights=weights,
        aggregation=aggregation,
        strategy=strategy,
        evaluate=learner.evaluator(test_data) if test_data is not None else None,
        clock=lambda: virtual_now[0],
    )
    ids = [f"sim-{i:05d}" for i in range(len(client_data))]
    speeds = config.profiles.speeds(len(ids))
    task_rng = config.profiles.task_rng()
    hand_in = HandIn(spec=spec, secure=config.secure, aggregators=aggregators)
    events: list[_Event] = []
    sequence = 0
    for index, join_at in enumerate(config.profiles.join_times(len(ids))):
        coordinator.join(ids[index])
        events.append(_Event(float(join_at), sequence, index, "ask"))
        sequence += 1
    heapq.heapify(events)
    versions: dict[int, Weights] = {0: weights}
    in_flight: dict[int, int] = {}
    scratch = learner.model_fn()
    poll = config.poll_seconds or config.profiles.base_seconds / 2
    accepted = refused = dropped = 0
    released_seen = 0
    stop = False
    while events and not coordinator.done and not stop:
        event = heapq.heappop(events)
        virtual_now[0] = event.at
        client_id = ids[event.client]
        if event.kind == "ask":
            task = coordinator.task_for(client_id)
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
                coordinator.abandon(client_id)
                _release_version(versions, in_flight, version, coordinator.machine.version)
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
            privacy = None if task.privacy is None else ClientPrivacyPlan.from_json(task.privacy)
            heapq.heappush(
                events,
                _Event(
                    event.at + float(duration), sequence, event.client, "finish", version, privacy
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
            coordinator.abandon(client_id)
        else:
            update = learner.local_update(
                scratch, versions[version], client_data[event.client], config.plan
            )
            accepted += int(
                hand_in.deliver(
                    coordinator,
                    client_id=client_id,
                    round_id=ticket.buffer_id,
                    base_version=version,
                    update=update,
                    privacy=event.privacy,
                    now=virtual_now[0],
                    weight=ticket.weight,
                )
            )
        _release_version(versions, in_flight, version, coordinator.machine.version)
        for metrics in coordinator.history[released_seen:]:
            if on_release is not None:
                on_release(metrics)
            if stop_when is not None and stop_when(metrics):
                stop = True
        released_seen = len(coordinator.history)
        heapq.heappush(events, _Event(event.at, sequence, event.client, "ask"))
        sequence += 1
    return AsyncSimulationResult(
        history=coordinator.history,
        final_weights=coordinator.global_model().weights,
        accepted=accepted,
        refused_stale=refused,
        dropped=dropped,
        wall_seconds=time.perf_counter() - started,
    )


def _release_version(
    versions: dict[int, Weights], in_flight: dict[int, int], version: int, current: int
) -> None:
    in_flight[version] -= 1
    if in_flight[version] == 0 and version != current:
        del in_flight[version]
        versions.pop(version, None)
