"""How an aggregate becomes the next global model: one interface, several strategies."""

from veilfl.strategy.aggregate import Aggregate, WeightedSum
from veilfl.strategy.base import ModelHistory, ServerStrategy
from veilfl.strategy.buffered import FedAsync, FedBuff
from veilfl.strategy.fedavg import FedAvg
from veilfl.strategy.fedopt import (
    SERVER_OPTIMIZERS,
    FedAdagrad,
    FedAdam,
    FedOpt,
    FedYogi,
    server_optimizer,
)

__all__ = [
    "SERVER_OPTIMIZERS",
    "Aggregate",
    "FedAdagrad",
    "FedAdam",
    "FedAsync",
    "FedAvg",
    "FedBuff",
    "FedOpt",
    "FedYogi",
    "ModelHistory",
    "ServerStrategy",
    "WeightedSum",
    "server_optimizer",
]
