"""A release never carries less noise than was charged: contradictory settings are
refused in one line that names the flags and both values."""

from __future__ import annotations

import pytest

from veilfl.errors import ConfigurationError
from veilfl.privacy.clipping import AdaptiveClipping
from veilfl.privacy.dp_config import DpConfig, NoisePlacement
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.privacy.validation import check_dp_settings, effective_noise_multiplier


def _distributed(min_contributions: int, z: float = 1.0) -> DpConfig:
    return DpConfig(
        placement="distributed", noise_multiplier=z, clip_norm=1.0, min_clients=min_contributions
    )


def test_dp_min_clients_above_min_clients_is_refused_in_one_line() -> None:
    # Issue 11: --dp-min-clients 20 --min-clients 5 charged z 1.0 and released 0.5.
    with pytest.raises(ConfigurationError) as refused:
        check_dp_settings(
            dp=_distributed(20),
            min_clients=5,
            clients_per_round=30,
            secure_aggregation=True,
        )
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("--dp-min-clients 20 exceeds --min-clients 5:")
    assert "a release over fewer than 20 is withheld" in message


def test_a_fedbuff_buffer_smaller_than_the_noise_contributions_is_refused() -> None:
    # Issue 11: --mode fedbuff --buffer-size 4 --min-clients 10.
    with pytest.raises(ConfigurationError) as refused:
        check_dp_settings(
            dp=_distributed(10), min_clients=10, buffer_size=4, secure_aggregation=True
        )
    message = str(refused.value)
    assert message.startswith("--dp-min-clients 10 exceeds --buffer-size 4:")
    assert "a release over fewer than 10 is withheld" in message


def test_fewer_sampled_clients_than_noise_contributions_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"--dp-min-clients 8 exceeds the 5 clients"):
        check_dp_settings(
            dp=_distributed(8),
            min_clients=8,
            fraction=0.05,
            population=100,
            secure_aggregation=True,
        )


@pytest.mark.parametrize("placement", ["central", "local"])
def test_dp_min_clients_above_min_clients_is_refused_under_every_placement(
    placement: NoisePlacement,
) -> None:
    """The flag says a release over fewer is withheld, whoever adds the noise."""
    dp = DpConfig(placement=placement, noise_multiplier=1.0, clip_norm=1.0, min_clients=50)
    with pytest.raises(ConfigurationError, match=r"^--dp-min-clients 50 exceeds --min-clients 2:"):
        check_dp_settings(dp=dp, min_clients=2, clients_per_round=60, secure_aggregation=False)


def test_distributed_noise_needs_secure_aggregation() -> None:
    with pytest.raises(ConfigurationError, match="--dp distributed needs secure aggregation"):
        check_dp_settings(dp=_distributed(5), min_clients=5, secure_aggregation=False)


def test_adaptive_clipping_without_budget_for_the_update_is_refused() -> None:
    dp = DpConfig(
        placement="central", noise_multiplier=1.2, clip_norm=1.0, adaptive=AdaptiveClipping()
    )
    with pytest.raises(ConfigurationError, match=r"--noise-multiplier 1\.2 .* --adaptive-clipping"):
        check_dp_settings(dp=dp, min_clients=5, clients_per_round=10, secure_aggregation=False)


@pytest.mark.parametrize(
    ("dp", "settings"),
    [
        (_distributed(10), {"min_clients": 10, "clients_per_round": 20}),
        (_distributed(10), {"min_clients": 1, "buffer_size": 10}),
        (_distributed(10), {"min_clients": 12, "fraction": 0.1, "population": 1000}),
        (
            DpConfig(placement="central", noise_multiplier=1.0, clip_norm=1.0, min_clients=2),
            {"min_clients": 2, "clients_per_round": 10},
        ),
        (
            DpConfig(placement="local", noise_multiplier=1.0, clip_norm=1.0),
            {"min_clients": 1, "buffer_size": 3},
        ),
    ],
)
def test_consistent_settings_pass(dp: DpConfig, settings: dict[str, int | float]) -> None:
    check_dp_settings(dp=dp, secure_aggregation=True, **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("contributions", [1, 4, 9, 16, 25])
def test_distributed_noise_does_not_depend_on_the_count(contributions: int) -> None:
    dp = _distributed(16, z=2.0)
    plan = ClientPrivacyPlan.for_round(dp, clip_norm=1.0, expected_clients=16)
    # The aggregators deal the noise: clients add none, and every release carries z.
    assert plan.update_stddev == 0 and plan.count_stddev == 0
    assert effective_noise_multiplier(dp, contributions=contributions) == 2.0
    central = DpConfig(placement="central", noise_multiplier=2.0, clip_norm=1.0)
    assert effective_noise_multiplier(central, contributions=contributions) == 2.0
