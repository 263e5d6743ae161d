"""Models, data, partitioners and local training: everything that touches torch.

* :mod:`~veilfl.ml.datasets` — MNIST loaded offline, and small synthetic data sets.
* :mod:`~veilfl.ml.partition` — IID, Dirichlet and shard splits across clients.
* :mod:`~veilfl.ml.models` — the built-in models, by name.
* :mod:`~veilfl.ml.weights` — ``torch.nn.Module`` to and from :data:`veilfl.tensors.Weights`.
* :mod:`~veilfl.ml.training` — local SGD training and evaluation.
* :mod:`~veilfl.ml.learner` — how the federation builds, trains and evaluates a model.

Sample-level DP-SGD (:mod:`veilfl.ml.dp_sgd`) imports Opacus, so it is not loaded here.
"""

from veilfl.ml.datasets import (
    MNIST_DIR_ENV,
    ArrayDataset,
    MnistSplits,
    load_mnist,
    synthetic_dataset,
)
from veilfl.ml.learner import (
    Learner,
    LocalUpdate,
    TrainOutcome,
    evaluate_array_dataset,
    mnist_learner,
    sgd_learner,
    sgd_train,
)
from veilfl.ml.models import MODELS, McMahanCNN, SimpleCNN, build_model, count_parameters
from veilfl.ml.partition import (
    IndexArray,
    PartitionScheme,
    partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)
from veilfl.ml.training import (
    EvalResult,
    ProgressCallback,
    TrainConfig,
    TrainProgress,
    TrainResult,
    evaluate,
    train_local,
)
from veilfl.ml.weights import get_weights, set_weights

__all__ = [
    "MNIST_DIR_ENV",
    "MODELS",
    "ArrayDataset",
    "EvalResult",
    "IndexArray",
    "Learner",
    "LocalUpdate",
    "McMahanCNN",
    "MnistSplits",
    "PartitionScheme",
    "ProgressCallback",
    "SimpleCNN",
    "TrainConfig",
    "TrainOutcome",
    "TrainProgress",
    "TrainResult",
    "build_model",
    "count_parameters",
    "evaluate",
    "evaluate_array_dataset",
    "get_weights",
    "load_mnist",
    "mnist_learner",
    "partition",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
    "set_weights",
    "sgd_learner",
    "sgd_train",
    "synthetic_dataset",
    "train_local",
]
