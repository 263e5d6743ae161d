"""``veilfl client``: one federated client training on its own data (``--data``), or on
its part of a shared data set (``--client-index``; MNIST by default)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from veilfl.cli.common import (
    add_data_options,
    add_device_option,
    add_log_option,
    configure_logging,
)
from veilfl.cli.data_options import add_data_source_options, client_data
from veilfl.cli.learner_option import add_learner_option, learner_for, model_name_from_args
from veilfl.cli.policy_options import add_policy_options, policy_from_args
from veilfl.cli.progress import RoundProgress, train_progress
from veilfl.cli.security_options import (
    TOKEN_ENV,
    add_tls_options,
    enrollment_token_from,
    transport_from_args,
)
from veilfl.errors import ConfigurationError

if TYPE_CHECKING:
    from torch import nn

    from veilfl.ml.datasets import ArrayDataset
    from veilfl.ml.learner import Learner, TrainOutcome
    from veilfl.ml.training import TrainProgress
    from veilfl.protocol.messages import LocalTrainingPlan

__all__ = ["CONNECT_TIMEOUT_S", "add_parser", "run"]

CONNECT_TIMEOUT_S = 60.0
"""How long ``veilfl client`` waits for its coordinator by default (``--connect-timeout``)."""

logger = logging.getLogger("veilfl.client")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``veilfl client``."""
    parser = subparsers.add_parser("client", help="run one federated client (HTTP)")
    parser.add_argument("--server", required=True, help="coordinator URL")
    parser.add_argument(
        "--client-index",
        type=int,
        default=None,
        help="train on this part of a shared data set (MNIST unless --data names one); "
        "without it, --data is this client's own data",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=CONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help="wait this long for the coordinator to answer at start (it may start later "
        "than the client), asking again with backoff",
    )
    parser.add_argument("--model", default="simple-cnn", help="model (must match the run)")
    add_learner_option(parser)
    parser.add_argument("--seed", type=int, default=None, help="seed of local shuffling")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_device_option(parser)
    parser.add_argument(
        "--slowdown",
        type=float,
        default=0.0,
        help="extra seconds per local training (to act as a slow device in tests and demos)",
    )
    parser.add_argument(
        "--dp-sgd-noise",
        type=float,
        default=None,
        help="train with sample-level DP-SGD (Opacus) at this noise multiplier",
    )
    parser.add_argument(
        "--dp-sgd-clip", type=float, default=1.0, help="DP-SGD per-example gradient clip"
    )
    parser.add_argument("--dp-sgd-delta", type=float, default=1e-5, help="DP-SGD delta")
    parser.add_argument(
        "--identity",
        type=Path,
        default=None,
        help="this client's Ed25519 key file, made if missing (default: a new key each start)",
    )
    parser.add_argument(
        "--enrollment-token",
        default=None,
        help=f"one-time enrollment token (default: ${TOKEN_ENV}, which keeps it out of ps)",
    )
    parser.add_argument(
        "--enrollment-token-file",
        type=Path,
        default=None,
        help="read the one-time enrollment token from this file (one line)",
    )
    add_policy_options(parser)
    add_tls_options(parser, serves=False)
    add_data_options(parser)
    add_data_source_options(parser, skip=("eval_data",))
    add_log_option(parser)
    parser.set_defaults(func=run)


def slowed_down(learner: Learner[ArrayDataset], seconds: float) -> Learner[ArrayDataset]:
    """The same learner (on the same device), taking ``seconds`` longer per local
    training."""
    import dataclasses

    def train(model: nn.Module, data: ArrayDataset, plan: LocalTrainingPlan) -> TrainOutcome:
        outcome = learner.train_fn(model, data, plan)
        time.sleep(seconds)
        return outcome

    return dataclasses.replace(learner, train_fn=train, local_sgd=None)


def run(args: argparse.Namespace) -> int:
    """Join the run and train until it is done."""
    import torch

    from veilfl.auth.identity import Identity
    from veilfl.client.http_client import run_client
    from veilfl.client.participation_record import ParticipationRecord
    from veilfl.keyfiles import load_or_create_identity
    from veilfl.ml.dp_sgd import DpSgdConfig, DpSgdTrainer, dp_sgd_learner

    index = args.client_index
    configure_logging(
        args.log_level, fmt=args.log_format, role="client" if index is None else f"client {index}"
    )
    policy = policy_from_args(args)
    transport = transport_from_args(args, serves=False)
    transport.check_url(args.server)
    identity = (
        load_or_create_identity(args.identity) if args.identity is not None else Identity.generate()
    )
    torch.set_num_threads(args.threads)

    bar = RoundProgress(unit="batches", plain=logger.info)
    show_batches = train_progress(bar)

    def show(progress: TrainProgress) -> None:
        show_batches(progress)
        epoch_done = progress.batch == progress.batches_per_epoch
        logger.log(
            logging.INFO if epoch_done else logging.DEBUG,
            "epoch %d/%d batch %d/%d loss %.4f",
            progress.epoch,
            progress.epochs,
            progress.batch,
            progress.batches_per_epoch,
            progress.running_loss,
        )

    model_name = model_name_from_args(args)
    trainer: DpSgdTrainer | None = None
    if args.dp_sgd_noise is not None:
        if args.learner:
            raise ConfigurationError(
                "--dp-sgd-noise trains the built-in models (--model) only, not --learner; "
                "use Opacus inside your learner's train_fn instead."
            )
        learner, trainer = dp_sgd_learner(
            args.model,
            DpSgdConfig(
                noise_multiplier=args.dp_sgd_noise,
                max_grad_norm=args.dp_sgd_clip,
                delta=args.dp_sgd_delta,
            ),
            seed=args.seed,
            device=args.device,
        )
        logger.info(
            "training with DP-SGD (noise %.3f, clip %.3f)", args.dp_sgd_noise, args.dp_sgd_clip
        )
    else:
        learner = learner_for(model_name, seed=args.seed, progress=show, device=args.device)
    if args.slowdown > 0:
        learner = slowed_down(learner, args.slowdown)
    data = client_data(args, learner, model_name=model_name)
    local = data.local
    held = 0 if local.evaluation is None else len(local.evaluation)
    logger.info(
        "loaded %s: %d examples to train on, %d held out to evaluate on; training on %s",
        data.description,
        len(local.train),
        held,
        learner.device,
    )
    name = f"client-{index}" if index is not None else Path(str(args.data)).stem
    try:
        summary = asyncio.run(
            run_client(
                args.server,
                learner,
                local,  # trains on local.train, evaluates the global model on local.evaluation
                name=name,
                model_name=model_name,
                identity=identity,
                record=ParticipationRecord.beside(args.identity, data_set=data.digest),
                enrollment_token=enrollment_token_from(
                    args.enrollment_token, args.enrollment_token_file
                ),
                verify=transport.verify,
                policy=policy,
                connect_timeout_s=args.connect_timeout,
            )
        )
    finally:
        bar.close()  # the live bar, if any, leaves the terminal clean
    logger.info("done: trained %d rounds", summary.rounds_trained)
    if trainer is not None:
        logger.info(
            "sample-level privacy spent by this client: epsilon %.3f at delta %g",
            trainer.epsilon,
            args.dp_sgd_delta,
        )
    return 0
