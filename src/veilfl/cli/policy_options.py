"""``veilfl client``'s security policy: flags and a policy file (``--policy FILE``).

The policy file is TOML whose keys are the policy flags without the dashes; a flag
given on the command line overrides the file's key::

    aggregator-fingerprint = ["FP1", "FP2", "FP3"]   # aggregators 1..3, exactly
    min-threshold = 2
    min-cohort = 5
    require-dp = ["distributed"]
    min-noise-multiplier = 1.0
    max-clip-norm = 1.0
    fedbuff-weights = [0.5, 1.0]

Defaults: secure aggregation required (``--allow-plaintext`` to accept a plaintext
run) with pinned aggregators (``--aggregator-fingerprint``, or the loudly named
``--trust-coordinator-keys``) of which a quorum signed their consent to the run,
threshold at least 2, aggregators promising to sum at least 2 clients, no DP
floor, FedBuff weights in [0, 1]. See :class:`veilfl.protocol.client_policy.ClientPolicy`.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from veilfl.errors import ConfigurationError
from veilfl.protocol.client_policy import PLACEMENTS, POLICY_FLAGS, ClientPolicy

__all__ = ["add_policy_options", "policy_from_args"]

# Each policy field's key in a policy file (its flag without the dashes).
_KEYS = {name: flag.removeprefix("--") for name, flag in POLICY_FLAGS.items()}


def add_policy_options(parser: argparse.ArgumentParser) -> None:
    """The client's security-policy options (``--policy FILE`` and the flags)."""
    group = parser.add_argument_group(
        "security policy (what this client accepts from the coordinator)"
    )
    group.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML policy file: keys are these flags without dashes (flags override it)",
    )
    group.add_argument(
        "--aggregator-fingerprint",
        action="append",
        default=[],
        metavar="FINGERPRINT",
        help="expected key fingerprint of each aggregator, in index order (repeat); the run "
        "must have exactly these aggregators",
    )
    group.add_argument(
        "--trust-coordinator-keys",
        action="store_true",
        default=None,
        help="DANGEROUS: take the aggregator keys the coordinator publishes without pins "
        "(a coordinator that publishes keys it holds opens every share); experiments only",
    )
    group.add_argument(
        "--max-epsilon",
        type=float,
        default=None,
        metavar="EPS",
        help="refuse a run whose epsilon against the coordinator, as this client computes "
        "it from the signed description (plus this coordinator's earlier runs), is larger",
    )
    group.add_argument(
        "--allow-plaintext",
        action="store_true",
        default=None,
        help="accept a run without secure aggregation (the coordinator then sees updates)",
    )
    group.add_argument(
        "--min-threshold",
        type=int,
        default=None,
        metavar="T",
        help="refuse a run whose threshold t is smaller (default 2)",
    )
    group.add_argument(
        "--min-cohort",
        type=int,
        default=None,
        metavar="N",
        help="refuse aggregators whose signed --min-participants is smaller (default 2)",
    )
    group.add_argument(
        "--require-dp",
        action="append",
        default=[],
        choices=PLACEMENTS,
        metavar="PLACEMENT",
        help=f"require differential privacy with this noise placement ({', '.join(PLACEMENTS)}; "
        "repeat to accept several)",
    )
    group.add_argument(
        "--min-noise-multiplier",
        type=float,
        default=None,
        metavar="Z",
        help="require DP with at least this noise multiplier (per task, over the cohort the "
        "aggregators promise)",
    )
    group.add_argument(
        "--max-clip-norm",
        type=float,
        default=None,
        metavar="C",
        help="require DP with at most this clipping norm",
    )
    group.add_argument(
        "--fedbuff-weights",
        default=None,
        metavar="LOW,HIGH",
        help="the staleness weights accepted on a buffered run's ticket (default 0,1)",
    )


def policy_from_args(args: argparse.Namespace) -> ClientPolicy:
    """The policy the policy file and the flags describe (flags win).

    Raises:
        ConfigurationError: if the file cannot be read, names an unknown key, or the
            settings contradict each other.
    """
    values: dict[str, Any] = {}
    source = "the command line"
    if args.policy is not None:
        values.update(_read(args.policy))
        source = f"--policy {args.policy} and the command line"
    given: dict[str, Any] = {
        "aggregator_fingerprints": args.aggregator_fingerprint or None,
        "allow_plaintext": args.allow_plaintext,
        "trust_coordinator_keys": args.trust_coordinator_keys,
        "max_epsilon": args.max_epsilon,
        "min_threshold": args.min_threshold,
        "min_cohort": args.min_cohort,
        "dp_placements": args.require_dp or None,
        "min_noise_multiplier": args.min_noise_multiplier,
        "max_clip_norm": args.max_clip_norm,
        "staleness_weights": args.fedbuff_weights,
    }
    for name, value in given.items():
        if value is not None:
            values[_KEYS[name]] = value
    return ClientPolicy.from_mapping(values, source=source)


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"--policy {path} cannot be read: {exc.strerror or exc}."
        ) from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"--policy {path} is not UTF-8 text.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML ({exc}).") from None
    nested = [key for key, value in data.items() if isinstance(value, dict)]
    if nested:
        raise ConfigurationError(
            f"{path}: unknown table [{nested[0]}]; policy keys go at the top of the file."
        )
    return {str(key).replace("_", "-"): value for key, value in data.items()}
