"""The run settings whose command-line default is derived from other settings, in one place.

A setting declared with ``cli_default=None`` (:mod:`veilfl.declared`) is worked out
here when its flag is not given:

* ``--min-clients``: 1 for a plaintext run, an aggregator's default minimum under
  secure aggregation (:func:`provisional_min_clients`);
* ``--clients-per-round``: the minimum clients, when neither it nor ``--fraction`` is
  given;
* ``--server-lr``: 1 for FedAvg, 0.01 for an adaptive server optimiser;
* ``--buffer-size``: 1 under FedAsync; a buffered run's versions are ``--rounds``;
* ``--model``: the ``--learner`` spec, when one is given;
* ``--noise-multiplier``: derived from ``--target-epsilon`` by the run's mechanism;
  ``--dp-min-clients``: the minimum clients; K and b of a mechanism that limits
  participation (DP-FTRL): what round-robin selection needs (:func:`dp_settings`);
* ``--eval-fraction`` (a party's data setting, not the run's): the data source's own
  default (:mod:`veilfl.cli.data_options`);
* ``--norm-bound``: the DP clipping norm, else
  :data:`~veilfl.cli.common.DEFAULT_NORM_BOUND` (:func:`~veilfl.cli.common.secure_norm_bound`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from veilfl.cli.learner_option import model_name_from_args
from veilfl.declared import build_config
from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_config import DEFAULT_MECHANISM, DpConfig
from veilfl.privacy.mechanisms import mechanism_named
from veilfl.protocol.aggregator_minimums import DEFAULT_MIN_PARTICIPANTS

if TYPE_CHECKING:
    from veilfl.privacy.accountant import Accounting

__all__ = ["derived_run_values", "dp_settings", "provisional_min_clients"]


def provisional_min_clients(args: argparse.Namespace) -> int:
    """``--min-clients``, or when unset: 1 for a plaintext run; under secure aggregation
    an aggregator's default minimum (2, at most ``--clients-per-round``), until the
    aggregators' signed minimums are known (:mod:`veilfl.server.aggregator_check`)."""
    if args.min_clients is not None:
        return int(args.min_clients)
    if not getattr(args, "aggregator", None):
        return 1
    per_round = args.clients_per_round
    if per_round is None:
        return DEFAULT_MIN_PARTICIPANTS
    return min(int(per_round), DEFAULT_MIN_PARTICIPANTS)


def derived_run_values(args: argparse.Namespace, given: Mapping[str, Any]) -> dict[str, Any]:
    """The values, by setting path, of the settings derived from others (DP aside).

    Args:
        args: The parsed options.
        given: The declared settings' parsed values, by path.
    """
    min_clients = provisional_min_clients(args)
    per_round = given.get("rounds.clients_per_round")
    if per_round is None and given.get("rounds.fraction") is None:
        per_round = min_clients
    optimizer = given.get("server_optimizer.name", "fedavg")
    server_lr = given.get("server_learning_rate")
    mode = given.get("buffer.mode", "sync")
    return {
        "model_name": model_name_from_args(args),
        "rounds.min_clients": min_clients,
        "rounds.clients_per_round": per_round,
        "server_learning_rate": (
            server_lr if server_lr is not None else 1.0 if optimizer == "fedavg" else 0.01
        ),
        "buffer.buffer_size": 1 if mode == "fedasync" else given.get("buffer.buffer_size"),
        "buffer.max_versions": given.get("rounds.num_rounds"),
    }


def dp_settings(
    args: argparse.Namespace,
    given: Mapping[str, Any],
    *,
    sample_rate: float,
    rounds: int,
    min_clients: int,
) -> DpConfig | None:
    """The DP settings the options describe (None when DP is off).

    Args:
        args: The parsed options (for ``--allow-no-privacy``).
        given: The declared settings' parsed values, by path.
        sample_rate: The q the ledger will charge per release (1 where the sample may
            be known), from which ``--target-epsilon`` derives z.
        rounds: The releases the run plans.
        min_clients: The default for ``--dp-min-clients``.

    Raises:
        ConfigurationError: for a setting that gives no guarantee, unless allowed.
    """
    name = given.get("dp.mechanism", DEFAULT_MECHANISM)
    given_k = given.get("dp.max_participations")
    given_b = given.get("dp.min_separation")
    if given.get("dp.placement", "off") == "off":
        if name != DEFAULT_MECHANISM or given_k is not None or given_b is not None:
            raise ConfigurationError(
                "--dp-mechanism, --dp-max-participations and --dp-min-separation need "
                "--dp central or distributed; with --dp off nothing is private."
            )
        return None
    mechanism = mechanism_named(name)
    accounting: Accounting = "pld" if given.get("dp.accounting") == "pld" else "rdp"
    target = given.get("dp.target_epsilon")
    noise = given.get("dp.noise_multiplier")
    k, b = mechanism.participation_defaults(
        max_participations=given_k, min_separation=given_b, rounds=rounds, sample_rate=sample_rate
    )
    values = {
        **given,
        "dp.accounting": accounting,
        "dp.min_clients": given.get("dp.min_clients") or min_clients,
        "dp.max_participations": k,
        "dp.min_separation": b,
    }
    if mechanism.options is not None:  # its own settings, declared on its options class
        values["dp.options"] = build_config(mechanism.options, given, "dp.options.")
    if noise is None and target is not None:
        # The mechanism's own accounting, on the settings with a placeholder z.
        provisional = build_config(DpConfig, {**values, "dp.noise_multiplier": 1.0}, "dp.")
        noise = mechanism.noise_multiplier_for(
            provisional, target_epsilon=target, rounds=rounds, sample_rate=sample_rate
        )
        logging.getLogger("veilfl").info(
            "%s",
            mechanism.derivation_note(
                replace(provisional, noise_multiplier=noise),
                target_epsilon=target,
                rounds=rounds,
                sample_rate=sample_rate,
            ),
        )
    if noise is None:
        raise ConfigurationError(
            "--dp needs --noise-multiplier or --target-epsilon (to derive it)."
        )
    if noise <= 0:
        if not getattr(args, "allow_no_privacy", False):
            raise ConfigurationError(
                "A zero noise multiplier gives no privacy guarantee; refusing. Pass "
                "--allow-no-privacy to run it anyway, or --dp off."
            )
        logging.getLogger("veilfl").warning(
            "differential privacy requested with no noise: there is NO privacy guarantee"
        )
        return None
    return build_config(DpConfig, {**values, "dp.noise_multiplier": noise}, "dp.")
