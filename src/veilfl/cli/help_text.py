"""``--help`` for every command: each option's default, and one example command."""

from __future__ import annotations

import argparse

__all__ = ["EXAMPLES", "HelpFormatter", "decorate"]

EXAMPLES: dict[str, str] = {
    "demo": "veilfl demo --clients 4 --rounds 5",
    "server": (
        "veilfl server --run-dir runs/r1 --tls-cert tls/coordinator.pem "
        "--tls-key tls/coordinator.key --enrollment-tokens tokens.txt --rounds 10"
    ),
    "client": (
        "VEILFL_ENROLLMENT_TOKEN=<a line of tokens.txt> veilfl client "
        "--server https://127.0.0.1:8080 --ca-cert tls/ca.pem --client-index 0 "
        "--num-clients 4 --identity client-0.key"
    ),
    "aggregator": (
        "veilfl aggregator --index 1 --key keys/aggregator-1.key --port 8091 "
        "--tls-cert tls/aggregator-1.pem --tls-key tls/aggregator-1.key --ca-cert tls/ca.pem "
        "--coordinator https://127.0.0.1:8080 --spool spool/aggregator-1 "
        "--peer-fingerprint FP1 --peer-fingerprint FP2 --peer-fingerprint FP3 "
        "--peer-fingerprint FP4"
    ),
    "keys": "veilfl keys --out keys --count 3",
    "certs": "veilfl certs --out tls --name coordinator --name aggregator-1",
    "tokens": "veilfl tokens --out tokens.txt --count 10",
    "identity": "veilfl identity --out client-0.key",
    "simulate": "veilfl simulate --num-clients 100 --fraction 0.1 --rounds 20 --secure",
    "new": "veilfl new my_project && cd my_project && veilfl simulate --config veilfl.toml",
    "export": "veilfl export --run-dir runs/r1 --out model.safetensors",
}
"""One example command line per command, shown at the end of its ``--help``."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds ``(default: X)`` to each option with a meaningful default that its help
    does not mention already; keeps the example's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default == []
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def decorate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Give every command's parser the formatter and its example."""
    for name, parser in subparsers.choices.items():
        parser.formatter_class = HelpFormatter
        example = EXAMPLES.get(name)
        if example and not parser.epilog:
            parser.epilog = f"example:\n  {example}"
