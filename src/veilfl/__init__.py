"""veilfl: secure, asynchronous federated learning.

The names below are the public Python API. They load lazily, so that importing a
light part of the package (say, the crypto core in an aggregator process) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Aggregate": "veilfl.strategy.aggregate",
    "ClientSummary": "veilfl.client.http_client",
    "Evaluation": "veilfl.protocol.metrics",
    "FedAvg": "veilfl.strategy.fedavg",
    "Learner": "veilfl.ml.learner",
    "LocalTrainingPlan": "veilfl.protocol.messages",
    "LocalUpdate": "veilfl.ml.learner",
    "RetryPolicy": "veilfl.client.http_client",
    "RoundConfig": "veilfl.protocol.sync_round",
    "RoundMetrics": "veilfl.protocol.metrics",
    "SimulationConfig": "veilfl.sim.simulator",
    "SimulationResult": "veilfl.sim.simulator",
    "Coordinator": "veilfl.protocol.coordinator",
    "CoordinatorSettings": "veilfl.protocol.settings",
    "build_coordinator": "veilfl.protocol.assembly",
    "TrainOutcome": "veilfl.ml.learner",
    "mnist_learner": "veilfl.ml.learner",
    "run_client": "veilfl.client.http_client",
    "simulate": "veilfl.sim.simulator",
}

__all__ = [
    "Aggregate",
    "ClientSummary",
    "Coordinator",
    "CoordinatorSettings",
    "Evaluation",
    "FedAvg",
    "Learner",
    "LocalTrainingPlan",
    "LocalUpdate",
    "RetryPolicy",
    "RoundConfig",
    "RoundMetrics",
    "SimulationConfig",
    "SimulationResult",
    "TrainOutcome",
    "__version__",
    "build_coordinator",
    "mnist_learner",
    "run_client",
    "simulate",
]

if TYPE_CHECKING:
    from veilfl.client.http_client import ClientSummary, RetryPolicy, run_client
    from veilfl.ml.learner import Learner, LocalUpdate, TrainOutcome, mnist_learner
    from veilfl.protocol.assembly import build_coordinator
    from veilfl.protocol.coordinator import Coordinator
    from veilfl.protocol.messages import LocalTrainingPlan
    from veilfl.protocol.metrics import Evaluation, RoundMetrics
    from veilfl.protocol.settings import CoordinatorSettings
    from veilfl.protocol.sync_round import RoundConfig
    from veilfl.sim.simulator import SimulationConfig, SimulationResult, simulate
    from veilfl.strategy.aggregate import Aggregate
    from veilfl.strategy.fedavg import FedAvg


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'veilfl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
