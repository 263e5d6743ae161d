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
* ``--noise-multiplier``: derived from ``--target-epsilon``; ``--dp-min-clients``: the
  minimum clients; DP-FTRL's K and b: what round-robin selection needs
  (:func:`dp_settings`);
* ``--eval-fraction`` (a party's data setting, not the run's): the data source's own
  default (:mod:`veilfl.cli.data_options`);
* ``--norm-bound``: the DP clipping norm, else
  :data:`~veilfl.cli.common.DEFAULT_NORM_BOUND` (:func:`~veilfl.cli.common.secure_norm_bound`).
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from veilfl.cli.learner_option import model_name_from_args
from veilfl.declared import build_config
from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_fedavg import DpConfig
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
    mechanism = given.get("dp.mechanism", "fedavg")
    given_k = given.get("dp.max_participations")
    given_b = given.get("dp.min_separation")
    if given.get("dp.placement", "off") == "off":
        if mechanism != "fedavg" or given_k is not None or given_b is not None:
            raise ConfigurationError(
                "--dp-mechanism, --dp-max-participations and --dp-min-separation need "
                "--dp central or distributed; with --dp off nothing is private."
            )
        return None
    from veilfl.privacy.accountant import noise_multiplier_for  # scipy: seconds to import

    accounting: Accounting = "pld" if given.get("dp.accounting") == "pld" else "rdp"
    target = given.get("dp.target_epsilon")
    delta = given.get("dp.delta", 1e-5)
    noise = given.get("dp.noise_multiplier")
    k, b = _participation_limits(given, sample_rate=sample_rate, rounds=rounds)
    log = logging.getLogger("veilfl")
    if mechanism == "ftrl" and noise is None and target is not None:
        from veilfl.privacy.dp_ftrl import dp_ftrl_noise_multiplier_for

        noise = dp_ftrl_noise_multiplier_for(
            target_epsilon=target,
            rounds=rounds,
            max_participations=k or 1,
            min_separation=b,
            delta=delta,
            accounting=accounting,
        )
        log.info(
            "block noise multiplier %.4f spends epsilon %.3f over %d DP-FTRL rounds "
            "(K %d, b %d, %s)",
            noise,
            target,
            rounds,
            k or 1,
            b,
            accounting.upper(),
        )
    if noise is None and target is not None:
        noise = noise_multiplier_for(
            target_epsilon=target,
            sample_rate=sample_rate,
            rounds=rounds,
            delta=delta,
            accounting=accounting,
        )
        log.info(
            "noise multiplier %.4f spends epsilon %.3f against the public over %d rounds "
            "(q %.4g, %s)",
            noise,
            target,
            rounds,
            sample_rate,
            accounting.upper(),
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
        log.warning("differential privacy requested with no noise: there is NO privacy guarantee")
        return None
    derived = {
        "dp.noise_multiplier": noise,
        "dp.accounting": accounting,
        "dp.min_clients": given.get("dp.min_clients") or min_clients,
        "dp.max_participations": k,
        "dp.min_separation": b,
    }
    return build_config(DpConfig, {**given, **derived}, "dp.")


def _participation_limits(
    given: Mapping[str, Any], *, sample_rate: float, rounds: int
) -> tuple[int | None, int]:
    """DP-FTRL's (K, b) from the flags, defaulting to what round-robin selection of
    ``sample_rate`` of the population needs; (flags as given) under DP-FedAvg, whose
    config refuses them."""
    given_k = given.get("dp.max_participations")
    given_b = given.get("dp.min_separation")
    if given.get("dp.mechanism", "fedavg") != "ftrl":
        return given_k, 1 if given_b is None else int(given_b)
    k = given_k if given_k is not None else max(1, math.ceil(rounds * sample_rate - 1e-9))
    b = given_b if given_b is not None else max(1, math.floor(1 / sample_rate + 1e-9))
    return int(k), int(b)
