"""``veilfl server``: the coordinator, serving one run over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from veilfl.cli.common import (
    add_device_option,
    add_log_option,
    configure_logging,
    secure_norm_bound,
    test_dataset,
)
from veilfl.cli.learner_option import add_learner_option, learner_for
from veilfl.cli.run_options import add_run_options, given_settings, run_spec_from_args
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
from veilfl.declared import build_config
from veilfl.errors import ConfigurationError
from veilfl.keyfiles import read_public_key
from veilfl.logging_setup import uvicorn_log_options
from veilfl.privacy.dp_fedavg import DpConfig
from veilfl.protocol.assembly import (
    check_run_settings,
    precision_warning,
    privacy_warning,
)
from veilfl.protocol.messages import PublishedAggregator
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.secagg.config import SecureAggregationConfig

__all__ = ["add_parser", "run"]

logger = logging.getLogger("veilfl.server")


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
    derived = {
        "secure.config.num_aggregators": len(endpoints),
        "secure.config.norm_bound": secure_norm_bound(args.norm_bound, dp),
        "secure.config.kem": endpoints[0].kem,
    }
    values = {**given_settings(args), **derived}
    config = build_config(SecureAggregationConfig, values, "secure.config.")
    return SecureSettings(config=config, aggregators=tuple(endpoints))


def settings_from_args(args: argparse.Namespace) -> RunSpec:
    """The run ``veilfl server``'s options describe (:func:`run_spec_from_args`, with
    the aggregators of ``--aggregator``)."""
    return run_spec_from_args(args, secure=lambda dp: secure_from_args(args, dp))


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
    add_run_options(parser)
    add_learner_option(parser)
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
