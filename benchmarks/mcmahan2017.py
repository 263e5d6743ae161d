"""Reproduce McMahan et al. 2017 (FedAvg), MNIST CNN: rounds to reach a target accuracy.

Setting from the paper (Section 3, Table 2): the 60,000 MNIST training images over
100 clients (IID: 600 random images each; pathological non-IID: sorted by label,
200 shards of 300, 2 shards per client), C = 0.1 (10 clients per round), E = 5 local
epochs, B = 10, the 1,663,370-parameter CNN. The paper reports the rounds FedAvg
needs to reach 99% test accuracy: 20 (IID) and 229 (non-IID) for E = 5, B = 10.

Run (a few hours on 2 CPU cores for the IID case; use --max-rounds to bound it):

    .venv/bin/python benchmarks/mcmahan2017.py --partition iid --max-rounds 30

It prints a row per round, then the rounds to reach each target next to the paper's,
and seconds per round split into local training, transfer (update encode + decode
through the wire codec, in process) and aggregation. A JSON summary goes to
``--out`` for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from veilfl.ml.datasets import load_mnist
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.reporting import format_round_row, format_round_table_header
from veilfl.sim.simulator import SimulationConfig, simulate

PAPER_ROUNDS_TO_99 = {"iid": 20, "shards": 229}
TARGETS = (0.97, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partition", choices=["iid", "shards"], default="iid")
    parser.add_argument("--max-rounds", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.05, help="local SGD learning rate")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--test-examples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON summary path")
    parser.add_argument(
        "--stop-at", type=float, default=0.99, help="stop once test accuracy reaches this"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    splits = load_mnist()
    train = splits.full_train()  # the original 60,000 training images
    parts = partition(args.partition, train.labels, args.clients, seed=args.seed)
    clients = [train.subset(p) for p in parts]
    test = splits.test
    if args.test_examples:
        test = test.subset(list(range(args.test_examples)))

    print(
        f"McMahan et al. 2017 reproduction: {args.partition}, {args.clients} clients, "
        f"C={args.fraction}, E={args.epochs}, B={args.batch_size}, lr={args.lr}, "
        f"up to {args.max_rounds} rounds"
    )
    print(format_round_table_header(), flush=True)
    reached: dict[float, int | None] = dict.fromkeys(TARGETS)

    def on_round(metrics: RoundMetrics) -> None:
        print(format_round_row(metrics), flush=True)
        for target in TARGETS:
            if reached[target] is None and (metrics.test_accuracy or 0.0) >= target:
                reached[target] = metrics.round_id

    started = time.perf_counter()
    result = simulate(
        mnist_learner("mnist-cnn", seed=args.seed),
        client_data=clients,
        test_data=test,
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(
                    num_rounds=args.max_rounds,
                    fraction=args.fraction,
                    min_clients=1,
                ),
                plan=LocalTrainingPlan(
                    learning_rate=args.lr, epochs=args.epochs, batch_size=args.batch_size
                ),
                seed=args.seed,
            )
        ),
        on_round=on_round,
        stop_when=lambda m: (m.test_accuracy or 0.0) >= args.stop_at,
    )
    wall = time.perf_counter() - started
    rounds = len(result.history)
    t = result.timings
    print()
    print(f"{'target':>8}  {'veilfl rounds':>14}  {'paper rounds':>12}")
    for target in TARGETS:
        ours = reached[target]
        paper = PAPER_ROUNDS_TO_99[args.partition] if target == 0.99 else None
        print(
            f"{100 * target:7.0f}%  {ours if ours is not None else f'>{rounds}':>14}  "
            f"{paper if paper is not None else '-':>12}"
        )
    print(
        f"seconds per round: training {t.training / rounds:.2f}, transfer "
        f"{t.transfer / rounds:.3f}, aggregation {t.aggregation / rounds:.3f}, "
        f"evaluation {t.evaluation / rounds:.2f}; wall {wall / rounds:.2f}"
    )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "partition": args.partition,
                    "rounds_run": rounds,
                    "rounds_to": {str(k): v for k, v in reached.items()},
                    "paper_rounds_to_0.99": PAPER_ROUNDS_TO_99[args.partition],
                    "final_accuracy": result.history[-1].test_accuracy,
                    "seconds_per_round": {
                        "training": t.training / rounds,
                        "transfer": t.transfer / rounds,
                        "aggregation": t.aggregation / rounds,
                        "evaluation": t.evaluation / rounds,
                        "wall": wall / rounds,
                    },
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
