"""Models, data, partitioners and local training (everything that touches torch)."""

from veilfl.ml.datasets import ArrayDataset, MnistSplits, load_mnist, synthetic_dataset
from veilfl.ml.learner import Learner, LocalUpdate, TrainOutcome, mnist_learner
from veilfl.ml.models import MODELS, McMahanCNN, SimpleCNN, build_model, count_parameters
from veilfl.ml.partition import (
    partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)
from veilfl.ml.training import EvalResult, TrainConfig, TrainResult, evaluate, train_local
from veilfl.ml.weights import get_weights, set_weights

__all__ = [
    "MODELS",
    "ArrayDataset",
    "EvalResult",
    "Learner",
    "LocalUpdate",
    "McMahanCNN",
    "MnistSplits",
    "SimpleCNN",
    "TrainConfig",
    "TrainOutcome",
    "TrainResult",
    "build_model",
    "count_parameters",
    "evaluate",
    "get_weights",
    "load_mnist",
    "mnist_learner",
    "partition",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
    "set_weights",
    "synthetic_dataset",
    "train_local",
]
