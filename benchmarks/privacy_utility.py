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
* Issue 21's grid (``--grid``): correlated-noise mechanisms chosen by name from the
  registry (``ftrl``: the tree; ``banded``: banded matrix factorisation, Choquette-Choo
  et al. 2023), noise dealt by the in-process aggregators under secure aggregation (so
  the coordinator's epsilon is the public's), K = 3 participations b = 10 rounds apart
  (30 rounds), at epsilon 1, 2, 4 and 8, over 1,000 clients (100 a round, 60 images
  each) and 10,000 clients (1,000 a round, 6 images each), with and without server
  momentum.
* pfl's banded MF beside ours (``--pfl-strategy FILE``, written by
  ``benchmarks/pfl_banded_strategy.py`` under a Python with pfl 0.6): the strategy
  matrix and noise pfl's own ``BandedMatrixFactorizationMechanism`` computes, applied
  through veilfl's simulator on the same partition, model and training (central noise,
  as pfl simulates it). pfl takes C = cholesky(X), whose *rows* have unit norm, and
  calibrates its noise for sensitivity sqrt(K); the epsilon its noise really spends is
  computed here from C's columns (:func:`veilfl.privacy.min_separation.minsep_sensitivity`).
  Two rows: pfl's noise as it calibrates it (stated epsilon E, true epsilon above E), and
  pfl's strategy with its noise raised to spend E truly.

Every row gives epsilon against both observers (the public, and the coordinator,
which knows who took part: "none" where it sees noiseless sums, as under central
noise). The goal line: >= 95% accuracy at epsilon <= 2 against both, delta 1e-5.

Published reference points (MNIST):
  Geyer, Klein and Nabi 2017 (client-level DP, delta = 1e-3 for 100 and 1e-5 for 1,000
  clients): about 78% at epsilon 8 with 100 clients, 92% at epsilon 8 with 1,000.
  Abadi et al. 2016 (DP-SGD, delta = 1e-5): 90% at epsilon 0.5, 95% at 2, 97% at 8.

Run: .venv/bin/python benchmarks/privacy_utility.py [--rounds 30] [--out results.json]
Smoke (a minute or two): ... privacy_utility.py --rounds 2 --quick
Issue 21's grid: ... privacy_utility.py --grid [--populations 1000 10000]
    [--mechanisms ftrl banded] [--epsilons 1 2 4 8] [--momenta 0 0.5]
    [--pfl-strategy /tmp/pfl_strategy.json] --out docs/results/privacy_utility_mf.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch

from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import ArrayDataset, load_mnist
from veilfl.ml.dp_sgd import DpSgdConfig, dp_sgd_learner
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.privacy.dp_config import DpConfig, NoisePlacement
from veilfl.privacy.dp_ftrl import dp_ftrl_noise_multiplier_for
from veilfl.privacy.mechanisms import (
    DealtNoisePlan,
    PrivacyMechanism,
    ReleaseDecoder,
    ReleaseSchedule,
    ReleaseTerms,
    mechanism_named,
    register_mechanism,
    unregister_mechanism,
)
from veilfl.privacy.mf_accounting import matrix_mechanism_epsilon
from veilfl.privacy.min_separation import minsep_sensitivity
from veilfl.privacy.tree import TreeNode, cover
from veilfl.privacy.utility import noise_to_signal
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


GRID_PARTICIPATIONS = 3  # K
GRID_SEPARATION = 10  # b: the population over the clients per round
GRID_CLIP = 0.5
GRID_SERVER_STEP = 2.0  # the server's effective step, lr / (1 - momentum)
GRID_AGGREGATORS = 4  # m, as in the demo: each of m dealers adds 1/(m - t + 1) of the variance
PFL_SCALE_BITS = 16


def correlated_row(
    *,
    mechanism: str,
    population: int,
    target_epsilon: float,
    momentum: float,
    placement: NoisePlacement,
    test: Any,
    quick: bool,
    max_rounds: int | None,
) -> dict[str, Any]:
    """One row of issue 21's grid: ``mechanism`` (a registered name) over
    ``population`` clients, ``population / b`` a round, K passes, at ``target_epsilon``
    against both observers (distributed noise), with server momentum ``momentum``."""
    per_round = population // GRID_SEPARATION
    rounds = GRID_PARTICIPATIONS * GRID_SEPARATION
    chosen = mechanism_named(mechanism)
    config = DpConfig(
        placement=placement,
        noise_multiplier=1.0,
        clip_norm=GRID_CLIP,
        min_clients=per_round,
        mechanism=mechanism,
        max_participations=GRID_PARTICIPATIONS,
        min_separation=GRID_SEPARATION,
        accounting="pld",
    )
    noise = chosen.noise_multiplier_for(
        config, target_epsilon=target_epsilon, rounds=rounds, sample_rate=1.0
    )
    config = replace(config, noise_multiplier=noise)
    return _run_limited(
        kind=f"{chosen.title} K={GRID_PARTICIPATIONS} {placement}"
        + (f" +mom {momentum:g}" if momentum else ""),
        config=config,
        population=population,
        rounds=rounds,
        momentum=momentum,
        test=test,
        quick=quick,
        max_rounds=max_rounds,
        equivalent=chosen.equivalent_noise_multiplier(
            config, rounds=rounds, expected_clients=population // GRID_SEPARATION
        ),
    )


