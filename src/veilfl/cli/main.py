"""The ``veilfl`` command line: demo, server, client, aggregator, keys, certs, identity,
tokens, simulate, new, export."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from veilfl import __version__
from veilfl.cli import (
    aggregator_cmd,
    certs_cmd,
    client_cmd,
    demo_cmd,
    enrollment_cmd,
    export_cmd,
    keys_cmd,
    new_cmd,
    server_cmd,
    simulate_cmd,
)
from veilfl.cli.common import add_log_option, configure_logging
from veilfl.cli.config_file import CONFIG_COMMANDS, add_config_option, expand_config
from veilfl.cli.help_text import decorate
from veilfl.cli.preflight import check_arguments
from veilfl.cli.stopping import StopSignals, forget_handled_interrupt, stop_message
from veilfl.cli.usage_errors import OneLineParser
from veilfl.errors import VeilflError

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser: argparse.ArgumentParser = OneLineParser(
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
        new_cmd,
        export_cmd,
    ):
        module.add_parser(subparsers)
    enrollment_cmd.add_parsers(subparsers)
    for name in CONFIG_COMMANDS:
        add_config_option(subparsers.choices[name])
    for command in subparsers.choices.values():  # every command logs alike
        if "--log-level" not in command._option_string_actions:
            add_log_option(command)
    decorate(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    A mistake in the command line prints one line (``veilfl server: unknown option
    --rnds; did you mean --rounds?``) and exits with 2 (``SystemExit``); a
    ``veilfl.errors.VeilflError`` prints one line (``veilfl: error: ...``) and exits
    with 1; SIGINT or SIGTERM prints one line saying what was saved and how to
    resume, and exits with 128 + the signal's number.
    """
    parser = build_parser()
    args: argparse.Namespace | None = None
    signals = StopSignals()
    try:
        with signals.installed():
            expanded = expand_config(parser, sys.argv[1:] if argv is None else argv)
            args = parser.parse_args(expanded)
            check_arguments(args)
            configure_logging(args.log_level, fmt=args.log_format)
            code = int(args.func(args))
        if signals.stopped:  # a server that shut down cleanly on the signal
            raise KeyboardInterrupt
        return code
    except VeilflError as exc:
        print(f"veilfl: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (KeyboardInterrupt, asyncio.CancelledError):
        if not signals.stopped and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
            raise
        if args is None:
            print(f"veilfl: stopped by {signals.received}.", file=sys.stderr)
        else:
            print(stop_message(args, signals.received), file=sys.stderr)
        forget_handled_interrupt()
        return signals.exit_code


if __name__ == "__main__":
    sys.exit(main())
