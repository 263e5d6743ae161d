"""How fast the simulator trains virtual clients: its overhead over bare local
training, and sequential against batched training on one device.

The McMahan et al. 2017 setting: the 1,663,370-parameter MNIST CNN, 600 examples per
client (an IID split of the 60,000 training images), E = 5, B = 10: 300 SGD steps per
client update. Every ratio is measured side by side in one run.

Parts (``--parts``, comma-separated):

* ``overhead``: for each N in ``--clients`` (10 and 100), one round of N clients
  through ``veilfl.sim.simulate`` itself (sampling, the coordinator, the wire codec,
  aggregation; no evaluation) against the same N clients' bare local training, for
  each way the simulator can train them (``--modes``): ``sequential``
  (``SequentialExecutor``; bare: ``train_local`` one client after another) and
  ``batched`` (``BatchedExecutor``, simulate's default; bare: the executor's own
  ``train`` on the same jobs). Overhead = simulator / bare - 1 (goal: at most 10%);
  "within" is the simulated round's wall time over its own training time, minus 1,
  which load changing between the two runs cannot skew. The two are interleaved per
  repetition, so load changes hit both sides.
* ``executors``: ``SequentialExecutor`` against ``BatchedExecutor`` on ``--device``
  at 10 clients per round; on CUDA the goal is batched at least 2.5x faster. With
  ``--updates-clients 100`` also the batched executor's client updates per second at
  100 clients per round (goal on CUDA: at least 30/s).

``--quick`` caps local training at ``--quick-batches`` steps per epoch (default 6,
so 30 steps per update instead of 300) for a fast check; overhead ratios are then
larger, since the same fixed costs meet less training. The output says when it ran
quick.

Run::

    python benchmarks/simulation_speed.py --device cpu --out docs/results/simulation_speed.json
    python benchmarks/simulation_speed.py --device cuda --parts executors --updates-clients 100
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from veilfl.ml.datasets import ArrayDataset, load_mnist
from veilfl.ml.device import DEVICE_HELP, resolve_device
from veilfl.ml.learner import Learner, derive_seed, mnist_learner
from veilfl.ml.partition import partition
from veilfl.ml.training import TrainConfig, train_local
from veilfl.ml.weights import set_weights
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.sim.executor import BatchedExecutor, SequentialExecutor, TrainingExecutor, TrainingJob
from veilfl.sim.simulator import SimulationConfig, simulate


def _clients(count: int, seed: int) -> list[ArrayDataset]:
    train = load_mnist().full_train()
    parts = partition("iid", train.labels, 100, seed=seed)  # 600 examples each
    return [train.subset(parts[i % 100]) for i in range(count)]


def _bare(
    learner: Learner[ArrayDataset], clients: list[ArrayDataset], plan: LocalTrainingPlan
) -> float:
    """Seconds to train every client once with train_local alone."""
    weights = learner.initial_weights(seed=0)
    model = learner.new_model()
    started = time.perf_counter()
    for index, data in enumerate(clients):
        set_weights(model, weights)
        train_local(
            model,
            data,
            TrainConfig(
                learning_rate=plan.learning_rate,
                epochs=plan.epochs,
                batch_size=plan.batch_size,
                max_batches=plan.max_batches,
                seed=derive_seed(0, index),
            ),
        )
    return time.perf_counter() - started


def _simulated(
    learner: Learner[ArrayDataset],
    clients: list[ArrayDataset],
    plan: LocalTrainingPlan,
    executor: TrainingExecutor,
) -> tuple[float, float]:
    """Seconds for one simulated round of every client, and of that the training."""
    started = time.perf_counter()
    result = simulate(
        learner,
        client_data=clients,
        test_data=None,
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(num_rounds=1, fraction=1.0, min_clients=len(clients)),
                plan=plan,
                seed=0,
            )
        ),
        executor=executor,
    )
    return time.perf_counter() - started, result.timings.training


def _jobs(learner: Learner[ArrayDataset], count: int, plan: LocalTrainingPlan) -> list[TrainingJob]:
    weights = learner.initial_weights(seed=0)
    return [
        TrainingJob(
            client_index=i, model_version=0, weights=weights, plan=plan, seed=derive_seed(1, i)
        )
        for i in range(count)
    ]


def _time(executor: TrainingExecutor, jobs: list[TrainingJob]) -> float:
    started = time.perf_counter()
    executor.train(jobs)
    return time.perf_counter() - started


def _warm_up(executor: TrainingExecutor, learner: Learner[ArrayDataset], count: int) -> None:
    """One short call first: CUDA context, cuDNN plans and torch.func tracing."""
    executor.train(
        _jobs(learner, count, LocalTrainingPlan(learning_rate=0.05, batch_size=10, max_batches=3))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help=DEVICE_HELP)
    parser.add_argument("--parts", default="overhead,executors")
    parser.add_argument("--clients", default="10,100", help="clients per round for overhead")
    parser.add_argument(
        "--modes", default="sequential,batched", help="how simulate trains, for overhead"
    )
    parser.add_argument("--executor-clients", type=int, default=10)
    parser.add_argument("--updates-clients", type=int, default=0, help="0 skips updates/s")
    parser.add_argument("--quick", action="store_true", help="cap steps per epoch")
    parser.add_argument("--quick-batches", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON results, written as it goes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: tune once
    parts = set(args.parts.split(","))
    plan = LocalTrainingPlan(
        learning_rate=0.05,
        epochs=5,
        batch_size=10,
        max_batches=args.quick_batches if args.quick else None,
    )
    steps = plan.epochs * (plan.max_batches or 60)
    results: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "quick": args.quick,
        "steps_per_update": steps,
        "overhead": [],
        "executors": {},
    }

    def save() -> None:
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))

    print(
        f"simulation speed on {results['device_name']} ({device}), torch {torch.__version__}, "
        f"{args.threads} CPU thread(s); McMahan CNN, 600 examples, E=5, B=10, {steps} steps "
        f"per update{' (QUICK: capped steps)' if args.quick else ''}",
        flush=True,
    )
    learner = mnist_learner("mnist-cnn", seed=0).on(device)
    if "executors" in parts:
        count = args.executor_clients
        clients = _clients(max(count, args.updates_clients), seed=0)
        sequential = SequentialExecutor(learner, clients)
        batched = BatchedExecutor(learner, clients, max_clients=max(count, args.updates_clients, 1))
        _warm_up(sequential, learner, 2)
        _warm_up(batched, learner, count)
        jobs = _jobs(learner, count, plan)
        for _ in range(args.repeats):
            seq_s = _time(sequential, jobs)
            bat_s = _time(batched, jobs)
            results["executors"] = {
                "clients": count,
                "sequential_s": seq_s,
                "batched_s": bat_s,
                "speedup": seq_s / bat_s,
            }
            save()
            print(
                f"{count} clients per round on {device}: sequential {seq_s:.2f} s, batched "
                f"{bat_s:.2f} s: batched is {seq_s / bat_s:.2f}x faster",
                flush=True,
            )
        if args.updates_clients:
            many = _jobs(learner, args.updates_clients, plan)
            _warm_up(batched, learner, args.updates_clients)
            seconds = _time(batched, many)
            results["executors"]["updates_clients"] = args.updates_clients
            results["executors"]["updates_s"] = seconds
            results["executors"]["updates_per_s"] = args.updates_clients / seconds
            save()
            print(
                f"{args.updates_clients} clients per round, batched on {device}: {seconds:.2f} s, "
                f"{args.updates_clients / seconds:.1f} client updates/s",
                flush=True,
            )
    if "overhead" in parts:
        header = (
            "clients",
            "mode",
            "bare s",
            "simulator s",
            "of it training",
            "overhead",
            "within",
        )
        widths = (8, 11, 9, 12, 15, 9, 9)
        print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
        modes = args.modes.split(",")
        for count in (int(c) for c in args.clients.split(",")):
            clients = _clients(count, seed=0)
            executors: dict[str, TrainingExecutor] = {
                "sequential": SequentialExecutor(learner, clients),
                "batched": BatchedExecutor(learner, clients, max_clients=count),
            }
            _bare(learner, clients[:1], LocalTrainingPlan(batch_size=10, max_batches=2))
            if "batched" in modes:
                _warm_up(executors["batched"], learner, count)
            for _ in range(args.repeats):
                for mode in modes:
                    executor = executors[mode]
                    if mode == "sequential":
                        bare = _bare(learner, clients, plan)
                    else:
                        bare = _time(executor, _jobs(learner, count, plan))
                    simulated, training = _simulated(learner, clients, plan, executor)
                    row = {
                        "clients": count,
                        "mode": mode,
                        "bare_s": bare,
                        "simulator_s": simulated,
                        "simulator_training_s": training,
                        "overhead": simulated / bare - 1,
                        # The same ratio inside the simulated round (its wall time over
                        # its own training time): immune to load changing between runs.
                        "overhead_within_run": simulated / training - 1,
                    }
                    results["overhead"].append(row)
                    save()
                    print(
                        f"{count:8d} {mode:>11} {bare:9.2f} {simulated:12.2f} {training:15.2f} "
                        f"{100 * row['overhead']:8.1f}% {100 * row['overhead_within_run']:8.1f}%",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
