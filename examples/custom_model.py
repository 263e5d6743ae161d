"""Federate your own torch model, data and training loop: python examples/custom_model.py"""

import torch
from torch import nn

import veilfl

torch.manual_seed(0)
rule = torch.randn(20, 3)  # 6 parties' data: 20 features, 3 classes from a hidden rule
parts = [(x, (x @ rule).argmax(1)) for x in torch.randn(6, 400, 20)]


def train(model, data, plan):  # any loop: veilfl computes the model update itself
    optimiser = torch.optim.SGD(model.parameters(), lr=plan.learning_rate)
    for _ in range(plan.epochs):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(data[0]), data[1]).backward()
        optimiser.step()
    return veilfl.TrainOutcome(len(data[1]), mean_loss=evaluate(model, data).loss)


def evaluate(model, data):
    with torch.no_grad():
        logits = model(data[0])
    accuracy = (logits.argmax(1) == data[1]).float().mean().item()
    return veilfl.Evaluation(nn.functional.cross_entropy(logits, data[1]).item(), accuracy)


def model():
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3))


learner = veilfl.Learner(model, train, evaluate)
rounds = veilfl.RoundConfig(num_rounds=5, clients_per_round=5)
plan = veilfl.LocalTrainingPlan(learning_rate=0.5, epochs=5)
config = veilfl.SimulationConfig(veilfl.RunSpec(model_name="custom", rounds=rounds, plan=plan))
result = veilfl.simulate(learner, client_data=parts[:5], test_data=parts[5], config=config)
for metrics in result.history:
    print(f"round {metrics.round_id}: accuracy {metrics.test_accuracy:.3f}")
