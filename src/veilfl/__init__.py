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
    "client_ssl_context": "veilfl.tls",
    "load_or_create_identity": "veilfl.keyfiles",
    "mnist_learner": "veilfl.ml.learner",
    "run_client": "veilfl.client.http_client",
    "sgd_learner": "veilfl.ml.learner",
    "simulate": "veilfl.sim.simulator",
    "AggregateUpdate": "veilfl.strategy.fedavg",
    "ArrayDataset": "veilfl.ml.datasets",
    "ClientSummary": "veilfl.client.http_client",
    "Evaluation": "veilfl.protocol.metrics",
    "FedAvg": "veilfl.strategy.fedavg",
    "Learner": "veilfl.ml.learner",
    "LocalTrainingPlan": "veilfl.protocol.messages",
    "LocalUpdate": "veilfl.ml.learner",
    "RetryPolicy": "veilfl.client.http_client",
    "RoundConfig": "veilfl.protocol.sync_round",
    "RoundMetrics": "veilfl.protocol.metrics",
    "SecureAggregationConfig": "veilfl.secagg.config",
    "SimulationConfig": "veilfl.sim.simulator",
    "SimulationResult": "veilfl.sim.simulator",
    "SyncCoordinator": "veilfl.protocol.coordinator",
    "TrainOutcome": "veilfl.ml.learner",
    "VeilflError": "veilfl.errors",
}

__all__ = [
    "AggregateUpdate",
    "ArrayDataset",
    "ClientSummary",
    "Evaluation",
    "FedAvg",
    "Learner",
    "LocalTrainingPlan",
    "LocalUpdate",
    "RetryPolicy",
    "RoundConfig",
    "RoundMetrics",
    "SecureAggregationConfig",
    "SimulationConfig",
    "SimulationResult",
    "SyncCoordinator",
    "TrainOutcome",
    "VeilflError",
    "__version__",
    "client_ssl_context",
    "load_or_create_identity",
    "mnist_learner",
    "run_client",
    "sgd_learner",
    "simulate",
]

if TYPE_CHECKING:
    from veilfl.client.http_client import ClientSummary, RetryPolicy, run_client
    from veilfl.errors import VeilflError
    from veilfl.keyfiles import load_or_create_identity
    from veilfl.ml.datasets import ArrayDataset
    from veilfl.ml.learner import Learner, LocalUpdate, TrainOutcome, mnist_learner, sgd_learner
    from veilfl.protocol.coordinator import SyncCoordinator
    from veilfl.protocol.messages import LocalTrainingPlan
    from veilfl.protocol.metrics import Evaluation, RoundMetrics
    from veilfl.protocol.sync_round import RoundConfig
    from veilfl.secagg.config import SecureAggregationConfig
    from veilfl.sim.simulator import SimulationConfig, SimulationResult, simulate
    from veilfl.strategy.fedavg import AggregateUpdate, FedAvg
    from veilfl.tls import client_ssl_context


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'veilfl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
