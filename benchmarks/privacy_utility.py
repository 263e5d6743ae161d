"""Privacy-utility on MNIST: test accuracy against epsilon (delta = 1e-5).

* Client-level DP-FedAvg (McMahan et al. 2018) in the simulator, with 100 and 1,000
  clients over the 60,000 training images (IID), 10% of clients per round, the small
  CNN, fixed clipping norm, central noise for several noise multipliers, next to the
  same run without DP.
* Sample-level DP-SGD (Abadi et al. 2016) through Opacus, one client holding all the
  data, for a few epochs.

Published reference points (MNIST):
  Geyer, Klein and Nabi 2017 (client-level DP, delta = 1e-3 for 100 and 1e-5 for 1,000
  clients): about 78% at epsilon 8 with 100 clients, 92% at epsilon 8 with 1,000.
  Abadi et al. 2016 (DP-SGD, delta = 1e-5): 90% at epsilon 0.5, 95% at 2, 97% at 8.

Run: .venv/bin/python benchmarks/privacy_utility.py [--rounds 30] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from veilfl.ml.datasets import load_mnist
from veilfl.ml.dp_sgd import DpSgdConfig, dp_sgd_learner
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.privacy.dp_fedavg import DpConfig
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.sync_round import RoundConfig
from veilfl.sim.simulator import SimulationConfig, simulate


def client_level(
    num_clients: int, noise: float | None, *, rounds: int, clip: float, test: Any
) -> dict[str, Any]:
    train = load_mnist().full_train()
    parts = partition_iid(len(train), num_clients, seed=0)
    clients = [train.subset(p) for p in parts]
    started = time.perf_counter()
    result = simulate(
        mnist_learner("simple-cnn", seed=0),
        client_data=clients,
        test_data=test,
        config=SimulationConfig(
            rounds=RoundConfig(num_rounds=rounds, fraction=0.1),
            plan=LocalTrainingPlan(learning_rate=0.05, momentum=0.9, epochs=1, batch_size=10),
            dp=(
                None
                if noise is None
                else DpConfig(placement="central", noise_multiplier=noise, clip_norm=clip)
            ),
            through_wire=False,
        ),
    )
    last = result.history[-1]
    return {
        "kind": "client-level DP-FedAvg",
        "clients": num_clients,
        "noise_multiplier": noise,
        "rounds": len(result.history),
        "epsilon": last.epsilon,
        "accuracy": last.test_accuracy,
        "seconds": time.perf_counter() - started,
    }


def sample_level(noise: float, *, epochs: int, test: Any) -> dict[str, Any]:
    train = load_mnist().full_train()
    learner, trainer = dp_sgd_learner(
        "simple-cnn", DpSgdConfig(noise_multiplier=noise, max_grad_norm=1.0), seed=0
    )
    model = learner.model_fn()
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learner.local_update(
            model,
            learner.initial_weights(seed=0),
            train,
            LocalTrainingPlan(learning_rate=0.5, momentum=0.0, epochs=epochs, batch_size=256),
        )
    evaluation = learner.evaluate_fn(model, test)
    return {
        "kind": "sample-level DP-SGD",
        "clients": 1,
        "noise_multiplier": noise,
        "rounds": epochs,
        "epsilon": trainer.epsilon,
        "accuracy": evaluation.accuracy,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clip", type=float, default=0.5, help="client-level clipping norm")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--dp-sgd-noise", type=float, nargs="+", default=[1.1, 0.7])
    parser.add_argument("--dp-sgd-epochs", type=int, default=3)
    parser.add_argument("--test-examples", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    test = load_mnist().test.subset(range(args.test_examples))
    rows = []
    print(f"{'kind':<24} {'clients':>7} {'z':>5} {'rounds':>6} {'epsilon':>8} {'accuracy':>8}")
    for num_clients in (100, 1000):
        for noise in [None, *args.noise]:
            row = client_level(num_clients, noise, rounds=args.rounds, clip=args.clip, test=test)
            rows.append(row)
            print(_format(row), flush=True)
    for noise in args.dp_sgd_noise:
        row = sample_level(noise, epochs=args.dp_sgd_epochs, test=test)
        rows.append(row)
        print(_format(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


def _format(row: dict[str, Any]) -> str:
    z = "-" if row["noise_multiplier"] is None else f"{row['noise_multiplier']:.2f}"
    eps = "inf" if row["epsilon"] is None else f"{row['epsilon']:.2f}"
    return (
        f"{row['kind']:<24} {row['clients']:>7} {z:>5} {row['rounds']:>6} {eps:>8} "
        f"{100 * row['accuracy']:>7.2f}%"
    )


if __name__ == "__main__":
    main()
