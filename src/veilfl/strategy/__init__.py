"""How a round's aggregate becomes the next global model."""

from veilfl.strategy.fedavg import AggregateUpdate, FedAvg, WeightedSum

__all__ = ["AggregateUpdate", "FedAvg", "WeightedSum"]
