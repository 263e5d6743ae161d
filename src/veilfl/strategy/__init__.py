"""How an aggregate becomes the next global model: one interface, several strategies."""

from veilfl.strategy.aggregate import Aggregate, WeightedSum
from veilfl.strategy.base import ModelHistory, ServerStrategy, StatefulStrategy, StrategyState
from veilfl.strategy.buffered import FedAsync, FedBuff
from veilfl.strategy.fedavg import FedAvg
from veilfl.strategy.fedopt import (
    SERVER_OPTIMIZERS,
    FedAdagrad,
    FedAdam,
    FedOpt,
    FedOptState,
    FedYogi,
    server_optimizer,
)
from veilfl.strategy.momentum import PseudoGradientStrategy, ServerSgd, ServerSgdState
from veilfl.strategy.schedule import LR_SCHEDULES, LearningRateSchedule
from veilfl.strategy.settings import (
    SERVER_OPTIMIZER_CHOICES,
    LrScheduleConfig,
    ServerOptimizerConfig,
)

__all__ = [
    "LR_SCHEDULES",
    "SERVER_OPTIMIZERS",
    "SERVER_OPTIMIZER_CHOICES",
    "Aggregate",
    "FedAdagrad",
    "FedAdam",
    "FedAsync",
    "FedAvg",
    "FedBuff",
    "FedOpt",
    "FedOptState",
    "FedYogi",
    "LearningRateSchedule",
    "LrScheduleConfig",
    "ModelHistory",
    "PseudoGradientStrategy",
    "ServerOptimizerConfig",
    "ServerSgd",
    "ServerSgdState",
    "ServerStrategy",
    "StatefulStrategy",
    "StrategyState",
    "WeightedSum",
    "server_optimizer",
]
