"""``veilfl simulate``: many virtual clients in one process, no HTTP."""

from __future__ import annotations

import argparse
import logging
from datetime import datetime
from pathlib import Path

from veilfl.cli.best_model import SimulatedBestModel, add_best_metric_option
from veilfl.cli.common import (
    add_data_options,
    add_device_option,
    add_log_option,
    configure_logging,
    secure_norm_bound,
)
from veilfl.cli.data_options import (
    add_data_source_options,
    server_evaluation_data,
    simulated_clients,
)
from veilfl.cli.learner_option import add_learner_option, learner_for
from veilfl.cli.progress import RoundProgress, TrainedClients
from veilfl.cli.run_options import add_run_options, given_settings, run_spec_from_args
from veilfl.cli.tracking_options import add_metrics_sink_option
from veilfl.declared import build_config
from veilfl.privacy.report import PrivacyReport
from veilfl.protocol.aggregator_minimums import DEFAULT_MIN_PARTICIPANTS, fit_cohort
from veilfl.protocol.assembly import (
    check_run_settings,
    precision_warning,
    privacy_advice,
    privacy_warning,
)
from veilfl.protocol.best_model import BestMetric
from veilfl.protocol.metrics import RoundMetrics
from veilfl.reporting import format_round_row, format_round_table_header
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.server.checkpoints import BEST_FILE, CheckpointStore
from veilfl.tensors import Weights, spec_of
from veilfl.tracking import SinkContext, open_sinks

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``veilfl simulate``."""
    parser = subparsers.add_parser("simulate", help="simulate N clients in one process")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="where metrics and the final model go (default: runs/sim-<time>)",
    )
    parser.add_argument(
        "--test-examples",
        type=int,
        default=None,
        help="evaluate on the first this many examples (0: no server-side evaluation)",
    )
    parser.add_argument("--dropout", type=float, default=0.0, help="per-task dropout chance")
    hetero = parser.add_argument_group("heterogeneous clients")
    hetero.add_argument(
        "--profiles",
        action="store_true",
        help="synchronous rounds in virtual time with the speed profiles below",
    )
    hetero.add_argument("--base-seconds", type=float, default=10.0, help="median task time")
    hetero.add_argument("--speed-sigma", type=float, default=0.5, help="log-normal speed spread")
    hetero.add_argument("--late-fraction", type=float, default=0.0, help="clients joining late")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_device_option(parser)
    execution = parser.add_argument_group("where clients train")
    execution.add_argument(
        "--backend",
        choices=["inprocess", "ray"],
        default="inprocess",
        help="in this process, or as Ray actors (pip install '.[ray]' in the checkout)",
    )
    execution.add_argument(
        "--batch-clients",
        type=int,
        default=100,
        help="at most this many clients train together (learners that can be batched)",
    )
    execution.add_argument(
        "--sequential",
        action="store_true",
        help="train clients one at a time even when they could be batched",
    )
    execution.add_argument(
        "--ray-address",
        default=None,
        help="a running Ray cluster (auto, ray://HOST:10001); default: start a local one",
    )
    execution.add_argument(
        "--ray-cpus", type=float, default=1.0, help="CPUs each Ray actor (client) reserves"
    )
    execution.add_argument(
        "--ray-gpus",
        type=float,
        default=0.0,
        help="GPUs each Ray actor reserves (a fraction shares one); above 0 it trains on CUDA",
    )
    execution.add_argument(
        "--ray-workers", type=int, default=None, help="Ray actors (default: as resources allow)"
    )
    secure = parser.add_argument_group("secure aggregation")
    secure.add_argument("--secure", action="store_true", help="aggregate with Shamir shares")
    secure.add_argument("--aggregators", type=int, default=3, help="aggregators (m)")
    # Each in-process client's full FedAvg weight is the largest partition.
    add_run_options(parser, skip=("secure.config.max_samples_per_client",))
    add_learner_option(parser)
    add_data_options(parser)
    add_data_source_options(parser)
    add_metrics_sink_option(parser)
    add_best_metric_option(parser)
    add_log_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the simulation and write metrics and a plot."""
    import torch

    from veilfl.sim.async_simulator import AsyncSimulationConfig, simulate_async
    from veilfl.sim.backends import ExecutionSettings, build_executor
    from veilfl.sim.profiles import ClientProfiles
    from veilfl.sim.simulator import SimulationConfig, simulate

    configure_logging(args.log_level, fmt=args.log_format)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.population = args.num_clients  # the simulated population is all of it
    settings = run_spec_from_args(args)
    if args.secure:  # the in-process aggregators keep an aggregator's default minimum
        fitted = fit_cohort(
            settings,
            dict.fromkeys(range(1, args.aggregators + 1), DEFAULT_MIN_PARTICIPANTS),
            min_clients_given=args.min_clients is not None,
            clients_per_round_given=args.clients_per_round is not None,
        )
        if fitted.note is not None:
            logging.getLogger("veilfl").info("%s", fitted.note)
        settings = fitted.settings
    check_run_settings(settings, secure=args.secure)
    execution = ExecutionSettings(
        backend=args.backend,
        batched=not args.sequential,
        max_clients=args.batch_clients,
        ray_address=args.ray_address,
        ray_cpus=args.ray_cpus,
        ray_gpus=args.ray_gpus,
        ray_workers=args.ray_workers,
    )
    progress = RoundProgress(unit="clients trained")
    counter = TrainedClients(
        progress,
        per_round=(
            settings.rounds.sample_size(args.num_clients)
            if settings.buffer is None
            else settings.buffer.buffer_size
        ),
    )
    learner = learner_for(
        settings.model_name, seed=settings.seed, progress=counter.batch, device=args.device
    )
    clients = simulated_clients(args, learner, model_name=settings.model_name)
    # Each client trains on its part and evaluates on what it holds out (if anything);
    # without held-out parts, the bare partitions (which Ray ships as index arrays).
    client_data = clients.train if clients.evaluation is None else clients
    test = server_evaluation_data(args, learner, model_name=settings.model_name)
    run_dir = args.run_dir or Path("runs") / f"sim-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True, exist_ok=True)
    args.shown_run_dir = run_dir  # for the line printed if a signal stops the simulation
    mode = (
        f"secure aggregation ({args.threshold} of {args.aggregators})"
        if args.secure
        else "plaintext aggregation"
    )
    strategy = settings.server_optimizer.name if settings.server_optimizer else "fedavg"
    if settings.server_momentum:
        nesterov = " Nesterov" if settings.server_nesterov else ""
        strategy += f" with{nesterov} momentum {settings.server_momentum:g}"
    if not settings.server_lr_schedule.is_constant:
        strategy += f", {settings.server_lr_schedule.name} learning-rate schedule"
    print(
        f"simulating {args.num_clients} clients, {mode}, server {strategy}; training on "
        f"{learner.device} ({args.backend}); run folder {run_dir}"
    )

    title = f"veilfl simulation, {args.num_clients} clients"
    sinks = open_sinks(args.metrics_sink, SinkContext(run_dir=run_dir, title=title))
    best = SimulatedBestModel(
        CheckpointStore(run_dir / "checkpoints", model_name=settings.model_name),
        BestMetric.parse(args.best_metric),
    )

    def show(metrics: RoundMetrics) -> None:
        counter.round_done(metrics.round_id)
        print(format_round_row(metrics), flush=True)
        sinks.round(metrics)  # metrics.json and .csv kept if the simulation is stopped
        best.round(metrics)

    secure = (
        build_config(
            SecureAggregationConfig,
            {
                **given_settings(args),
                "secure.config.num_aggregators": args.aggregators,
                "secure.config.norm_bound": secure_norm_bound(args.norm_bound, settings.dp),
                "secure.config.max_samples_per_client": int(clients.train.sizes().max()),
            },
            "secure.config.",
        )
        if args.secure
        else None
    )
    model_size = spec_of(learner.initial_weights(seed=settings.seed)).total_size
    for warning in (
        privacy_warning(settings, model_size=model_size),
        precision_warning(secure, model_size=model_size),
    ):
        if warning is not None:
            print(f"warning: {warning}", flush=True)
    advice = privacy_advice(settings, model_size=model_size)
    if advice is not None:
        print(advice.summary(), flush=True)
    print(format_round_table_header(), flush=True)
    profiles = ClientProfiles(
        base_seconds=args.base_seconds,
        speed_sigma=args.speed_sigma,
        dropout=args.dropout,
        late_fraction=args.late_fraction,
        late_by_seconds=10 * args.base_seconds,
        seed=settings.seed,
    )
    with build_executor(learner, client_data, execution) as executor, sinks:
        if settings.buffer is not None:
            outcome = simulate_async(
                learner,
                client_data=client_data,
                test_data=test,
                config=AsyncSimulationConfig(settings, secure=secure, profiles=profiles),
                on_release=show,
                executor=executor,
                on_client_trained=counter.trained,
                on_model=best.model,
            )
            progress.close()
            history = list(outcome.history)
            print(
                f"{outcome.accepted} updates accepted, {outcome.refused_stale} refused as "
                f"stale, {outcome.dropped} dropped; virtual time "
                f"{sum(m.seconds for m in history):.0f} s, wall time "
                f"{outcome.wall_seconds:.1f} s"
            )
            show_privacy(outcome.privacy)
            final = outcome.final_weights
        else:
            result = simulate(
                learner,
                client_data=client_data,
                test_data=test,
                config=SimulationConfig(
                    settings,
                    secure=secure,
                    dropout_probability=0.0 if args.profiles else args.dropout,
                    profiles=profiles if args.profiles else None,
                ),
                on_round=show,
                executor=executor,
                on_client_trained=counter.trained,
                on_model=best.model,
            )
            progress.close()
            history = list(result.history)
            t = result.timings
            print(
                f"time: training {t.training:.1f} s, protection {t.protection:.1f} s, "
                f"transfer {t.transfer:.1f} s, "
                f"aggregation {t.aggregation:.1f} s, evaluation {t.evaluation:.1f} s"
            )
            show_privacy(result.privacy)
            final = result.final_weights
    print(f"wrote metrics.json, metrics.csv and metrics.png in {run_dir}")
    save_final_model(run_dir, settings.model_name, len(history), final)
    if best.best is not None:
        print(
            f"kept the best model, {best.best.describe()}, in "
            f"{run_dir / 'checkpoints' / BEST_FILE} (export it with veilfl export --best)"
        )
    return 0


def show_privacy(report: PrivacyReport | None) -> None:
    """Print the run's final privacy report: both observers and the accounting."""
    if report is not None:
        print(f"privacy: {report.summary()}")


def save_final_model(run_dir: Path, model_name: str, version: int, weights: Weights) -> None:
    """Write the final global model as checkpoint ``version`` (with its model name), for
    ``veilfl export``, and say where."""
    from veilfl.server.checkpoints import CheckpointStore

    path = CheckpointStore(run_dir / "checkpoints", model_name=model_name).save(version, weights)
    print(f"wrote {path} (export it with veilfl export --run-dir {run_dir} --out FILE)")
