"""``veilfl server``: the coordinator, serving one run over HTTP."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from veilfl.cli.best_model import add_best_metric_option
from veilfl.cli.common import (
    add_device_option,
    add_log_option,
    configure_logging,
    secure_norm_bound,
)
from veilfl.cli.data_options import add_data_source_options, server_evaluation_data
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
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.assembly import check_run_settings
from veilfl.protocol.messages import PublishedAggregator
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.secagg.config import SecureAggregationConfig

__all__ = ["add_parser", "run"]


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
        "--test-examples",
        type=int,
        default=None,
        help="evaluate on the first this many examples (0: no server-side evaluation)",
    )
    add_data_source_options(parser, skip=("data", "eval_fraction"))
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
    add_best_metric_option(parser)
    add_log_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve the run until its last round completes: :func:`veilfl.server.api.run_coordinator`
    with the run the options describe."""
    from veilfl.server.api import run_coordinator

    configure_logging(args.log_level, fmt=args.log_format)
    settings = settings_from_args(args)
    check_run_settings(settings)  # contradictory DP settings: one line, before anything
    transport = transport_from_args(args, serves=True)
    policy = enrollment_from_args(args)
    learner = learner_for(settings.model_name, seed=settings.seed, device=args.device)
    asyncio.run(
        run_coordinator(
            settings,
            run_dir=args.run_dir,
            learner=learner,
            enrollment=policy,
            eval_data=server_evaluation_data(args, learner, model_name=settings.model_name),
            host=args.host,
            port=args.port,
            certificate=transport.certificate,
            verify=transport.verify,
            insecure=transport.insecure,
            rate_limit=rate_limit_from_args(args),
            max_update_bytes=int(args.max_update_mb * 2**20),
            max_clock_skew_s=args.max_clock_skew,
            linger_s=args.linger,
            metrics_sinks=args.metrics_sink,
            best_metric=args.best_metric,
            min_clients_fixed=args.min_clients is not None,
            clients_per_round_fixed=args.clients_per_round is not None,
            before_create=lambda fitted: check_resumable(args.run_dir, fitted.unsealed().to_json()),
            log_level=args.log_level,
        )
    )
    return 0
