"""Refuse DP settings that contradict each other.

A release needs at least ``min_contributions`` contributions (``--dp-min-clients``)
and is withheld otherwise. (Distributed noise used to be added by the clients, each
1/``min_contributions`` of the variance; it is now dealt by the aggregators into
every secure sum, :mod:`veilfl.secagg.dealt_noise`, whatever the number of
contributions, so a short release no longer carries less noise, but it is still
withheld.) Three settings bound how many contributions a release can have, and under
any placement each must be at least ``min_contributions``, or rounds would be
withheld by construction:

* ``--min-clients``: a synchronous round closes with that many reports;
* ``--buffer-size``: a FedBuff release sums exactly that many updates;
* ``--clients-per-round`` (or ``--fraction`` of the population): no round can have
  more reports than clients sampled.

Dropouts can still leave a round with fewer contributions than sampled. The rule is
that such a release is **withheld** (the coordinator never closes a round, and the
aggregators never commit to a participant list, below ``min_contributions``; the round
is run again); noise is never made up after the fact. :func:`check_dp_settings`
refuses, before the run starts, settings under which every round, or some round by
construction, would be withheld.
"""

from __future__ import annotations

from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_config import DpConfig

__all__ = ["FLAGS", "check_dp_settings", "check_ftrl_settings", "effective_noise_multiplier"]

FLAGS = {
    "min_contributions": "--dp-min-clients",
    "min_clients": "--min-clients",
    "clients_per_round": "--clients-per-round",
    "fraction": "--fraction",
    "population": "--num-clients",
    "buffer_size": "--buffer-size",
    "noise_multiplier": "--noise-multiplier",
    "adaptive": "--adaptive-clipping",
    "max_participations": "--dp-max-participations",
    "min_separation": "--dp-min-separation",
    "rounds": "--rounds",
}
"""The command-line flag that sets each setting, as messages name them."""


def effective_noise_multiplier(config: DpConfig, *, contributions: int) -> float:
    """The noise multiplier a sum over ``contributions`` clients actually carries: z for
    every placement (distributed noise is dealt by the aggregators, not the clients, so
    it does not depend on the count). Kept so that callers can say so."""
    del contributions
    return config.noise_multiplier


def _too_few(config: DpConfig, setting: str, value: int, consequence: str) -> ConfigurationError:
    return ConfigurationError(
        f"{FLAGS['min_contributions']} {config.min_contributions} exceeds {FLAGS[setting]} "
        f"{value}: {consequence}, and a release over fewer than {config.min_contributions} "
        f"is withheld; lower {FLAGS['min_contributions']} to {value} or raise "
        f"{FLAGS[setting]} to {config.min_contributions}."
    )


