"""veilfl: secure, asynchronous federated learning.

The names below are the public Python API. They load lazily, so that importing a
light part of the package (say, the crypto core in an aggregator process) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
"""The release (PEP 440): the one place it is declared; pyproject.toml reads it from here."""

_EXPORTS: dict[str, str] = {
    "Aggregate": "veilfl.strategy.aggregate",
    "ArrayDataset": "veilfl.ml.datasets",
    "ClientPolicy": "veilfl.protocol.client_policy",
    "ClientSummary": "veilfl.client.http_client",
    "Coordinator": "veilfl.protocol.coordinator",
    "CsvSource": "veilfl.ml.data_sources",
    "DataSource": "veilfl.ml.data_sources",
    "EnrollmentPolicy": "veilfl.auth.enrollment",
    "Evaluation": "veilfl.protocol.metrics",
    "ExecutionSettings": "veilfl.sim.backends",
    "FedAvg": "veilfl.strategy.fedavg",
    "ImageFolderSource": "veilfl.ml.data_sources",
    "Learner": "veilfl.ml.learner",
    "LocalData": "veilfl.ml.local_data",
    "LocalTrainingPlan": "veilfl.protocol.messages",
    "LocalUpdate": "veilfl.ml.learner",
    "MnistSource": "veilfl.ml.data_sources",
    "ParquetSource": "veilfl.ml.data_sources",
    "RetryPolicy": "veilfl.client.http_client",
    "RoundConfig": "veilfl.protocol.sync_round",
    "RoundMetrics": "veilfl.protocol.metrics",
    "RunSpec": "veilfl.protocol.run_spec",
    "SecureAggregationConfig": "veilfl.secagg.config",
    "SecureSettings": "veilfl.protocol.run_spec",
    "ServerOptimizerConfig": "veilfl.strategy.settings",
    "SimulationConfig": "veilfl.sim.simulator",
    "SimulationResult": "veilfl.sim.simulator",
    "TorchDatasetSource": "veilfl.ml.data_sources",
    "TrainOutcome": "veilfl.ml.learner",
    "VeilflError": "veilfl.errors",
    "build_coordinator": "veilfl.protocol.assembly",
    "build_executor": "veilfl.sim.backends",
    "client_ssl_context": "veilfl.tls",
    "data_source": "veilfl.ml.data_sources",
    "generate_keypair": "veilfl.crypto.keys",
    "issue_server_certificate": "veilfl.tls",
    "load_or_create_identity": "veilfl.keyfiles",
    "local_data_from": "veilfl.ml.data_sources",
    "make_certificate_authority": "veilfl.tls",
    "mnist_learner": "veilfl.ml.learner",
    "partitioned_local_data": "veilfl.ml.data_sources",
    "register_data_source": "veilfl.ml.data_sources",
    "run_aggregator": "veilfl.aggregator.api",
    "run_client": "veilfl.client.http_client",
    "run_coordinator": "veilfl.server.api",
    "sgd_learner": "veilfl.ml.learner",
    "simulate": "veilfl.sim.simulator",
    "simulate_async": "veilfl.sim.async_simulator",
}

__all__ = [
    "Aggregate",
    "ArrayDataset",
    "ClientPolicy",
    "ClientSummary",
    "Coordinator",
    "CsvSource",
    "DataSource",
    "EnrollmentPolicy",
    "Evaluation",
    "ExecutionSettings",
    "FedAvg",
    "ImageFolderSource",
    "Learner",
    "LocalData",
    "LocalTrainingPlan",
    "LocalUpdate",
    "MnistSource",
    "ParquetSource",
    "RetryPolicy",
    "RoundConfig",
    "RoundMetrics",
    "RunSpec",
    "SecureAggregationConfig",
    "SecureSettings",
    "ServerOptimizerConfig",
    "SimulationConfig",
    "SimulationResult",
    "TorchDatasetSource",
    "TrainOutcome",
    "VeilflError",
    "__version__",
    "build_coordinator",
    "build_executor",
    "client_ssl_context",
    "data_source",
    "generate_keypair",
    "issue_server_certificate",
    "load_or_create_identity",
    "local_data_from",
    "make_certificate_authority",
    "mnist_learner",
    "partitioned_local_data",
    "register_data_source",
    "run_aggregator",
    "run_client",
    "run_coordinator",
    "sgd_learner",
    "simulate",
    "simulate_async",
]

if TYPE_CHECKING:
    from veilfl.aggregator.api import run_aggregator
    from veilfl.auth.enrollment import EnrollmentPolicy
    from veilfl.client.http_client import ClientSummary, RetryPolicy, run_client
    from veilfl.crypto.keys import generate_keypair
    from veilfl.errors import VeilflError
    from veilfl.keyfiles import load_or_create_identity
    from veilfl.ml.data_sources import (
        CsvSource,
        DataSource,
        ImageFolderSource,
        MnistSource,
        ParquetSource,
        TorchDatasetSource,
        data_source,
        local_data_from,
        partitioned_local_data,
        register_data_source,
    )
    from veilfl.ml.datasets import ArrayDataset
    from veilfl.ml.learner import Learner, LocalUpdate, TrainOutcome, mnist_learner, sgd_learner
    from veilfl.ml.local_data import LocalData
    from veilfl.protocol.assembly import build_coordinator
    from veilfl.protocol.client_policy import ClientPolicy
    from veilfl.protocol.coordinator import Coordinator
    from veilfl.protocol.messages import LocalTrainingPlan
    from veilfl.protocol.metrics import Evaluation, RoundMetrics
    from veilfl.protocol.run_spec import RunSpec, SecureSettings
    from veilfl.protocol.sync_round import RoundConfig
    from veilfl.secagg.config import SecureAggregationConfig
    from veilfl.server.api import run_coordinator
    from veilfl.sim.async_simulator import simulate_async
    from veilfl.sim.backends import ExecutionSettings, build_executor
    from veilfl.sim.simulator import SimulationConfig, SimulationResult, simulate
    from veilfl.strategy.aggregate import Aggregate
    from veilfl.strategy.fedavg import FedAvg
    from veilfl.strategy.settings import ServerOptimizerConfig
    from veilfl.tls import client_ssl_context, issue_server_certificate, make_certificate_authority


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'veilfl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
