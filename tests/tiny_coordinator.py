"""Test support: a plaintext FedAvg coordinator core, and its HTTP service, for tiny
models."""

from __future__ import annotations

import random

from veilfl.protocol.coordinator import AggregationBackend, PlaintextAggregation, SyncCoordinator
from veilfl.protocol.messages import LocalTrainingPlan, RunInfo
from veilfl.protocol.sync_round import RoundConfig, SyncRoundMachine
from veilfl.server.service import CoordinatorService
from veilfl.strategy.fedavg import FedAvg
from veilfl.tensors import Weights, spec_of

__all__ = ["sync_core", "sync_service"]


def sync_core(
    start: Weights, *, aggregation: AggregationBackend | None = None, **rounds: float | int
) -> SyncCoordinator:
    """FedAvg rounds over ``start`` (plaintext unless ``aggregation`` is given); the
    keyword arguments are :class:`RoundConfig` fields. Sampling is seeded."""
    return SyncCoordinator(
        machine=SyncRoundMachine(RoundConfig(**rounds), rng=random.Random(0)),  # type: ignore[arg-type]
        spec=spec_of(start),
        initial_weights=start,
        aggregation=aggregation or PlaintextAggregation(spec_of(start)),
        strategy=FedAvg(),
    )


def sync_service(
    core: SyncCoordinator, *, run_id: str, max_update_bytes: int = 1 << 20
) -> CoordinatorService:
    """The async service around ``core`` for run ``run_id``."""
    return CoordinatorService(
        core,
        run_info=RunInfo(
            run_id=run_id,
            model_name="tiny",
            num_rounds=core.machine.config.num_rounds,
            plan=LocalTrainingPlan(),
        ),
        max_update_bytes=max_update_bytes,
    )
