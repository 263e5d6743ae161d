"""Start a coordinator from Python: :func:`run_coordinator` (``veilfl server`` calls it)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from veilfl.auth.enrollment import EnrollmentPolicy
from veilfl.auth.rate_limit import DEFAULT_RATE_LIMIT, RateLimit
from veilfl.errors import ConfigurationError, TransportError
from veilfl.logging_setup import uvicorn_log_options
from veilfl.protocol.assembly import (
    check_run_settings,
    precision_warning,
    privacy_advice,
    privacy_warning,
)
from veilfl.protocol.best_model import BestMetric
from veilfl.protocol.metrics import EvaluateFn, RoundMetrics
from veilfl.protocol.run_spec import RunSpec
from veilfl.tls import ServerCertificate, check_url_scheme, uvicorn_tls_options

if TYPE_CHECKING:
    import uvicorn

    from veilfl.ml.learner import Learner
    from veilfl.server.run_setup import PreparedRun
    from veilfl.server.service import CoordinatorService
    from veilfl.server.starting_gate import StartingGate

__all__ = ["run_coordinator"]

logger = logging.getLogger("veilfl.server")

DataT = TypeVar("DataT")


async def run_coordinator(
    spec: RunSpec,
    *,
    run_dir: Path,
    learner: Learner[DataT],
    enrollment: EnrollmentPolicy,
    eval_data: DataT | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    certificate: ServerCertificate | None = None,
    verify: ssl.SSLContext | bool = True,
    insecure: bool = False,
    rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
    max_update_bytes: int = 64 * 2**20,
    max_clock_skew_s: float = 120.0,
    linger_s: float = 3.0,
    metrics_sinks: Sequence[str] = (),
    best_metric: BestMetric | str = BestMetric.AUTO,
    min_clients_fixed: bool = False,
    clients_per_round_fixed: bool = False,
    before_create: Callable[[RunSpec], None] | None = None,
    log_level: str = "info",
) -> tuple[RoundMetrics, ...]:
    """Serve the run ``spec`` describes until its last round completes.

    The coordinator listens at once. A secure run's settings are first fitted to its
    aggregators' signed policies (the run id is the hash of the settings, so this
    happens before the run is created); the run is then created in ``run_dir`` (or
    resumed from it) and opens to clients once every aggregator consented to it.

    Args:
        spec: The run (``spec.secure`` names its aggregators; None: plaintext FedAvg).
        run_dir: The run folder (resumable: a restart on it continues the run).
        learner: Builds the initial model (and evaluates it, with ``eval_data``).
        enrollment: Who may join the run.
        eval_data: Data to evaluate each round's model on (None: no server-side
            evaluation).
        host: Address to listen on.
        port: Port to listen on.
        certificate: This server's TLS certificate; None serves plaintext HTTP, which
            needs ``insecure``.
        verify: How to verify the aggregators' certificates (an SSL context trusting
            the run's CA, see :func:`veilfl.tls.client_ssl_context`).
        insecure: Plaintext HTTP was chosen (trusted test networks only).
        rate_limit: Per-client request limit (None: unlimited).
        max_update_bytes: Largest update body accepted.
        max_clock_skew_s: Refuse requests signed further than this from this clock.
        linger_s: Keep serving this long after the last round (so clients learn the
            run is done).
        metrics_sinks: Metrics sinks beside the run folder's JSON and CSV (by name,
            e.g. ``tensorboard``).
        best_metric: The metric by which the best model is kept in
            ``checkpoints/best.safetensors`` (:class:`~veilfl.protocol.best_model.BestMetric`;
            ``auto``: federated accuracy where clients evaluate, else test accuracy).
        min_clients_fixed: ``spec.rounds.min_clients`` was chosen: refuse a run below an
            aggregator's minimum instead of raising it.
        clients_per_round_fixed: The same for ``spec.rounds.clients_per_round``.
        before_create: Called with the settings the run will follow (after fitting),
            before the run is created or resumed; it may raise to refuse them.
        log_level: The level uvicorn's own lines are shown at.

    Returns:
        Every completed round's metrics.

    Raises:
        ConfigurationError: (one line) for contradictory settings, a run folder that
            holds another run, or a run an aggregator refuses.
        TransportError: if the server could not start (say, the port is taken).
    """
    import uvicorn

    from veilfl.server.aggregator_check import fit_to_aggregators
    from veilfl.server.run_setup import prepare_run
    from veilfl.server.starting_gate import StartingGate

    check_run_settings(spec)  # contradictory DP settings: one line, before anything
    best = BestMetric.parse(best_metric) if isinstance(best_metric, str) else best_metric
    if certificate is None and not insecure:
        raise ConfigurationError(
            "The coordinator needs a TLS certificate, or insecure=True for plaintext HTTP "
            "on a trusted test network."
        )
    if spec.secure is not None:
        for endpoint in spec.secure.aggregators:
            check_url_scheme(endpoint.url, insecure=insecure)
    elif before_create is not None:
        before_create(spec)
    gate = StartingGate()  # listens at once; serves the run's app once the run exists
    server = uvicorn.Server(
        uvicorn.Config(
            gate,
            host=host,
            port=port,
            lifespan="on",  # the gate's own; the run's app is started below, once it exists
            timeout_keep_alive=60,  # many clients poll: keep their connections open
            backlog=4096,
            **uvicorn_log_options(log_level),
            **uvicorn_tls_options(certificate),  # type: ignore[arg-type]
        )
    )

    async def setup(settings: RunSpec) -> PreparedRun:
        if settings.secure is not None:
            settings = await fit_to_aggregators(
                settings,
                min_clients_given=min_clients_fixed,
                clients_per_round_given=clients_per_round_fixed,
                verify=verify,
            )
            if before_create is not None:
                before_create(settings)
        return await asyncio.to_thread(
            prepare_run,
            run_dir,
            settings,
            initial_weights=lambda seed: learner.initial_weights(seed=seed),
        )

    scheme = "https" if certificate is not None else "http"
    logger.info(
        "live dashboard at %s://%s:%d/dashboard; Prometheus metrics at /metrics",
        scheme,
        host,
        port,
    )
    serving = asyncio.create_task(_serve(server, host, port))
    setting_up = asyncio.create_task(setup(spec))
    try:
        await asyncio.wait({serving, setting_up}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        setting_up.cancel()
        server.should_exit = True
        await asyncio.shield(serving)
        raise
    if not setting_up.done() or setting_up.exception() is not None:
        server.should_exit = True  # stopped, or the run was refused: in one line
        setting_up.cancel()
        await serving
        if not setting_up.cancelled():
            setting_up.result()
        return ()
    prepared = setting_up.result()
    try:
        return await _serve_run(
            prepared,
            server=server,
            serving=serving,
            gate=gate,
            run_dir=run_dir,
            evaluate=None if eval_data is None else learner.evaluator(eval_data),
            enrollment=enrollment,
            verify=verify,
            rate_limit=rate_limit,
            max_update_bytes=max_update_bytes,
            max_clock_skew_s=max_clock_skew_s,
            linger_s=linger_s,
            metrics_sinks=metrics_sinks,
            best_metric=best,
        )
    finally:
        prepared.store.close()


async def _serve(server: uvicorn.Server, host: str, port: int) -> None:
    try:
        await server.serve()
    except SystemExit:  # uvicorn's way of saying it could not start
        raise TransportError(
            f"The coordinator could not serve on {host}:{port} (see the log); is the port taken?"
        ) from None


async def _serve_run(
    prepared: PreparedRun,
    *,
    server: uvicorn.Server,
    serving: asyncio.Task[None],
    gate: StartingGate,
    run_dir: Path,
    evaluate: EvaluateFn | None,
    enrollment: EnrollmentPolicy,
    verify: ssl.SSLContext | bool,
    rate_limit: RateLimit | None,
    max_update_bytes: int,
    max_clock_skew_s: float,
    linger_s: float,
    metrics_sinks: Sequence[str],
    best_metric: BestMetric,
) -> tuple[RoundMetrics, ...]:
    from veilfl.server.aggregator_link import HttpAggregatorLink
    from veilfl.server.app import create_app
    from veilfl.server.client_access import ClientAccess
    from veilfl.server.commands import ServerCommands
    from veilfl.server.round_reports import RoundReports
    from veilfl.server.run_setup import metrics_from_store
    from veilfl.server.service import CoordinatorService

    run_info = prepared.run_info
    spec = prepared.description.spec
    if prepared.resumed_from_round is not None:
        logger.info("resuming run %s after round %d", run_info.run_id, prepared.resumed_from_round)
    if prepared.coordinator.done:
        logger.info("run %s is already complete", run_info.run_id)
        server.should_exit = True
        await serving
        return tuple(metrics_from_store(prepared.store))
    model_size = prepared.coordinator.spec.total_size
    for warning in (
        privacy_warning(spec, model_size=model_size),
        precision_warning(
            None if spec.secure is None else spec.secure.config, model_size=model_size
        ),
    ):
        if warning is not None:
            logger.warning("%s", warning)
    # The cohort search re-derives z a few dozen times: off the serving loop.
    advice = await asyncio.to_thread(privacy_advice, spec, model_size=model_size)
    if advice is not None:
        (logger.warning if advice.over else logger.info)("%s", advice.summary())
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
            verify=verify,
        )
    )
    reports = RoundReports(
        run_dir,
        prepared.recorder,
        spec=prepared.coordinator.spec,
        evaluate=evaluate,
        history=metrics_from_store(prepared.store),
        title=f"veilfl run {run_info.run_id}",
        sinks=metrics_sinks,
        checkpoints=prepared.checkpoints,
        best_metric=best_metric,
    )
    service = CoordinatorService(
        prepared.coordinator,
        description=prepared.description,
        performer=ServerCommands(link, prepared.persist),
        on_round=reports,
        on_served=reports.note,
        max_update_bytes=max_update_bytes,
        opened=spec.secure is None,  # a secure run opens once its aggregators consent
    )
    access = ClientAccess.create(
        run_id=run_info.run_id,
        policy=enrollment,
        coordinator=prepared.identity,
        store=prepared.store,
        rate_limit=rate_limit,
        max_skew_s=max_clock_skew_s,
    )
    app = create_app(service, metrics=lambda: list(reports.history), access=access, settings=spec)
    try:
        async with app.router.lifespan_context(app):
            gate.app = app
            await _until_done(
                service, server=server, serving=serving, spec=spec, verify=verify, linger_s=linger_s
            )
    finally:
        if link is not None:
            await link.close()
        reports.close()
    return reports.history


async def _until_done(
    service: CoordinatorService,
    *,
    server: uvicorn.Server,
    serving: asyncio.Task[None],
    spec: RunSpec,
    verify: ssl.SSLContext | bool,
    linger_s: float,
) -> None:
    from veilfl.server.aggregator_check import open_when_aggregators_consent

    finished = asyncio.create_task(service.finished.wait())
    waiting = {serving, finished}
    try:
        if spec.secure is not None:
            opening = asyncio.create_task(open_when_aggregators_consent(service, verify=verify))
            done, _ = await asyncio.wait({*waiting, opening}, return_when=asyncio.FIRST_COMPLETED)
            if opening in done and opening.exception() is not None:
                server.should_exit = True  # an aggregator refused the run: in one line
                await serving
                opening.result()
            if not opening.done():
                opening.cancel()
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if finished in done:
            logger.info("all %d rounds complete; serving %.0f s more", spec.num_releases, linger_s)
            await asyncio.sleep(linger_s)
            server.should_exit = True
        await serving
    except asyncio.CancelledError:
        server.should_exit = True
        await asyncio.shield(serving)
        raise
    finally:
        finished.cancel()
