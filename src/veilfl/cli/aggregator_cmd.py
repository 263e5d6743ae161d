"""``veilfl aggregator``: one secure-aggregation server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from veilfl.cli.common import add_log_option, configure_logging
from veilfl.cli.security_options import (
    add_rate_limit_options,
    add_tls_options,
    rate_limit_from_args,
    transport_from_args,
)
from veilfl.protocol.aggregator_minimums import DEFAULT_MIN_PARTICIPANTS

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``veilfl aggregator``."""
    parser = subparsers.add_parser("aggregator", help="run one secure-aggregation server")
    parser.add_argument("--index", type=int, required=True, help="share index, 1..m")
    parser.add_argument("--key", type=Path, required=True, help="private key file (0600)")
    parser.add_argument("--coordinator", required=True, help="coordinator URL (to learn the run)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on")
    parser.add_argument(
        "--spool",
        type=Path,
        default=None,
        help="folder for the open round's shares; restarting on it takes the round back",
    )
    parser.add_argument(
        "--max-share-mb", type=float, default=64.0, help="largest share accepted (MiB)"
    )
    parser.add_argument(
        "--min-participants",
        type=int,
        default=DEFAULT_MIN_PARTICIPANTS,
        help="never answer with a sum over fewer clients than this (served signed at "
        "/v1/policy: the coordinator refuses smaller rounds, clients check it)",
    )
    parser.add_argument(
        "--peer-fingerprint",
        action="append",
        default=[],
        metavar="FINGERPRINT",
        help="fingerprint of each aggregator of the run, this one included, in index order "
        "(repeat; `veilfl keys` prints them; required): a run with other aggregators is "
        "refused, so a coordinator cannot invent the peers that certify a participant list",
    )
    parser.add_argument(
        "--trust-coordinator-peer-keys",
        action="store_true",
        help="UNSAFE: without --peer-fingerprint, take the other aggregators' keys from the "
        "coordinator unchecked; it can then invent them, forge their commitments and learn "
        "single clients' updates",
    )
    parser.add_argument(
        "--allow-split-certificates",
        action="store_true",
        help="UNSAFE: serve a run whose --quorum lets two certificates of a round share "
        "fewer than t aggregators, so the coordinator and t - 1 colluding aggregators could "
        "learn one client's update",
    )
    parser.add_argument(
        "--min-noise-multiplier",
        type=float,
        default=None,
        metavar="Z",
        help="serve only runs with distributed DP noise of at least this multiplier "
        "(the aggregators deal it; pins it against the coordinator's run description)",
    )
    parser.add_argument(
        "--max-epsilon",
        type=float,
        default=None,
        metavar="EPS",
        help="consent only to runs whose epsilon against the coordinator, computed from "
        "the run's description as clients compute it, is at most this",
    )
    parser.add_argument(
        "--stay",
        action="store_true",
        help="keep serving after the coordinator reports the run done, and follow it into "
        "its next run (default: exit at the end of the run)",
    )
    add_tls_options(parser, serves=True)
    add_rate_limit_options(parser)
    add_log_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until the coordinator reports the run done (or, with ``--stay``, until
    stopped): :func:`veilfl.aggregator.api.run_aggregator` with the options' values."""
    from veilfl.aggregator.api import run_aggregator

    configure_logging(args.log_level, fmt=args.log_format, role=f"aggregator {args.index}")
    transport = transport_from_args(args, serves=True)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: main() reports a signal
        asyncio.run(
            run_aggregator(
                index=args.index,
                key=args.key,
                coordinator_url=args.coordinator,
                peer_fingerprints=args.peer_fingerprint or None,
                host=args.host,
                port=args.port,
                certificate=transport.certificate,
                verify=transport.verify,
                insecure=transport.insecure,
                spool=args.spool,
                min_participants=args.min_participants,
                max_share_bytes=int(args.max_share_mb * 2**20),
                trust_coordinator_peer_keys=args.trust_coordinator_peer_keys,
                min_noise_multiplier=args.min_noise_multiplier,
                max_epsilon=args.max_epsilon,
                allow_split_certificates=args.allow_split_certificates,
                rate_limit=rate_limit_from_args(args),
                stay=args.stay,
                log_level=args.log_level,
            )
        )
    return 0
