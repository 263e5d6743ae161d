"""The model the hospitals federate: a small multilayer perceptron over the 30
measurements of a tumour, malignant (0) or benign (1).

Every party imports this module (``--learner breast_cancer_learner:learner``, run from
this folder); each client reads its own CSV file (``veilfl client --data FILE``), whose
``label`` column is the class and whose other 30 columns are the features.
"""

from torch import nn

from veilfl import ArrayDataset, Learner, sgd_learner


def mlp() -> nn.Module:
    """30 features -> 16 hidden units -> 2 classes."""
    return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))


def learner(seed: int | None = None) -> Learner[ArrayDataset]:
    """Plain local SGD with the coordinator's plan."""
    return sgd_learner(mlp, seed=seed)