def check_dp_settings(
    *,
    dp: DpConfig,
    min_clients: int,
    clients_per_round: int | None = None,
    fraction: float | None = None,
    population: int | None = None,
    buffer_size: int | None = None,
    secure_aggregation: bool,
) -> None:
    """Refuse DP settings that contradict the run's other settings.

    Args:
        dp: The DP settings.
        min_clients: Reports a synchronous round needs to close.
        clients_per_round: Clients sampled per round, if a count.
        fraction: Fraction of the population sampled per round, if a fraction.
        population: Clients that can be sampled, when known before the run.
        buffer_size: FedBuff's K, for buffered asynchronous runs (None for
            synchronous rounds).
        secure_aggregation: Whether updates are summed under secure aggregation.

    Raises:
        ConfigurationError: in one line naming the flags and both values, for
            distributed noise without secure aggregation, ``--dp-min-clients`` above
            the minimum reports, the buffer size or the clients sampled per round,
            or adaptive clipping whose count noise leaves no budget for the update.
    """
    if dp.placement == "distributed" and not secure_aggregation:
        raise ConfigurationError(
            "--dp distributed needs secure aggregation (--secure, or --aggregator for a "
            "server): its noise is dealt by the aggregators into every secure sum, and "
            "without them nothing would add it."
        )
    if buffer_size is not None:
        if buffer_size < dp.min_contributions:
            raise _too_few(dp, "buffer_size", buffer_size, "every release sums that many")
    elif min_clients < dp.min_contributions:
        raise _too_few(dp, "min_clients", min_clients, "a round may close with that many")
    if clients_per_round is not None and clients_per_round < dp.min_contributions:
        raise _too_few(
            dp, "clients_per_round", clients_per_round, "no round can sum more than that"
        )
    if fraction is not None and population is not None:
        expected = fraction * population
        if expected < dp.min_contributions:
            raise ConfigurationError(
                f"{FLAGS['min_contributions']} {dp.min_contributions} exceeds the "
                f"{expected:g} clients expected per round ({FLAGS['fraction']} {fraction:g} "
                f"of {FLAGS['population']} {population}): most rounds would be withheld; "
                f"lower {FLAGS['min_contributions']} or raise {FLAGS['fraction']}."
            )
    if dp.adaptive is not None:
        expected_clients = _expected_clients(clients_per_round, fraction, population)
        if expected_clients is not None:
            sigma_b = dp.count_noise(expected_clients)
            if dp.noise_multiplier >= 2 * sigma_b:
                raise ConfigurationError(
                    f"{FLAGS['noise_multiplier']} {dp.noise_multiplier:g} is at least twice the "
                    f"count noise {sigma_b:g} that {FLAGS['adaptive']} uses at "
                    f"{expected_clients:g} clients per round: nothing is left for the update "
                    f"noise; lower {FLAGS['noise_multiplier']} below {2 * sigma_b:g} or sample "
                    "more clients per round."
                )


def _expected_clients(
    clients_per_round: int | None, fraction: float | None, population: int | None
) -> float | None:
    if clients_per_round is not None:
        return float(clients_per_round)
    if fraction is not None and population is not None:
        return fraction * population
    return None


def check_ftrl_settings(
    *,
    dp: DpConfig,
    rounds: int,
    expected_clients: int,
    population: int,
    buffered: bool,
    server_optimizer: str | None,
) -> None:
    """Refuse DP-FTRL settings under which the selection cannot fill the rounds or
    the model would not follow the noised prefix sums (DP-FTRL's
    :meth:`~veilfl.privacy.mechanisms.base.PrivacyMechanism.check_run`; nothing to
    check without participation limits).

    Each released round takes ``expected_clients`` clients within the participation
    limits. Those that took part in the last b - 1 rounds are not eligible, so a round
    fills only if ``population >= b * expected_clients``; and T rounds use T·n
    participations, at most K per client, so ``population * K >= rounds * n``.

    Raises:
        ConfigurationError: in one line naming the flags and values.
    """
    if dp.max_participations is None:
        return
    k, b = dp.max_participations, dp.min_separation
    if buffered:
        raise ConfigurationError(
            f"--dp-mechanism {dp.mechanism} releases synchronous rounds in order; --mode fedbuff "
            "takes DP-FedAvg (--dp-mechanism fedavg)."
        )
    if server_optimizer is not None:
        raise ConfigurationError(
            f"--dp-mechanism {dp.mechanism} follows the noised prefix sums with FedAvg's server "
            f"step (no momentum); drop --server-optimizer {server_optimizer}."
        )
    if population < b * expected_clients:
        raise ConfigurationError(
            f"{FLAGS['min_separation']} {b} with {expected_clients} clients per round needs "
            f"at least {b * expected_clients} clients, but {FLAGS['population']} (or "
            f"--population) is {population}: rounds could not fill; lower "
            f"{FLAGS['min_separation']} to {max(1, population // expected_clients)} or "
            "add clients."
        )
    if population * k < rounds * expected_clients:
        needed = -(-rounds * expected_clients // population)
        raise ConfigurationError(
            f"{FLAGS['rounds']} {rounds} of {expected_clients} clients need "
            f"{rounds * expected_clients} participations, but {FLAGS['max_participations']} "
            f"{k} over {population} clients allows {population * k}; raise "
            f"{FLAGS['max_participations']} to {needed} or lower {FLAGS['rounds']}."
        )
