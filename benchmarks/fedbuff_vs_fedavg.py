"""Wall-clock (virtual) time to reach a target MNIST accuracy: FedBuff against
synchronous FedAvg, with the same straggler profile and seeds, measured side by side.

Both runs use the same 100 IID clients, the same small CNN, E = 1, B = 10 and the
same per-client speeds (log-normal, so some clients are always slow) and per-task
jitter. Synchronous FedAvg samples 10 clients per round and waits for the slowest of
them; FedBuff lets 20 clients train at once and applies every K = 10 updates, with
staleness weights 1/sqrt(1 + s) and updates more than 5 versions old refused.

Nguyen et al. 2022 report FedBuff reaching its target 3.3x faster than synchronous
FL in wall-clock time (their abstract), under their own straggler model.

Run: .venv/bin/python benchmarks/fedbuff_vs_fedavg.py [--max-updates 150] [--stop-at 0.97]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from veilfl.ml.datasets import load_mnist
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.protocol.buffered import BufferConfig
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.sim.async_simulator import AsyncSimulationConfig, buffered_spec, simulate_async
from veilfl.sim.profiles import ClientProfiles
from veilfl.sim.simulator import SimulationConfig, simulate

TARGETS = (0.95, 0.96, 0.97, 0.99)
PAPER_SPEEDUP = 3.3


def _times_to_targets(history: list[RoundMetrics]) -> dict[float, float | None]:
    elapsed = 0.0
    reached: dict[float, float | None] = dict.fromkeys(TARGETS)
    for metrics in history:
        elapsed += metrics.seconds
        for target in TARGETS:
            if reached[target] is None and (metrics.test_accuracy or 0.0) >= target:
                reached[target] = elapsed
    return reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-updates", type=int, default=250, help="rounds / buffers")
    parser.add_argument(
        "--stop-at", type=float, default=0.97, help="stop each run at this accuracy"
    )
    parser.add_argument("--speed-sigma", type=float, default=1.0)
    parser.add_argument("--dropout", type=float, default=0.05)
    parser.add_argument("--test-examples", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    mnist = load_mnist()
    train = mnist.full_train()
    clients = [train.subset(p) for p in partition_iid(len(train), 100, seed=0)]
    test = mnist.test.subset(range(args.test_examples))
    profiles = ClientProfiles(
        base_seconds=60.0,
        speed_sigma=args.speed_sigma,
        jitter_sigma=0.2,
        dropout=args.dropout,
        seed=0,
    )
    plan = LocalTrainingPlan(learning_rate=0.05, momentum=0.9, epochs=1, batch_size=10)
    stop = args.stop_at

    sync = simulate(
        mnist_learner("simple-cnn", seed=0),
        client_data=clients,
        test_data=test,
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(
                    num_rounds=args.max_updates,
                    clients_per_round=10,
                    min_clients=5,
                    round_timeout_s=10 * profiles.base_seconds,
                ),
                plan=plan,
            ),
            profiles=profiles,
            through_wire=False,
        ),
        stop_when=lambda m: (m.test_accuracy or 0.0) >= stop,
    )
    buffered = simulate_async(
        mnist_learner("simple-cnn", seed=0),
        client_data=clients,
        test_data=test,
        config=AsyncSimulationConfig(
            buffered_spec(
                BufferConfig(
                    buffer_size=10,
                    max_staleness=5,
                    max_versions=args.max_updates,
                    max_concurrency=20,
                ),
                plan=plan,
            ),
            profiles=profiles,
        ),
        stop_when=lambda m: (m.test_accuracy or 0.0) >= stop,
    )
    results: dict[str, Any] = {}
    print(
        f"{'':>10} {'updates':>8} {'final acc':>9} "
        + " ".join(f"{'t(' + str(int(100 * t)) + '%)':>10}" for t in TARGETS)
    )
    for name, history in (("FedAvg", list(sync.history)), ("FedBuff", list(buffered.history))):
        reached = _times_to_targets(history)
        results[name] = {
            "updates": len(history),
            "final_accuracy": history[-1].test_accuracy,
            "seconds_to": {str(k): v for k, v in reached.items()},
        }
        total = sum(m.seconds for m in history)
        cells = " ".join(
            f"{('>' + format(total, '.0f')) if v is None else format(v, '.0f'):>10}"
            for v in reached.values()
        )
        print(
            f"{name:>10} {len(history):>8} {100 * (history[-1].test_accuracy or 0):>8.2f}% {cells}"
        )
    for target in TARGETS:
        a = results["FedAvg"]["seconds_to"][str(target)]
        b = results["FedBuff"]["seconds_to"][str(target)]
        if a is not None and b is not None:
            print(f"speed-up to {100 * target:.0f}%: {a / b:.2f}x (paper: {PAPER_SPEEDUP}x)")
    print(
        f"FedBuff: {buffered.accepted} updates accepted, {buffered.refused_stale} refused as "
        f"stale, {buffered.dropped} dropped"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
