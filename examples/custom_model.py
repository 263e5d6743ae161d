"""Federate your own torch model, data and training loop in about 20 lines.

Run: .venv/bin/python examples/custom_model.py
"""

import torch
from torch import nn

from veilfl import Evaluation, Learner, LocalTrainingPlan, RoundConfig, SimulationConfig, simulate
from veilfl.ml import TrainOutcome, partition_iid, synthetic_dataset

Data = tuple[torch.Tensor, torch.Tensor]


def train(model: nn.Module, data: Data, plan: LocalTrainingPlan) -> TrainOutcome:
    x, y = data
    optimiser = torch.optim.SGD(model.parameters(), lr=plan.learning_rate)
    for _ in range(plan.epochs):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()
    return TrainOutcome(num_samples=len(y), mean_loss=float(loss))


def evaluate(model: nn.Module, data: Data) -> Evaluation:
    x, y = data
    with torch.no_grad():
        logits = model(x)
    loss = float(nn.functional.cross_entropy(logits, y))
    return Evaluation(loss=loss, accuracy=float((logits.argmax(1) == y).float().mean()))


def as_tensors(dataset, indices=None) -> Data:  # type: ignore[no-untyped-def]
    part = dataset if indices is None else dataset.subset(indices)
    return torch.from_numpy(part.images).flatten(1), torch.from_numpy(part.labels)


if __name__ == "__main__":
    train_set = synthetic_dataset(num_examples=2000, seed=0)
    clients = [as_tensors(train_set, p) for p in partition_iid(len(train_set), 5, seed=0)]
    learner = Learner(
        model_fn=lambda: nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)),
        train_fn=train,
        evaluate_fn=evaluate,
    )
    result = simulate(
        learner,
        client_data=clients,
        test_data=as_tensors(synthetic_dataset(num_examples=500, seed=1)),
        config=SimulationConfig(
            rounds=RoundConfig(num_rounds=5, clients_per_round=5),
            plan=LocalTrainingPlan(learning_rate=0.5, epochs=5),
        ),
        on_round=lambda m: print(f"round {m.round_id}: accuracy {m.test_accuracy:.3f}"),
    )
