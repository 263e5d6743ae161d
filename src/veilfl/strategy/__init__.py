"""How a round's aggregate becomes the next global model."""

from veilfl.strategy.fedavg import AggregateUpdate, FedAvg, WeightedSum
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
    "AggregateUpdate",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedOpt",
    "FedYogi",
    "WeightedSum",
    "server_optimizer",
]
