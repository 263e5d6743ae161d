"""McMahan et al. 2017 reproduction, swept: rounds to 99% MNIST test accuracy for
several local learning rates and server optimisers, trained in lockstep.

Setting (the paper's Section 3): the 60,000 training images over 100 clients (IID:
600 random images each; pathological non-IID: sorted by label, 200 shards of 300, two
per client), C = 0.1 (10 clients per round), E = 5, B = 10, the 1,663,370-parameter
CNN, plain local SGD. The paper tuned the local learning rate over a grid (its
Table 2 and Figure 2 report the best) and needed 20 rounds IID; the goal for
non-IID is 206 rounds (the issue's figure, from the paper's Table 1 at C = 0.1;
Table 2 lists 229 for E = 5, B = 10).

Each run is one ``--runs`` entry, ``STRATEGY@LOCAL_LR[/SERVER_LR]``: ``fedavg@0.1``
is FedAvg (server learning rate 1); ``fedyogi@0.1/0.01`` is FedYogi with server
learning rate 0.01 (Reddi et al. 2021; also ``fedadam``, ``fedadagrad``). All runs
start from the same model and sample the same clients each round (common random
numbers), and every round the clients of all runs still going train together in one
batched call (:class:`veilfl.sim.executor.BatchedExecutor`), which keeps a GPU busy.
Aggregation is veilfl's own (``WeightedSum``, ``FedAvg``, ``veilfl.strategy.fedopt``)
over flat vectors; the protocol machinery (coordinator, wire codec) is left out here
and measured by ``benchmarks/simulation_speed.py``. A run stops at ``--stop-at``
test accuracy, or once it has clearly diverged; the sweep stops at ``--max-rounds``
or when ``--time-budget`` seconds are spent, and says so. Results are written after
every round.

Run (on a GPU; a 2-core CPU affords a round or two per minute)::

    python benchmarks/mcmahan_sweep.py --partition iid --device cuda \\
        --runs fedavg@0.05,fedavg@0.1,fedavg@0.2,fedyogi@0.1/0.01 --out sweep_iid.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from veilfl.ml.datasets import load_mnist
from veilfl.ml.device import DEVICE_HELP, resolve_device
from veilfl.ml.learner import derive_seed, mnist_learner
from veilfl.ml.partition import partition
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.sim.executor import BatchedExecutor, SequentialExecutor, TrainingExecutor, TrainingJob
from veilfl.strategy.aggregate import Aggregate, WeightedSum
from veilfl.strategy.fedavg import FedAvg
from veilfl.strategy.fedopt import FedOpt, server_optimizer
from veilfl.tensors import FloatArray, flatten, spec_of, unflatten

GOAL_ROUNDS = {"iid": 20, "shards": 206}
TARGETS = (0.97, 0.99)


@dataclass
class Run:
    """One configuration of the sweep and how it is going."""

    name: str
    strategy: str
    local_lr: float
    server_lr: float
    flat: FloatArray
    optimizer: FedOpt | None
    sampler: random.Random
    accuracy: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    reached: dict[float, int | None] = field(default_factory=lambda: dict.fromkeys(TARGETS))
    status: str = "running"

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "strategy": self.strategy,
            "local_lr": self.local_lr,
            "server_lr": self.server_lr,
            "status": self.status,
            "rounds_run": len(self.accuracy),
            "rounds_to": {str(k): v for k, v in self.reached.items()},
            "best_accuracy": max(self.accuracy, default=None),
            "final_accuracy": self.accuracy[-1] if self.accuracy else None,
            "accuracy": self.accuracy,
            "train_loss": self.loss,
        }


class _NoHistory:
    """No strategy here reads an earlier model."""

    def weights_at(self, version: int) -> np.ndarray:
        raise AssertionError("no earlier model is kept in this benchmark")


_NO_HISTORY = _NoHistory()


def _parse_run(text: str, initial: FloatArray, seed: int) -> Run:
    strategy, _, rates = text.partition("@")
    local, _, server = rates.partition("/")
    strategy = strategy.strip().lower()
    server_lr = float(server) if server else 1.0
    optimizer = (
        None if strategy == "fedavg" else server_optimizer(strategy, server_learning_rate=server_lr)
    )
    return Run(
        name=text,
        strategy=strategy,
        local_lr=float(local),
        server_lr=server_lr,
        flat=initial.copy(),
        optimizer=optimizer,
        sampler=random.Random(seed),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partition", choices=["iid", "shards"], default="iid")
    parser.add_argument("--runs", default="fedavg@0.05,fedavg@0.1,fedavg@0.2,fedyogi@0.1/0.01")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--max-rounds", type=int, default=300)
    parser.add_argument("--time-budget", type=float, default=math.inf, help="seconds")
    parser.add_argument("--stop-at", type=float, default=0.99)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--per-round", type=int, default=10, help="clients per round (C * K)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--max-batches", type=int, default=None, help="cap steps (quick checks)")
    parser.add_argument("--test-examples", type=int, default=None)
    parser.add_argument("--sequential", action="store_true", help="train clients one at a time")
    parser.add_argument("--max-clients", type=int, default=100, help="clients per batched call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON results, written each round")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: tune once
    splits = load_mnist()
    train = splits.full_train()
    parts = partition(args.partition, train.labels, args.clients, seed=args.seed)
    clients = [train.subset(p) for p in parts]
    test = splits.test
    if args.test_examples:
        test = test.subset(list(range(args.test_examples)))
    learner = mnist_learner("mnist-cnn").on(device)
    weights = learner.initial_weights(seed=args.seed)
    spec = spec_of(weights)
    initial = flatten(weights, spec)
    runs = [_parse_run(text, initial, args.seed) for text in args.runs.split(",")]
    executor: TrainingExecutor = (
        SequentialExecutor(learner, clients)
        if args.sequential
        else BatchedExecutor(learner, clients, max_clients=args.max_clients)
    )
    evaluate = learner.evaluator(test)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results: dict[str, Any] = {
        "partition": args.partition,
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "setting": {
            "clients": args.clients,
            "per_round": args.per_round,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "max_batches": args.max_batches,
            "test_examples": len(test),
            "seed": args.seed,
            "batched": not args.sequential,
        },
        "goal_rounds_to_0.99": GOAL_ROUNDS[args.partition],
        "stopped": None,
        "seconds": 0.0,
        "runs": [],
    }

    def save() -> None:
        results["runs"] = [run.summary() for run in runs]
        results["seconds"] = time.perf_counter() - started
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))

    print(
        f"McMahan sweep: {args.partition}, {args.clients} clients, {args.per_round} per round, "
        f"E={args.epochs}, B={args.batch_size}, on {name} ({device}); runs: {args.runs}",
        flush=True,
    )
    print(f"{'round':>5} {'s':>6}  " + "  ".join(f"{r.name:>18}" for r in runs), flush=True)
    for round_id in range(1, args.max_rounds + 1):
        active = [r for r in runs if r.status == "running"]
        if not active:
            results["stopped"] = "every run stopped"
            break
        if time.perf_counter() - started > args.time_budget:
            results["stopped"] = f"time budget of {args.time_budget:.0f} s spent"
            break
        round_started = time.perf_counter()
        jobs: list[TrainingJob] = []
        for index, run in enumerate(runs):
            if run.status != "running":
                continue
            start = unflatten(run.flat, spec)
            plan = LocalTrainingPlan(
                learning_rate=run.local_lr,
                epochs=args.epochs,
                batch_size=args.batch_size,
                max_batches=args.max_batches,
            )
            for client in run.sampler.sample(range(args.clients), args.per_round):
                jobs.append(
                    TrainingJob(
                        client_index=client,
                        model_version=index * 100_000 + round_id,
                        weights=start,
                        plan=plan,
                        seed=derive_seed(args.seed, round_id, client),
                    )
                )
        updates = iter(executor.train(jobs))
        for run in active:
            total = WeightedSum(spec.total_size)
            losses = []
            for _ in range(args.per_round):
                update = next(updates)
                total.add(flatten(update.delta, spec), weight=update.num_samples)
                losses.append(update.mean_loss)
            aggregate = Aggregate(
                weighted_delta_sum=total.vector(),
                total_weight=total.total_weight,
                participants=tuple(str(c) for c in range(args.per_round)),
                trained_versions=(0,) * args.per_round,
            )
            strategy = FedAvg() if run.optimizer is None else run.optimizer
            run.flat = strategy.apply(run.flat, aggregate, history=_NO_HISTORY)
            evaluation = evaluate(unflatten(run.flat, spec))
            run.accuracy.append(evaluation.accuracy)
            run.loss.append(float(np.mean(losses)))
            for target in TARGETS:
                if run.reached[target] is None and evaluation.accuracy >= target:
                    run.reached[target] = round_id
            if evaluation.accuracy >= args.stop_at:
                run.status = "reached"
            elif not math.isfinite(run.loss[-1]) or (round_id >= 10 and evaluation.accuracy < 0.2):
                run.status = "diverged"
        cells = "  ".join(
            f"{100 * r.accuracy[-1]:17.2f}%" if r in active else f"{'-':>18}" for r in runs
        )
        print(f"{round_id:5d} {time.perf_counter() - round_started:6.2f}  {cells}", flush=True)
        save()
    else:
        results["stopped"] = f"max rounds ({args.max_rounds})"
    for run in runs:
        if run.status == "running":
            run.status = "unfinished"
    save()
    goal = GOAL_ROUNDS[args.partition]
    print(f"\nstopped: {results['stopped']}; {results['seconds']:.0f} s")
    print(f"{'run':>20} {'to 97%':>7} {'to 99%':>7} {'goal':>5} {'best':>7} {'status':>10}")
    for run in runs:
        r97, r99 = run.reached[0.97], run.reached[0.99]
        print(
            f"{run.name:>20} {r97 if r97 else '-':>7} {r99 if r99 else '-':>7} {goal:>5} "
            f"{100 * max(run.accuracy, default=0):6.2f}% {run.status:>10}"
        )


if __name__ == "__main__":
    main()