def _run_limited(
    *,
    kind: str,
    config: DpConfig,
    population: int,
    rounds: int,
    momentum: float,
    test: Any,
    quick: bool,
    max_rounds: int | None,
    equivalent: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    per_round = population // GRID_SEPARATION
    secure = config.placement == "distributed"
    started = time.perf_counter()
    result = simulate(
        mnist_learner("simple-cnn", seed=0),
        client_data=_clients(population),
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
                dp=config,
                server_learning_rate=GRID_SERVER_STEP * (1 - momentum),
                server_momentum=momentum,
            ),
            secure=SecureAggregationConfig(
                norm_bound=config.clip_norm, num_aggregators=GRID_AGGREGATORS, threshold=2
            )
            if secure
            else None,
            through_wire=False,
        ),
    )
    last = result.history[-1]
    return {
        "kind": kind,
        "aggregators": GRID_AGGREGATORS if secure else None,
        "clients": population,
        "noise_multiplier": config.noise_multiplier,
        "rounds": len(result.history),
        "epsilon": last.epsilon,
        "epsilon_coordinator": last.epsilon_coordinator,
        "accuracy": last.test_accuracy,
        "seconds": time.perf_counter() - started,
        "momentum": momentum,
        "noise_ratio": noise_to_signal(
            model_size=MODEL_SIZE, clients_per_round=per_round, noise_multiplier=equivalent
        ),
        **(extra or {}),
    }


class _BandedRowsSchedule(ReleaseSchedule):
    """A banded, lower-triangular (not necessarily Toeplitz) strategy in fixed point:
    release t is ``(sum_j C_int[t, t-j] x_{t-j}) / scale + z_t``, fresh z_t."""

    name = "banded-rows"

    def __init__(self, integer_strategy: npt.NDArray[np.int64], *, scale: int, window: int) -> None:
        self._strategy = integer_strategy
        self._scale = scale
        self._window = window

    @property
    def window(self) -> int:
        return self._window

    def terms(self, step: int) -> ReleaseTerms:
        row = step - 1
        width = min(step, self._window)
        return ReleaseTerms(
            step=step,
            coefficients=tuple(int(self._strategy[row, row - j]) for j in range(width)),
            scale=self._scale,
            added=(TreeNode(0, step),),
        )

    def decoder(self) -> ReleaseDecoder:
        return _BandedRowsDecoder()


