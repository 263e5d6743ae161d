"""``veilfl server``: the coordinator, serving one run over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from veilfl.cli.common import (
    add_device_option,
    add_dp_options,
    add_log_option,
    configure_logging,
    dp_from_args,
    secure_norm_bound,
    test_dataset,
)
from veilfl.cli.learner_option import add_learner_option, learner_for, model_name_from_args
from veilfl.cli.quorum_options import add_quorum_options, quorum_from_args
from veilfl.cli.run_resume import check_resumable
from veilfl.cli.security_options import (
    add_enrollment_options,
    add_rate_limit_options,
    add_tls_options,
    enrollment_from_args,
    rate_limit_from_args,
    transport_from_args,
)
from veilfl.cli.tracking_options import add_metrics_sink_option
from veilfl.errors import ConfigurationError
from veilfl.keyfiles import read_public_key
from veilfl.logging_setup import uvicorn_log_options
from veilfl.privacy.dp_fedavg import DpConfig
from veilfl.protocol.aggregator_minimums import DEFAULT_MIN_PARTICIPANTS
from veilfl.protocol.assembly import (
    check_run_settings,
    cohort_plan,
    precision_warning,
    privacy_warning,
)
from veilfl.protocol.buffered import BufferConfig, BufferMode
from veilfl.protocol.messages import LocalTrainingPlan, PublishedAggregator
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.strategy.settings import SERVER_OPTIMIZER_CHOICES, ServerOptimizerConfig

__all__ = ["add_parser", "run"]

logger = logging.getLogger("veilfl.server")


def add_round_options(parser: argparse.ArgumentParser) -> None:
    """Options that define the rounds and local training (shared with simulate)."""
    group = parser.add_argument_group("rounds")
    group.add_argument("--model", default="simple-cnn", help="simple-cnn or mnist-cnn")
    group.add_argument("--rounds", type=int, default=5, help="number of rounds")
    group.add_argument("--clients-per-round", type=int, default=None, help="clients sampled")
    group.add_argument("--fraction", type=float, default=None, help="fraction C sampled")
    group.add_argument(
        "--min-clients",
        type=int,
        default=None,
        help="reports needed to close (default 1; under secure aggregation, the "
        "aggregators' largest --min-participants)",
    )
    group.add_argument("--min-available", type=int, default=None, help="joins before round 1")
    group.add_argument("--round-timeout", type=float, default=120.0, help="round deadline (s)")
    group.add_argument("--lr", type=float, default=0.05, help="local SGD learning rate")
    group.add_argument("--momentum", type=float, default=0.9, help="local SGD momentum")
    group.add_argument("--epochs", type=int, default=1, help="local epochs E")
    group.add_argument("--batch-size", type=int, default=32, help="local batch size B")
    group.add_argument("--max-batches", type=int, default=None, help="cap batches per epoch")
    group.add_argument(
        "--proximal-mu",
        type=float,
        default=0.0,
        help="FedProx's mu: clients add mu/2 ||w - w_global||^2 to their loss (0: off)",
    )
    group.add_argument(
        "--server-lr",
        type=float,
        default=None,
        help="server learning rate (default 1 for fedavg, 0.01 for the adaptive optimisers)",
    )
    group.add_argument(
        "--server-optimizer",
        choices=SERVER_OPTIMIZER_CHOICES,
        default="fedavg",
        type=str.lower,
        help="how the server applies a round's mean update: FedAvg, or an adaptive "
        "optimiser of Reddi et al. 2021",
    )
    group.add_argument(
        "--server-beta1", type=float, default=0.9, help="adaptive optimisers' first-moment decay"
    )
    group.add_argument(
        "--server-beta2",
        type=float,
        default=0.99,
        help="FedAdam's and FedYogi's second-moment decay",
    )
    group.add_argument(
        "--server-tau", type=float, default=1e-3, help="adaptive optimisers' tau (adaptivity)"
    )
    group.add_argument("--seed", type=int, default=0, help="seed for model init and sampling")
    group.add_argument(
        "--population",
        type=int,
        default=None,
        help="clients the run draws from (fixes the DP sampling rate; default: --min-available)",
    )
    buffered = parser.add_argument_group("asynchronous aggregation")
    buffered.add_argument(
        "--mode",
        choices=["sync", "fedbuff", "fedasync"],
        default="sync",
        help="synchronous rounds, or buffered asynchronous aggregation (--rounds = versions)",
    )
    buffered.add_argument("--buffer-size", type=int, default=10, help="FedBuff's K")
    buffered.add_argument("--max-staleness", type=int, default=5, help="refuse staler updates")
    buffered.add_argument(
        "--max-concurrency", type=int, default=None, help="most clients training at once"
    )
    buffered.add_argument("--fedasync-mixing", type=float, default=0.6, help="FedAsync's alpha")


def secure_from_args(args: argparse.Namespace, dp: DpConfig | None = None) -> SecureSettings | None:
    """Secure-aggregation settings from ``--aggregator`` and friends."""
    if not getattr(args, "aggregator", None):
        return None
    endpoints = []
    for index, spec in enumerate(args.aggregator, start=1):
        url, _, key_file = spec.partition(",")
        if not url or not key_file:
            raise ConfigurationError(f"--aggregator takes URL,PUBLIC_KEY_FILE; got {spec!r}.")
        key = read_public_key(Path(key_file))
        endpoints.append(
            PublishedAggregator(
                index=index,
                url=url.rstrip("/"),
                kem=key.kem,
                public_key=key.to_json()["public_key"],
                signing_key=key.to_json()["signing_key"],
            )
        )
    config = SecureAggregationConfig(
        threshold=args.threshold,
        num_aggregators=len(endpoints),
        norm_bound=secure_norm_bound(args.norm_bound, dp),
        max_samples_per_client=args.max_samples_per_client,
        kem=endpoints[0].kem,
        **quorum_from_args(args),
    )
    return SecureSettings(config=config, aggregators=tuple(endpoints))


def provisional_min_clients(args: argparse.Namespace) -> int:
    """``--min-clients``, or when unset: 1 for a plaintext run; under secure aggregation
    an aggregator's default minimum (2, at most ``--clients-per-round``), until the
    aggregators' signed minimums are known (:mod:`veilfl.server.aggregator_check`)."""
    if args.min_clients is not None:
        return int(args.min_clients)
    if not getattr(args, "aggregator", None):
        return 1
    per_round = args.clients_per_round
    if per_round is None:
        return DEFAULT_MIN_PARTICIPANTS
    return min(int(per_round), DEFAULT_MIN_PARTICIPANTS)


