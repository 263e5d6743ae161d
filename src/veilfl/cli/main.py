"""The ``veilfl`` command line: demo, server, client, aggregator, keys, certs, identity,
tokens, simulate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from veilfl import __version__
from veilfl.cli import (
    aggregator_cmd,
    certs_cmd,
    client_cmd,
    demo_cmd,
    enrollment_cmd,
    keys_cmd,
    server_cmd,
    simulate_cmd,
)
from veilfl.errors import VeilflError

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="veilfl", description="Secure, asynchronous federated learning."
    )
    parser.add_argument("--version", action="version", version=f"veilfl {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in (
        demo_cmd,
        server_cmd,
        client_cmd,
        aggregator_cmd,
        keys_cmd,
        certs_cmd,
        simulate_cmd,
    ):
        module.add_parser(subparsers)
    enrollment_cmd.add_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except VeilflError as exc:
        print(f"veilfl: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
