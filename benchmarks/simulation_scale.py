"""A large population through ``veilfl.sim.simulate``: wall time and peak memory, in
process and on Ray, side by side in one run.

Setting: MNIST's 60,000 training images split IID over ``--population`` clients (10,000:
6 images each), ``--per-round`` of them sampled per round (1,000), the McMahan CNN
(1,663,370 parameters, or ``--model``), E = 1, B = 10, plaintext FedAvg with the wire
codec, no evaluation. Each configuration runs in a fresh child process; the parent
samples the proportional set size (PSS, which splits shared pages such as Ray's object
store between the processes that map them) of the child's whole process tree (for Ray:
the driver, raylet, GCS and every worker) every ``--sample-every`` seconds and reports
the peak, next to the child's own peak RSS and wall times.

Configurations (``--runs``, comma-separated):

* ``inprocess-seq``: in this process, one client at a time (``SequentialExecutor``);
* ``inprocess``: in this process, batched (``BatchedExecutor``, at most
  ``--batch-clients`` clients together; simulate's default);
* ``ray-seq`` and ``ray``: a local Ray instance with ``--ray-cpus-total`` CPUs, one
  actor per CPU (``--ray-cpus`` each), each training its share of the jobs one at a
  time or batched;
* any of these with ``@N``: a population of N instead (memory against population:
  it should not grow with N at the same clients per round).

Run::

    python benchmarks/simulation_scale.py --out docs/results/simulation_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_PAGE_KB = 4


def _children() -> dict[int, list[int]]:
    """Every process's children, by parent id, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_pss_mib(root: int) -> tuple[float, int]:
    """PSS of ``root`` and all its descendants (MiB), and how many processes."""
    tree = _children()
    pending, seen = [root], []
    while pending:
        pid = pending.pop()
        seen.append(pid)
        pending.extend(tree.get(pid, []))
    return sum(_pss_kib(pid) for pid in seen) / 1024, len(seen)


def _child(args: argparse.Namespace) -> None:
    """Run one configuration; print its result as one JSON line."""
    import torch

    from veilfl.ml.datasets import ClientPartitions, load_mnist
    from veilfl.ml.learner import mnist_learner
    from veilfl.ml.partition import partition
    from veilfl.protocol.messages import LocalTrainingPlan
    from veilfl.protocol.run_spec import RunSpec
    from veilfl.protocol.sync_round import RoundConfig
    from veilfl.sim.backends import ExecutionSettings, build_executor
    from veilfl.sim.simulator import SimulationConfig, simulate

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train = load_mnist().full_train()
    clients = ClientPartitions(train, partition("iid", train.labels, args.population, seed=0))
    learner = mnist_learner(args.model)
    name, _, _ = args.child.partition("@")
    backend, _, one_at_a_time = name.partition("-")
    execution = ExecutionSettings(
        backend="ray" if backend == "ray" else "inprocess",
        batched=one_at_a_time != "seq",
        max_clients=args.batch_clients,
        ray_cpus=args.ray_cpus,
        ray_init=(
            {"num_cpus": args.ray_cpus_total, "log_to_driver": False} if backend == "ray" else None
        ),
    )
    round_seconds: list[float] = []
    last = [time.perf_counter()]

    def lap(_: object) -> None:
        now = time.perf_counter()
        round_seconds.append(now - last[0])
        last[0] = now

    setup_started = time.perf_counter()
    with build_executor(learner, clients, execution) as executor:
        setup = time.perf_counter() - setup_started
        last[0] = time.perf_counter()
        result = simulate(
            learner,
            client_data=clients,
            test_data=None,
            config=SimulationConfig(
                RunSpec(
                    model_name="simulation",
                    rounds=RoundConfig(num_rounds=args.rounds, clients_per_round=args.per_round),
                    plan=LocalTrainingPlan(learning_rate=0.05, epochs=1, batch_size=10),
                    seed=0,
                )
            ),
            executor=executor,
            on_round=lap,
        )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "population": args.population,
                "per_round": args.per_round,
                "rounds": len(result.history),
                "clients_trained": sum(m.num_clients for m in result.history),
                "setup_s": setup,
                "round_s": round_seconds,
                "training_s": result.timings.training,
                "total_s": time.perf_counter() - started,
                "driver_peak_rss_mib": peak_rss,
            }
        ),
        flush=True,
    )


def _measure(run: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start the child for ``run``; sample its tree's memory until it ends."""
    _, _, population = run.partition("@")
    command = [
        sys.executable,
        __file__,
        "--child",
        run,
        "--population",
        population or str(args.population),
        "--per-round",
        str(args.per_round),
        "--rounds",
        str(args.rounds),
        "--model",
        args.model,
        "--threads",
        str(args.threads),
        "--batch-clients",
        str(args.batch_clients),
        "--ray-cpus",
        str(args.ray_cpus),
        "--ray-cpus-total",
        str(args.ray_cpus_total),
    ]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak, processes = 0.0, 1
    while child.poll() is None:
        pss, count = _tree_pss_mib(child.pid)
        if pss > peak:
            peak, processes = pss, count
        time.sleep(args.sample_every)
    output = child.stdout.read() if child.stdout else ""
    wall = time.perf_counter() - started
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        return {"run": run, "failed": child.returncode, "wall_s": wall}
    result: dict[str, Any] = json.loads(lines[-1])
    result.update(run=run, wall_s=wall, peak_pss_mib=peak, processes_at_peak=processes)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="inprocess-seq,ray-seq,inprocess-seq@50000,inprocess")
    parser.add_argument("--population", type=int, default=10_000)
    parser.add_argument("--per-round", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="mnist-cnn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the driver")
    parser.add_argument("--batch-clients", type=int, default=100)
    parser.add_argument("--ray-cpus", type=float, default=1.0)
    parser.add_argument("--ray-cpus-total", type=int, default=2)
    parser.add_argument("--sample-every", type=float, default=0.25)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    print(
        f"simulation scale on {platform.machine()} ({os.cpu_count()} CPUs): population "
        f"{args.population}, {args.per_round} per round, {args.rounds} rounds, {args.model}, "
        "E=1, B=10, plaintext FedAvg, no evaluation",
        flush=True,
    )
    header = ("run", "population", "wall s", "per round s", "peak PSS MiB", "driver RSS MiB")
    print(" ".join(f"{h:>16}" for h in header), flush=True)
    results: list[dict[str, Any]] = []
    for run in args.runs.split(","):
        row = _measure(run, args)
        results.append(row)
        if args.out:
            args.out.write_text(
                json.dumps({"settings": vars(args), "runs": results}, indent=2, default=str)
            )
        if "failed" in row:
            print(f"{run:>16} failed with exit code {row['failed']}", flush=True)
            continue
        per_round = sum(row["round_s"]) / max(1, len(row["round_s"]))
        print(
            f"{run:>16} {row['population']:>16} {row['wall_s']:>16.1f} {per_round:>16.1f} "
            f"{row['peak_pss_mib']:>16.0f} {row['driver_peak_rss_mib']:>16.0f}",
            flush=True,
        )
    done = [r for r in results if "failed" not in r]
    base = done[0] if done else None
    for row in done[1:]:
        assert base is not None
        print(
            f"{row['run']} / {base['run']}: wall {row['wall_s'] / base['wall_s']:.2f}x, "
            f"peak memory {row['peak_pss_mib'] / base['peak_pss_mib']:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