def settings_from_args(args: argparse.Namespace) -> RunSpec:
    """The run settings the round options describe.

    Under ``--target-epsilon`` the noise multiplier is derived for the sampling rate
    and the number of releases that :func:`~veilfl.protocol.assembly.cohort_plan`
    gives for these settings, the figures every path charges (q = 1 for buffered runs,
    whose sample is not secret).
    """
    min_clients = provisional_min_clients(args)
    per_round = args.clients_per_round
    if per_round is None and args.fraction is None:
        per_round = min_clients
    rounds = RoundConfig(
        num_rounds=args.rounds,
        clients_per_round=per_round,
        fraction=args.fraction,
        min_clients=min_clients,
        min_available_clients=args.min_available,
        round_timeout_s=args.round_timeout,
    )
    settings = _settings_without_dp(args, rounds)
    dp = None
    if hasattr(args, "dp"):
        # Rounds are Poisson-sampled under DP; a buffer's sample may be known (q = 1).
        secret = settings.buffer is None
        dp = dp_from_args(
            args,
            sample_rate=cohort_plan(settings).sample_rate if secret else 1.0,
            rounds=settings.num_releases,
            min_clients=rounds.min_clients,
        )
    return replace(settings, secure=secure_from_args(args, dp), dp=dp)


def _settings_without_dp(args: argparse.Namespace, rounds: RoundConfig) -> RunSpec:
    return RunSpec(
        model_name=model_name_from_args(args),
        rounds=rounds,
        plan=LocalTrainingPlan(
            learning_rate=args.lr,
            momentum=args.momentum,
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_batches=args.max_batches,
            proximal_mu=getattr(args, "proximal_mu", 0.0),
        ),
        server_learning_rate=server_learning_rate(args),
        seed=args.seed,
        buffer=buffer_from_args(args),
        fedasync_mixing=getattr(args, "fedasync_mixing", 0.6),
        population=getattr(args, "population", None),
        server_optimizer=server_optimizer_from_args(args),
    )


def server_optimizer_from_args(args: argparse.Namespace) -> ServerOptimizerConfig | None:
    """The adaptive server optimiser ``--server-optimizer`` names (None for fedavg)."""
    name = getattr(args, "server_optimizer", "fedavg")
    if name == "fedavg":
        return None
    return ServerOptimizerConfig(
        name=name, beta1=args.server_beta1, beta2=args.server_beta2, tau=args.server_tau
    )


