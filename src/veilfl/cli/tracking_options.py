"""``--metrics-sink NAME``: where each round's metrics go beside the run folder's files
(declared once, for ``veilfl server`` and ``veilfl simulate``; ``metrics-sink = [...]``
in veilfl.toml)."""

from __future__ import annotations

import argparse

from veilfl.tracking import ALWAYS_ON, sink_names

__all__ = ["add_metrics_sink_option"]


def add_metrics_sink_option(parser: argparse.ArgumentParser) -> None:
    """``--metrics-sink NAME``, repeatable (checked by the command-line preflight)."""
    others = [name for name in sink_names() if name != ALWAYS_ON]
    parser.add_argument(
        "--metrics-sink",
        action="append",
        default=[],
        metavar="NAME",
        help=f"also send each round's metrics to {' or '.join(others)} (repeatable; "
        f"metrics.json, .csv and .png are always written; "
        f"pip install '.[tensorboard]' or '.[mlflow]' in the checkout)",
    )
