"""Test support: coordinator cores and their HTTP service for tiny models, and the
in-process answers to their commands."""

from __future__ import annotations

import random

from veilfl.protocol.aggregation import AggregationBackend, PlaintextAggregation
from veilfl.protocol.assembly import build_coordinator
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.effects import (
    CollectAggregateShares,
    CollectCommitments,
    CollectHoldings,
    CollectNoiseDeals,
    CollectVerifierShares,
    Command,
    Effect,
    Event,
    PersistRound,
    RoundCompleted,
    RoundOutcome,
    RoundPersisted,
)
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_description import RunDescription
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig, SyncRoundMachine
from veilfl.server.service import CoordinatorService
from veilfl.sim.in_process_aggregators import InProcessAggregators
from veilfl.strategy.base import ServerStrategy
from veilfl.strategy.fedavg import FedAvg
from veilfl.tensors import Weights, spec_of

__all__ = [
    "MemoryCommands",
    "described",
    "service_for",
    "settle",
    "sync_core",
    "sync_service",
    "tiny_description",
]


def sync_core(
    start: Weights,
    *,
    aggregation: AggregationBackend | None = None,
    strategy: ServerStrategy | None = None,
    **rounds: float | int,
) -> Coordinator:
    """FedAvg rounds over ``start`` (plaintext unless ``aggregation`` is given); the
    keyword arguments are :class:`RoundConfig` fields. Sampling is seeded."""
    config = RoundConfig(**rounds)  # type: ignore[arg-type]
    return Coordinator(
        schedule=SyncRoundMachine(config, rng=random.Random(0)),
        spec=spec_of(start),
        initial_weights=start,
        aggregation=aggregation or PlaintextAggregation(spec_of(start)),
        strategy=strategy or FedAvg(),
        round_timeout_s=config.round_timeout_s,
    )


def settle(
    core: Coordinator,
    *,
    now: float = 0.0,
    aggregators: InProcessAggregators | None = None,
    seen: list[Effect] | None = None,
) -> list[RoundOutcome]:
    """Answer every queued command in process (records are 'persisted' at once);
    return the rounds that completed. Every effect is appended to ``seen``, if given."""
    completed: list[RoundOutcome] = []
    while effects := core.drain():
        if seen is not None:
            seen.extend(effects)
        for effect in effects:
            events: list[Event] = []
            if isinstance(effect, PersistRound):
                events = [RoundPersisted(effect.outcome.cohort.round_id)]
            elif isinstance(
                effect,
                CollectHoldings
                | CollectVerifierShares
                | CollectCommitments
                | CollectNoiseDeals
                | CollectAggregateShares,
            ):
                assert aggregators is not None, "a secure core needs aggregators"
                events = aggregators.perform(effect)
            elif isinstance(effect, RoundCompleted):
                completed.append(effect.outcome)
            for event in events:
                core.handle(event, now=now)
    return completed


class MemoryCommands:
    """Performs an HTTP service's commands in memory (and the aggregators' in process)."""

    def __init__(self, aggregators: InProcessAggregators | None = None) -> None:
        self.aggregators = aggregators
        self.persisted: list[RoundOutcome] = []

    async def perform(self, command: Command) -> list[Event]:
        if isinstance(command, PersistRound):
            self.persisted.append(command.outcome)
            return [RoundPersisted(command.outcome.cohort.round_id)]
        assert self.aggregators is not None
        return self.aggregators.perform(command)


def sync_service(
    core: Coordinator,
    *,
    max_update_bytes: int = 1 << 20,
    description: RunDescription | None = None,
    performer: MemoryCommands | None = None,
) -> CoordinatorService:
    """The async service around ``core`` (a plaintext run of the tiny model, unless
    ``description`` says otherwise); its run id is the description's hash."""
    return CoordinatorService(
        core,
        description=description or tiny_description(core),
        performer=performer or MemoryCommands(),
        max_update_bytes=max_update_bytes,
    )


def tiny_description(core: Coordinator, **fields: object) -> RunDescription:
    """A plaintext run of the tiny model over ``core`` (``fields`` change the spec)."""
    rounds = int(core.schedule.describe()["num_rounds"])  # type: ignore[call-overload]
    spec = RunSpec(
        model_name="tiny",
        rounds=RoundConfig(num_rounds=rounds, clients_per_round=1),
        plan=LocalTrainingPlan(),
        **fields,  # type: ignore[arg-type]
    )
    return described(spec, model_size=core.spec.total_size)


def described(settings: RunSpec, *, model_size: int, coordinator_key: str = "") -> RunDescription:
    """``settings`` sealed for a model of ``model_size`` parameters (no salt)."""
    return RunDescription(
        settings.sealed(coordinator_key=coordinator_key, salt="", model_size=model_size)
    )


def service_for(
    settings: RunSpec,
    start: Weights,
    *,
    aggregators: InProcessAggregators | None = None,
    max_update_bytes: int = 1 << 24,
) -> CoordinatorService:
    """The HTTP service of a run built from ``settings``, as ``veilfl server`` builds it,
    with its commands performed in memory (and by in-process aggregators, which consent
    to the run)."""
    description = described(settings, model_size=spec_of(start).total_size)
    core = build_coordinator(
        description.spec, initial_weights=start, run_id=description.run_id
    ).coordinator
    if aggregators is not None:  # as HTTP aggregators learn the run (its noise, if any)
        consents = aggregators.attach(description.info)
        description = RunDescription(description.spec, consents)
    return CoordinatorService(
        core,
        description=description,
        performer=MemoryCommands(aggregators),
        max_update_bytes=max_update_bytes,
    )