def server_learning_rate(args: argparse.Namespace) -> float:
    """``--server-lr``, else 1 for FedAvg and 0.01 for an adaptive optimiser (which
    moves each coordinate by about η per round, so 1 would be far too large)."""
    if args.server_lr is not None:
        return float(args.server_lr)
    return 1.0 if getattr(args, "server_optimizer", "fedavg") == "fedavg" else 0.01


def buffer_from_args(args: argparse.Namespace) -> BufferConfig | None:
    """Buffered asynchronous settings (None for synchronous rounds)."""
    mode = getattr(args, "mode", "sync")
    if mode == "sync":
        return None
    return BufferConfig(
        buffer_size=1 if mode == "fedasync" else args.buffer_size,
        max_staleness=args.max_staleness,
        max_versions=args.rounds,
        mode=BufferMode(mode),
        max_concurrency=args.max_concurrency,
    )


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``veilfl server``."""
    parser = subparsers.add_parser("server", help="run the coordinator (HTTP)")
    parser.add_argument("--run-dir", type=Path, required=True, help="run folder (resumable)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument("--mnist-dir", type=Path, default=None, help="MNIST IDX folder")
    parser.add_argument(
        "--test-examples", type=int, default=None, help="evaluate on this many test examples"
    )
    add_device_option(parser, what=" (the server evaluates each round's model there)")
    parser.add_argument(
        "--max-update-mb", type=float, default=64.0, help="largest update body accepted (MiB)"
    )
    parser.add_argument(
        "--linger", type=float, default=3.0, help="seconds to keep serving after the last round"
    )
    secure = parser.add_argument_group("secure aggregation")
    secure.add_argument(
        "--aggregator",
        action="append",
        default=[],
        metavar="URL,PUBLIC_KEY_FILE",
        help="an aggregator (repeat, in index order); none means plaintext FedAvg",
    )
    secure.add_argument("--threshold", type=int, default=2, help="shares needed (t)")
    add_quorum_options(secure)
    secure.add_argument(
        "--norm-bound",
        type=float,
        default=None,
        help="L2 norm each client's weighted update is clipped to, and proves in zero "
        "knowledge (default 10, or the DP clipping norm)",
    )
    secure.add_argument(
        "--max-samples-per-client",
        type=int,
        default=10_000,
        help="sample count that gets the full FedAvg weight",
    )
    add_round_options(parser)
    add_learner_option(parser)
    add_dp_options(parser)
    add_tls_options(parser, serves=True)
    add_enrollment_options(parser)
    add_rate_limit_options(parser)
    parser.add_argument(
        "--max-clock-skew",
        type=float,
        default=120.0,
        help="refuse requests signed further than this from the server's clock (s)",
    )
    add_metrics_sink_option(parser)
    add_log_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve the run until its last round completes."""
    import uvicorn

    from veilfl.server.aggregator_check import fit_to_aggregators, open_when_aggregators_consent
    from veilfl.server.aggregator_link import HttpAggregatorLink
    from veilfl.server.app import create_app
    from veilfl.server.client_access import ClientAccess
    from veilfl.server.commands import ServerCommands
    from veilfl.server.round_reports import RoundReports
    from veilfl.server.run_setup import PreparedRun, metrics_from_store, prepare_run
    from veilfl.server.service import CoordinatorService
    from veilfl.server.starting_gate import StartingGate

    configure_logging(args.log_level, fmt=args.log_format)
    settings = settings_from_args(args)
    check_run_settings(settings)  # contradictory DP settings: one line, before anything
    transport = transport_from_args(args, serves=True)
    policy = enrollment_from_args(args)
    if settings.secure is None:
        check_resumable(args.run_dir, settings.unsealed().to_json())
    else:
        for endpoint in settings.secure.aggregators:
            transport.check_url(endpoint.url)
    learner = learner_for(settings.model_name, seed=settings.seed, device=args.device)
    test = test_dataset(args.mnist_dir, args.test_examples)
    gate = StartingGate()  # listens at once; serves the run's app once the run exists
    server = uvicorn.Server(
        uvicorn.Config(
            gate,
            host=args.host,
            port=args.port,
            lifespan="on",  # the gate's own; the run's app is started below, once it exists
            timeout_keep_alive=60,  # many clients poll: keep their connections open
            backlog=4096,
            **uvicorn_log_options(args.log_level),
            **transport.uvicorn_options(),  # type: ignore[arg-type]
        )
    )

    async def setup(settings: RunSpec) -> PreparedRun:
        if settings.secure is not None:
            # The run's id is the hash of its settings, so they are fitted to the
            # aggregators' minimums before the run is created (or compared on resume).
            settings = await fit_to_aggregators(
                settings,
                min_clients_given=args.min_clients is not None,
                clients_per_round_given=args.clients_per_round is not None,
                verify=transport.verify,
            )
            check_resumable(args.run_dir, settings.unsealed().to_json())
        return await asyncio.to_thread(
            prepare_run,
            args.run_dir,
            settings,
            initial_weights=lambda seed: learner.initial_weights(seed=seed),
        )

    async def serve() -> None:
        serving = asyncio.create_task(server.serve())
        setting_up = asyncio.create_task(setup(settings))
        await asyncio.wait({serving, setting_up}, return_when=asyncio.FIRST_COMPLETED)
        if not setting_up.done() or setting_up.exception() is not None:
            server.should_exit = True  # stopped, or the run was refused: in one line
            setting_up.cancel()
            await serving
            if not setting_up.cancelled():
                setting_up.result()
            return
        prepared = setting_up.result()
        try:
            await serve_run(prepared, serving)
        finally:
            prepared.store.close()

    async def serve_run(prepared: PreparedRun, serving: asyncio.Task[None]) -> None:
        run_info = prepared.run_info
        spec = prepared.description.spec
        if prepared.resumed_from_round is not None:
            logger.info(
                "resuming run %s after round %d", run_info.run_id, prepared.resumed_from_round
            )
        if prepared.coordinator.done:
            logger.info("run %s is already complete", run_info.run_id)
            server.should_exit = True
            await serving
            return
        model_size = prepared.coordinator.spec.total_size
        for warning in (
            privacy_warning(spec, model_size=model_size),
            precision_warning(
                None if spec.secure is None else spec.secure.config, model_size=model_size
            ),
        ):
            if warning is not None:
                logger.warning("%s", warning)
        if prepared.privacy is not None:
            logger.info("privacy so far: %s", prepared.privacy.report().summary())
        link = (
            None
            if run_info.secure is None
            else HttpAggregatorLink(
                {a.index: a.url for a in run_info.secure.aggregators},
                vector_length=run_info.secure.layout.measurement_length,
                run_id=run_info.run_id,
                identity=prepared.identity,
                verify=transport.verify,
            )
        )
        reports = RoundReports(
            args.run_dir,
            prepared.recorder,
            spec=prepared.coordinator.spec,
            evaluate=learner.evaluator(test),
            history=metrics_from_store(prepared.store),
            title=f"veilfl run {run_info.run_id}",
            sinks=args.metrics_sink,
        )
        service = CoordinatorService(
            prepared.coordinator,
            description=prepared.description,
            performer=ServerCommands(link, prepared.persist),
            on_round=reports,
            on_served=reports.note,
            max_update_bytes=int(args.max_update_mb * 2**20),
            opened=spec.secure is None,  # a secure run opens once its aggregators consent
        )
        access = ClientAccess.create(
            run_id=run_info.run_id,
            policy=policy,
            coordinator=prepared.identity,
            store=prepared.store,
            rate_limit=rate_limit_from_args(args),
            max_skew_s=args.max_clock_skew,
        )
        app = create_app(
            service, metrics=lambda: list(reports.history), access=access, settings=spec
        )
        try:
            async with app.router.lifespan_context(app):
                gate.app = app
                await _until_done(service, serving, link, spec)
        finally:
            if link is not None:
                await link.close()
            reports.close()

    async def _until_done(
        service: CoordinatorService,
        serving: asyncio.Task[None],
        link: HttpAggregatorLink | None,
        spec: RunSpec,
    ) -> None:
        finished = asyncio.create_task(service.finished.wait())
        waiting = {serving, finished}
        if spec.secure is not None:
            opening = asyncio.create_task(
                open_when_aggregators_consent(service, verify=transport.verify)
            )
            done, _ = await asyncio.wait({*waiting, opening}, return_when=asyncio.FIRST_COMPLETED)
            if opening in done and opening.exception() is not None:
                server.should_exit = True  # an aggregator refused the run: in one line
                await serving
                opening.result()
            if not opening.done():
                opening.cancel()
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if finished in done:
            logger.info(
                "all %d rounds complete; serving %.0f s more", spec.num_releases, args.linger
            )
            await asyncio.sleep(args.linger)
            server.should_exit = True
        await serving

    base = f"{'https' if transport.certificate else 'http'}://{args.host}:{args.port}"
    logger.info("live dashboard at %s/dashboard; Prometheus metrics at %s/metrics", base, base)
    asyncio.run(serve())
    return 0
