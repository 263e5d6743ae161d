"""How an aggregate becomes the next global model: one interface, several strategies."""

from veilfl.strategy.aggregate import Aggregate, WeightedSum
from veilfl.strategy.base import ModelHistory, ServerStrategy
from veilfl.strategy.buffered import FedAsync, FedBuff
from veilfl.strategy.fedavg import FedAvg

__all__ = [
    "Aggregate",
    "FedAsync",
    "FedAvg",
    "FedBuff",
    "ModelHistory",
    "ServerStrategy",
    "WeightedSum",
]
