"""Privacy-utility on MNIST: test accuracy against epsilon (delta = 1e-5).

* Client-level DP-FedAvg (McMahan et al. 2018) in the simulator, with 100 and 1,000
  clients over the 60,000 training images (IID), 10% of clients per round, the small
  CNN, fixed clipping norm, central noise for several noise multipliers, next to the
  same run without DP.
* Client-level DP-FTRL with tree aggregation (Kairouz et al. 2021) on the 1,000-client
  setting: no sampling, clients selected round-robin within K participations at least
  b rounds apart, the block noise derived for the target epsilon (default 2); with
  ``--ftrl-placement distributed`` (the default) the in-process aggregators deal the
  tree noise under secure aggregation, so the coordinator gets the same epsilon as the
  public.
* Sample-level DP-SGD (Abadi et al. 2016) through Opacus, one client holding all the
  data, for a few epochs.

Every row gives epsilon against both observers (the public, and the coordinator,
which knows who took part: "none" where it sees noiseless sums, as under central
noise). The goal line: >= 95% accuracy at epsilon <= 2 against both, delta 1e-5.

Published reference points (MNIST):
  Geyer, Klein and Nabi 2017 (client-level DP, delta = 1e-3 for 100 and 1e-5 for 1,000
  clients): about 78% at epsilon 8 with 100 clients, 92% at epsilon 8 with 1,000.
  Abadi et al. 2016 (DP-SGD, delta = 1e-5): 90% at epsilon 0.5, 95% at 2, 97% at 8.

Run: .venv/bin/python benchmarks/privacy_utility.py [--rounds 30] [--out results.json]
Smoke (a minute or two): ... privacy_utility.py --rounds 2 --quick
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from veilfl.ml.datasets import ArrayDataset, load_mnist
from veilfl.ml.dp_sgd import DpSgdConfig, dp_sgd_learner
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.privacy.dp_config import DpConfig, NoisePlacement
from veilfl.privacy.dp_ftrl import dp_ftrl_noise_multiplier_for
from veilfl.privacy.tree import cover
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.sim.simulator import SimulationConfig, simulate

GOAL_ACCURACY = 0.95
GOAL_EPSILON = 2.0
MODEL_SIZE = 21_840  # the small CNN's parameters (docs/privacy.md)


def _clients(num_clients: int) -> list[ArrayDataset]:
    train = load_mnist().full_train()
    return [train.subset(p) for p in partition_iid(len(train), num_clients, seed=0)]


def _plan(quick: bool) -> LocalTrainingPlan:
    return LocalTrainingPlan(
        learning_rate=0.05,
        momentum=0.9,
        epochs=1,
        batch_size=10,
        max_batches=2 if quick else None,
    )


def client_level(
    num_clients: int, noise: float | None, *, rounds: int, clip: float, test: Any, quick: bool
) -> dict[str, Any]:
    clients = _clients(num_clients)
    started = time.perf_counter()
    result = simulate(
        mnist_learner("simple-cnn", seed=0),
        client_data=clients,
        test_data=test,
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(num_rounds=rounds, fraction=0.1),
                plan=_plan(quick),
                dp=None
                if noise is None
                else DpConfig(placement="central", noise_multiplier=noise, clip_norm=clip),
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
        "epsilon_coordinator": last.epsilon_coordinator,
        "accuracy": last.test_accuracy,
        "seconds": time.perf_counter() - started,
        # Noise norm per release over the most n clipped updates carry (docs/privacy.md).
        "noise_ratio": None if noise is None else noise * MODEL_SIZE**0.5 / (num_clients / 10),
    }


def ftrl_level(
    *,
    num_clients: int,
    per_round: int,
    participations: int,
    target_epsilon: float,
    clip: float,
    placement: NoisePlacement,
    test: Any,
    quick: bool,
    max_rounds: int | None,
) -> dict[str, Any]:
    """DP-FTRL over ``participations`` round-robin passes of ``num_clients`` clients,
    ``per_round`` a round (b = num_clients / per_round), at ``target_epsilon``."""
    separation = num_clients // per_round
    rounds = participations * separation
    noise = dp_ftrl_noise_multiplier_for(
        target_epsilon=target_epsilon,
        rounds=rounds,
        max_participations=participations,
        min_separation=separation,
        delta=1e-5,
        accounting="pld",
    )
    clients = _clients(num_clients)
    secure = placement == "distributed"
    started = time.perf_counter()
    result = simulate(
        mnist_learner("simple-cnn", seed=0),
        client_data=clients,
        test_data=test,
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(
                    num_rounds=rounds if max_rounds is None else min(rounds, max_rounds),
                    clients_per_round=per_round,
                    min_clients=per_round,
                ),
                plan=_plan(quick),
                dp=DpConfig(
                    placement=placement,
                    noise_multiplier=noise,
                    clip_norm=clip,
                    min_clients=per_round,
                    mechanism="ftrl",
                    max_participations=participations,
                    min_separation=separation,
                    accounting="pld",
                ),
            ),
            secure=SecureAggregationConfig(norm_bound=clip) if secure else None,
            through_wire=False,
        ),
    )
    last = result.history[-1]
    # The final model carries the noise of cover(T): |cover| blocks of z·C.
    blocks = len(cover(len(result.history)))
    return {
        "kind": f"DP-FTRL K={participations} {placement}",
        "clients": num_clients,
        "noise_multiplier": noise,
        "rounds": len(result.history),
        "epsilon": last.epsilon,
        "epsilon_coordinator": last.epsilon_coordinator,
        "accuracy": last.test_accuracy,
        "seconds": time.perf_counter() - started,
        "noise_ratio": noise * (blocks * MODEL_SIZE) ** 0.5 / per_round,
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
        "epsilon_coordinator": trainer.epsilon,  # one client: no coordinator in the way
        "accuracy": evaluation.accuracy,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="DP-FedAvg rounds")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2 batches per client, one noise level, DP-FTRL capped at "
        "--rounds rounds, 500 test examples, no DP-SGD",
    )
    parser.add_argument(
        "--ftrl-participations",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="DP-FTRL rows: K round-robin passes over the 1,000 clients",
    )
    parser.add_argument("--ftrl-per-round", type=int, default=100)
    parser.add_argument("--ftrl-epsilon", type=float, default=GOAL_EPSILON)
    parser.add_argument(
        "--ftrl-placement", choices=["central", "distributed"], default="distributed"
    )
    parser.add_argument("--clip", type=float, default=0.5, help="client-level clipping norm")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--dp-sgd-noise", type=float, nargs="+", default=[1.1, 0.7])
    parser.add_argument("--dp-sgd-epochs", type=int, default=3)
    parser.add_argument("--test-examples", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    examples = min(args.test_examples, 500) if args.quick else args.test_examples
    test = load_mnist().test.subset(range(examples))
    rows = []
    print(
        f"{'kind':<28} {'clients':>7} {'z':>6} {'rounds':>6} {'eps public':>10} "
        f"{'eps coord':>9} {'accuracy':>8}"
    )

    def show(row: dict[str, Any]) -> None:
        rows.append(row)
        print(_format(row), flush=True)

    noises = args.noise[:1] if args.quick else args.noise
    for num_clients in (100, 1000):
        for noise in [None, *noises]:
            show(
                client_level(
                    num_clients,
                    noise,
                    rounds=args.rounds,
                    clip=args.clip,
                    test=test,
                    quick=args.quick,
                )
            )
    for participations in args.ftrl_participations[:1] if args.quick else args.ftrl_participations:
        show(
            ftrl_level(
                num_clients=1000,
                per_round=args.ftrl_per_round,
                participations=participations,
                target_epsilon=args.ftrl_epsilon,
                clip=args.clip,
                placement=args.ftrl_placement,
                test=test,
                quick=args.quick,
                max_rounds=args.rounds if args.quick else None,
            )
        )
    if not args.quick:
        for noise in args.dp_sgd_noise:
            show(sample_level(noise, epochs=args.dp_sgd_epochs, test=test))
    print(goal_line(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


def _protected(row: dict[str, Any]) -> float | None:
    """Epsilon against the weaker-protected observer (None: unprotected against one)."""
    if row["epsilon"] is None or (
        row["epsilon_coordinator"] is None and row["kind"] != "sample-level DP-SGD"
    ):
        return None
    return float(max(row["epsilon"], row["epsilon_coordinator"] or 0.0))


def goal_line(rows: list[dict[str, Any]]) -> str:
    """Whether a client-level row reached the goal against both observers, and if not,
    how far the best one is and why."""
    client_rows = [r for r in rows if r["clients"] > 1]
    eligible = [
        r for r in client_rows if (e := _protected(r)) is not None and e <= GOAL_EPSILON * 1.001
    ]
    head = (
        f"goal: >= {100 * GOAL_ACCURACY:.0f}% MNIST accuracy at epsilon <= {GOAL_EPSILON:g} "
        "(delta 1e-5) against the public and the coordinator"
    )
    if not eligible:
        return f"{head}: MISSED, no client-level row is protected against both at that epsilon"
    best = max(eligible, key=lambda r: r["accuracy"])
    where = f"{best['kind']}, {best['clients']} clients, {best['rounds']} rounds"
    if best["accuracy"] >= GOAL_ACCURACY:
        return f"{head}: MET, {100 * best['accuracy']:.2f}% ({where})"
    ceiling = [
        r["accuracy"]
        for r in client_rows
        if r["clients"] == best["clients"] and r["epsilon"] is None
    ]
    without_dp = (
        f" The same {best['clients']} clients without DP reach "
        f"{100 * max(ceiling):.2f}% in {_rounds_without_dp(rows)} rounds."
        if ceiling
        else ""
    )
    return (
        f"{head}: MISSED by {100 * (GOAL_ACCURACY - best['accuracy']):.2f} points, best "
        f"{100 * best['accuracy']:.2f}% ({where}). Why: the noise in the final model is "
        f"{best['noise_ratio']:.1f} times what its n clipped updates per round can carry "
        "(above about 3 costs accuracy, docs/privacy.md); more clients per round, or more "
        f"clients, lower it at the same epsilon.{without_dp}"
    )


def _rounds_without_dp(rows: list[dict[str, Any]]) -> int:
    """The rounds of the runs without DP (the ceiling the DP rows are compared with)."""
    return max(int(r["rounds"]) for r in rows if r["epsilon"] is None and r["clients"] > 1)


def _format(row: dict[str, Any]) -> str:
    z = "-" if row["noise_multiplier"] is None else f"{row['noise_multiplier']:.2f}"
    eps = "inf" if row["epsilon"] is None else f"{row['epsilon']:.2f}"
    if row["epsilon"] is None:
        coordinator = "inf"
    elif row.get("epsilon_coordinator") is None:
        coordinator = "none" if row["clients"] > 1 else eps
    else:
        coordinator = f"{row['epsilon_coordinator']:.2f}"
    return (
        f"{row['kind']:<28} {row['clients']:>7} {z:>6} {row['rounds']:>6} {eps:>10} "
        f"{coordinator:>9} {100 * row['accuracy']:>7.2f}%"
    )


if __name__ == "__main__":
    main()