class _BandedRowsDecoder(ReleaseDecoder):
    """Forward substitution: xhat_t = (scale r_t - sum_{j>=1} c_{t,j} xhat_{t-j}) / c_{t,0}
    (in memory only: the benchmark never restarts a run)."""

    def __init__(self) -> None:
        self._estimates: list[npt.NDArray[np.float64]] = []

    def decode(
        self, terms: ReleaseTerms, release: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        total = terms.scale * release
        for j, coefficient in enumerate(terms.coefficients[1:], start=1):
            total = total - coefficient * self._estimates[-j]
        estimate = total / terms.coefficients[0]
        self._estimates = [*self._estimates[-(len(terms.coefficients) + 1) :], estimate]
        return estimate

    def to_json(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        self._estimates = []


class PflBandedMechanism(PrivacyMechanism):
    """pfl 0.6's banded MF strategy, as a veilfl mechanism (central noise only), with
    its sensitivity computed from the columns of the (rounded) strategy it releases."""

    name: ClassVar[str] = "pfl-banded"
    title: ClassVar[str] = "pfl banded MF"
    summary: ClassVar[str] = "pfl 0.6's banded matrix factorisation (benchmark only)"
    samples_clients: ClassVar[bool] = False
    placements: ClassVar[frozenset[str]] = frozenset({"central"})

    def __init__(self, strategy: npt.NDArray[np.float64], *, window: int) -> None:
        scale = 2**PFL_SCALE_BITS
        self._integer = np.rint(strategy * scale).astype(np.int64)
        self._scale = scale
        self._window = window

    @property
    def released_strategy(self) -> npt.NDArray[np.float64]:
        """The strategy the releases really apply (rounded to the fixed point)."""
        released: npt.NDArray[np.float64] = self._integer.astype(np.float64) / self._scale
        return released

    def release_schedule(self, config: DpConfig, *, rounds: int) -> ReleaseSchedule:
        return _BandedRowsSchedule(self._integer, scale=self._scale, window=self._window)

    def dealt_noise(
        self, config: DpConfig, *, per_update_bound: float, expected_clients: float
    ) -> DealtNoisePlan:
        raise ConfigurationError("The pfl comparison row runs with central noise only.")

    def sensitivity(self, config: DpConfig, *, rounds: int) -> float:
        return minsep_sensitivity(
            self.released_strategy[:rounds, :rounds],
            max_participations=config.max_participations or rounds,
            min_separation=config.min_separation,
        )

    def planned_epsilon(self, config: DpConfig, *, rounds: int, sample_rate: float) -> float:
        if rounds == 0:
            return 0.0
        return matrix_mechanism_epsilon(
            noise_multiplier=config.noise_multiplier,
            sensitivity=self.sensitivity(config, rounds=rounds),
            delta=config.delta,
            accounting=config.accounting,
        )


def pfl_rows(
    strategy_file: Path, *, momentum: float, test: Any, quick: bool, max_rounds: int | None
) -> list[dict[str, Any]]:
    """pfl's strategy at its own noise (its stated epsilon and the true one), and at the
    noise that truly spends its stated epsilon; 1,000 clients, central noise."""
    exported = json.loads(strategy_file.read_text())
    rounds = int(exported["rounds"])
    separation = int(exported["min_separation"])
    if separation != GRID_SEPARATION or rounds != GRID_PARTICIPATIONS * GRID_SEPARATION:
        raise SystemExit(
            f"{strategy_file} holds pfl's strategy for {rounds} rounds b = {separation}; "
            f"export it with --rounds {GRID_PARTICIPATIONS * GRID_SEPARATION} "
            f"--min-separation {GRID_SEPARATION}."
        )
    mechanism = PflBandedMechanism(
        np.asarray(exported["strategy"], dtype=np.float64), window=separation
    )
    register_mechanism(mechanism)
    try:
        config = DpConfig(
            placement="central",
            noise_multiplier=float(exported["noise_stddev_over_clip"]),
            clip_norm=GRID_CLIP,
            min_clients=100,
            mechanism=mechanism.name,
            max_participations=GRID_PARTICIPATIONS,
            min_separation=separation,
            delta=float(exported["delta"]),
            accounting="pld",
        )
        stated = float(exported["stated_epsilon"])
        truthful = mechanism.noise_multiplier_for(
            config, target_epsilon=stated, rounds=rounds, sample_rate=1.0
        )
        rows = []
        settings = (("as pfl calibrates", config.noise_multiplier), ("true eps", truthful))
        for label, noise in settings:
            rows.append(
                _run_limited(
                    kind=f"pfl banded MF, {label}",
                    config=replace(config, noise_multiplier=noise),
                    population=1000,
                    rounds=rounds,
                    momentum=momentum,
                    test=test,
                    quick=quick,
                    max_rounds=max_rounds,
                    equivalent=mechanism.equivalent_noise_multiplier(
                        replace(config, noise_multiplier=noise),
                        rounds=rounds,
                        expected_clients=100,
                    ),
                    extra={
                        "pfl_stated_epsilon": stated,
                        "sensitivity": mechanism.sensitivity(config, rounds=rounds),
                    },
                )
            )
        return rows
    finally:
        unregister_mechanism(mechanism.name)


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
    parser.add_argument(
        "--grid",
        action="store_true",
        help="issue 21's grid of correlated-noise rows (instead of the rows above)",
    )
    parser.add_argument("--populations", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--mechanisms", nargs="*", default=["ftrl", "banded"])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--momenta", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument(
        "--grid-placement", choices=["central", "distributed"], default="distributed"
    )
    parser.add_argument(
        "--pfl-strategy",
        type=Path,
        default=None,
        help="pfl's strategy (benchmarks/pfl_banded_strategy.py) for its rows beside ours",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    examples = min(args.test_examples, 500) if args.quick else args.test_examples
    test = load_mnist().test.subset(range(examples))
    rows = []
    if args.grid:
        grid(args, test)
        return
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


def grid(args: argparse.Namespace, test: Any) -> None:
    """Issue 21's rows, one line each as they finish, then its goal lines."""
    rows: list[dict[str, Any]] = []
    print(
        f"{'kind':<34} {'clients':>7} {'z':>6} {'rounds':>6} {'eps public':>10} "
        f"{'eps coord':>9} {'accuracy':>8} {'noise/signal':>12} {'seconds':>8}"
    )

    def show(row: dict[str, Any]) -> None:
        rows.append(row)
        print(f"{_format(row, width=34)} {row['noise_ratio']:>12.2f} {row['seconds']:>8.0f}")
        if args.out:
            args.out.write_text(json.dumps(rows, indent=2))

    max_rounds = args.rounds if args.quick else None
    for population in args.populations:
        for epsilon in args.epsilons:
            for mechanism in args.mechanisms:
                for momentum in args.momenta:
                    show(
                        correlated_row(
                            mechanism=mechanism,
                            population=population,
                            target_epsilon=epsilon,
                            momentum=momentum,
                            placement=args.grid_placement,
                            test=test,
                            quick=args.quick,
                            max_rounds=max_rounds,
                        )
                    )
    if args.pfl_strategy is not None:
        for momentum in args.momenta:
            for row in pfl_rows(
                args.pfl_strategy,
                momentum=momentum,
                test=test,
                quick=args.quick,
                max_rounds=max_rounds,
            ):
                show(row)
    for line in grid_goal_lines(rows):
        print(line)


def grid_goal_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 21's three goals against the rows measured (a goal with no row to judge
    it says so)."""

    def best(population: int, at_most: float) -> dict[str, Any] | None:
        eligible = [
            r
            for r in rows
            if r["clients"] == population
            and not r["kind"].startswith("pfl")
            and (e := _protected(r)) is not None
            and e <= at_most * 1.001
        ]
        return max(eligible, key=lambda r: r["accuracy"]) if eligible else None

    lines = []
    for population, goal, at_most in ((10_000, 0.95, 2.0), (1000, 0.91, 2.0)):
        top = best(population, at_most)
        head = f"goal: >= {100 * goal:.0f}% at epsilon <= {at_most:g}, {population:,} clients"
        if top is None:
            lines.append(f"{head}: NOT RUN (no row protected against both at that epsilon)")
            continue
        verdict = "MET" if top["accuracy"] >= goal else "MISSED"
        lines.append(
            f"{head}: {verdict}, best {100 * top['accuracy']:.2f}% ({top['kind']}, "
            f"noise/signal {top['noise_ratio']:.2f})"
        )
    for pfl in (r for r in rows if r["kind"].startswith("pfl") and "true" in r["kind"]):
        ours = [
            r
            for r in rows
            if r["kind"].startswith("Banded MF")
            and r["kind"].split()[3] == "central"  # pfl's rows are central too
            and r["clients"] == pfl["clients"]
            and r["momentum"] == pfl["momentum"]
            and abs((r["epsilon"] or 0) - (pfl["epsilon"] or 0)) < 0.01 * (pfl["epsilon"] or 1)
        ]
        if not ours:
            lines.append(
                f"goal: ours >= pfl ({pfl['kind']}, momentum {pfl['momentum']:g}): no "
                "central banded row at its epsilon and momentum"
            )
            continue
        mine = ours[0]
        verdict = "MET" if mine["accuracy"] >= pfl["accuracy"] else "MISSED"
        lines.append(
            f"goal: ours >= pfl at epsilon {pfl['epsilon']:.2f}, momentum "
            f"{pfl['momentum']:g}: {verdict}, {100 * mine['accuracy']:.2f}% against "
            f"{100 * pfl['accuracy']:.2f}%"
        )
    return lines


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


def _format(row: dict[str, Any], *, width: int = 28) -> str:
    z = "-" if row["noise_multiplier"] is None else f"{row['noise_multiplier']:.2f}"
    eps = "inf" if row["epsilon"] is None else f"{row['epsilon']:.2f}"
    if row["epsilon"] is None:
        coordinator = "inf"
    elif row.get("epsilon_coordinator") is None:
        coordinator = "none" if row["clients"] > 1 else eps
    else:
        coordinator = f"{row['epsilon_coordinator']:.2f}"
    return (
        f"{row['kind']:<{width}} {row['clients']:>7} {z:>6} {row['rounds']:>6} {eps:>10} "
        f"{coordinator:>9} {100 * row['accuracy']:>7.2f}%"
    )


if __name__ == "__main__":
    main()
