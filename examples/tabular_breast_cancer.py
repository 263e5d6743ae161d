"""Federated learning on a real tabular data set: scikit-learn's breast-cancer set
(569 tumours, 30 measurements each, malignant or benign), split across 4 hospitals
that train a small multilayer perceptron together, with secure aggregation.

Run: python examples/tabular_breast_cancer.py
(needs scikit-learn: `pip install ".[examples]"` in the veilfl checkout)
"""

import numpy as np
from sklearn.datasets import load_breast_cancer
from torch import nn

import veilfl
from veilfl.ml import ArrayDataset, partition_iid, sgd_learner

features, labels = load_breast_cancer(return_X_y=True)
order = np.random.default_rng(0).permutation(len(labels))  # shuffle once, then split
features, labels = features[order].astype(np.float32), labels[order].astype(np.int64)
train, test = slice(0, 455), slice(455, None)
# Standardise with statistics the hospitals agree on beforehand (here: the training rows).
mean, std = features[train].mean(axis=0), features[train].std(axis=0)
features = (features - mean) / std
hospitals = [
    ArrayDataset(images=features[train][part], labels=labels[train][part])
    for part in partition_iid(455, 4, seed=0)
]


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))


result = veilfl.simulate(
    sgd_learner(mlp, seed=0),  # plain SGD on each hospital's rows
    client_data=hospitals,
    test_data=ArrayDataset(images=features[test], labels=labels[test]),
    config=veilfl.SimulationConfig(
        veilfl.RunSpec(
            model_name="simulation",
            rounds=veilfl.RoundConfig(num_rounds=10, clients_per_round=4),
            plan=veilfl.LocalTrainingPlan(learning_rate=0.05, epochs=2, batch_size=16),
        ),
        secure=veilfl.SecureAggregationConfig(
            threshold=2,
            num_aggregators=3,
            norm_bound=2.0,
            max_samples_per_client=max(len(h) for h in hospitals),
        ),
    ),
)
for metrics in result.history:
    print(f"round {metrics.round_id}: test accuracy {metrics.test_accuracy:.3f}")
