"""Refuse DP settings under which a release could carry less noise than was charged.

Distributed noise is calibrated for ``min_contributions`` summands (each client adds
1/``min_contributions`` of the variance), so a release is only as private as
charged if it sums at least that many contributions. Three settings bound how many
a release can have, and each must be at least ``min_contributions``:

* ``--min-clients``: a synchronous round closes with that many reports;
* ``--buffer-size``: a FedBuff release sums exactly that many updates;
* ``--clients-per-round`` (or ``--fraction`` of the population): no round can have
  more reports than clients sampled.

Dropouts can still leave a round with fewer contributions than sampled. The rule is
that such a release is **withheld** (the aggregators refuse to release a sum over
fewer than ``min_contributions`` contributions, and the round is run again); noise is
never made up after the fact. :func:`check_dp_settings` refuses, before the run
starts, settings under which every round, or some round by construction, would be
released with too little noise.
"""

from __future__ import annotations

import math

from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_fedavg import DpConfig

__all__ = ["FLAGS", "check_dp_settings", "effective_noise_multiplier"]

FLAGS = {
    "min_contributions": "--dp-min-clients",
    "min_clients": "--min-clients",
    "clients_per_round": "--clients-per-round",
    "fraction": "--fraction",
    "population": "--num-clients",
    "buffer_size": "--buffer-size",
    "noise_multiplier": "--noise-multiplier",
    "adaptive": "--adaptive-clipping",
}
"""The command-line flag that sets each setting, as messages name them."""


def effective_noise_multiplier(config: DpConfig, *, contributions: int) -> float:
    """The noise multiplier a sum over ``contributions`` clients actually carries.

    Under distributed noise each client adds variance (z C)^2 / min_contributions,
    so ``contributions`` of them carry z sqrt(contributions / min_contributions):
    below z when there are fewer than ``min_contributions``. Central and local
    noise do not depend on the count.
    """
    if config.placement != "distributed":
        return config.noise_multiplier
    return config.noise_multiplier * math.sqrt(contributions / config.min_contributions)


def _too_few(config: DpConfig, setting: str, value: int, consequence: str) -> ConfigurationError:
    charged = config.noise_multiplier
    actual = effective_noise_multiplier(config, contributions=value)
    return ConfigurationError(
        f"{FLAGS['min_contributions']} {config.min_contributions} exceeds {FLAGS[setting]} "
        f"{value}: {consequence} (effective noise multiplier {actual:.3f} where {charged:.3f} "
        f"is charged); lower {FLAGS['min_contributions']} to {value} or raise "
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
    if dp.placement == "distributed":
        if not secure_aggregation:
            raise ConfigurationError(
                "--dp distributed needs secure aggregation (--secure, or --aggregator for a "
                "server): without it the coordinator sees each update with only "
                f"1/{dp.min_contributions} of the noise variance."
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
