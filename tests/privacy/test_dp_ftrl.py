"""DP-FTRL: the tree's sensitivity bound against brute force, epsilon against
dp-accounting, one number for both observers."""

from __future__ import annotations

import itertools
import math

import dp_accounting
import pytest

from veilfl.errors import ConfigurationError
from veilfl.privacy.accountant import RDP_ORDERS
from veilfl.privacy.dp_ftrl import (
    TreeDpConfig,
    dp_ftrl_epsilon,
    dp_ftrl_noise_multiplier_for,
    dp_ftrl_report,
    tree_sensitivity,
)
from veilfl.privacy.tree import cover_change


def _released_blocks(rounds: int) -> list[tuple[int, int]]:
    """(first, last) of every block that gets noise within ``rounds`` rounds."""
    blocks = (cover_change(step).added for step in range(1, rounds + 1))
    return [(block.first, block.last) for block in blocks]


def _worst_squared_sensitivity(rounds: int, most: int, separation: int) -> int:
    """Brute force: the largest sum over noised blocks of (participations in it)^2, over
    every schedule of at most ``most`` rounds spaced at least ``separation`` apart."""
    blocks = _released_blocks(rounds)
    worst = 0
    for k in range(1, most + 1):
        for schedule in itertools.combinations(range(1, rounds + 1), k):
            if any(b - a < separation for a, b in itertools.pairwise(schedule)):
                continue
            total = sum(sum(first <= r <= last for r in schedule) ** 2 for first, last in blocks)
            worst = max(worst, total)
    return worst


@pytest.mark.parametrize("rounds", [1, 2, 3, 5, 8, 11, 16])
@pytest.mark.parametrize(("most", "separation"), [(1, 1), (2, 1), (2, 3), (3, 2), (3, 4), (4, 1)])
def test_the_sensitivity_bound_holds_for_every_schedule(
    rounds: int, most: int, separation: int
) -> None:
    bound = tree_sensitivity(rounds=rounds, max_participations=most, min_separation=separation)
    assert _worst_squared_sensitivity(rounds, most, separation) <= bound**2 + 1e-9


@pytest.mark.parametrize("rounds", [1, 2, 7, 8, 100, 1000])
def test_one_participation_is_the_single_epoch_bound_and_is_attained(rounds: int) -> None:
    bound = tree_sensitivity(rounds=rounds, max_participations=1, min_separation=1)
    assert bound**2 == pytest.approx(math.floor(math.log2(rounds)) + 1)
    if rounds <= 16:  # round 1 lies in every level's first block: the bound is tight
        assert _worst_squared_sensitivity(rounds, 1, 1) == pytest.approx(bound**2)


@pytest.mark.parametrize(("z", "rounds"), [(1.0, 30), (3.0, 1000), (0.7, 5)])
def test_single_participation_epsilon_matches_dp_accountings_tree_event(
    z: float, rounds: int
) -> None:
    ours = dp_ftrl_epsilon(
        noise_multiplier=z,
        rounds=rounds,
        max_participations=1,
        min_separation=1,
        delta=1e-5,
        accounting="rdp",
    )
    accountant = dp_accounting.rdp.RdpAccountant(
        list(RDP_ORDERS), dp_accounting.NeighboringRelation.REPLACE_SPECIAL
    )
    accountant.compose(dp_accounting.SingleEpochTreeAggregationDpEvent(z, rounds))
    assert ours == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    exact = dp_ftrl_epsilon(
        noise_multiplier=z, rounds=rounds, max_participations=1, min_separation=1, delta=1e-5
    )
    assert exact < ours  # the closed form is tighter than RDP


def test_more_participations_closer_together_cost_more() -> None:
    def epsilon(most: int, separation: int) -> float:
        return dp_ftrl_epsilon(
            noise_multiplier=5.0,
            rounds=100,
            max_participations=most,
            min_separation=separation,
            delta=1e-5,
        )

    assert epsilon(1, 1) < epsilon(3, 30) < epsilon(3, 1) < epsilon(10, 1)
    assert epsilon(3, 30) <= epsilon(3, 10)


def test_the_noise_for_a_target_spends_at_most_the_target() -> None:
    args = {"rounds": 30, "max_participations": 3, "min_separation": 10, "delta": 1e-5}
    z = dp_ftrl_noise_multiplier_for(target_epsilon=2.0, **args)  # type: ignore[arg-type]
    spent = dp_ftrl_epsilon(noise_multiplier=z, **args)  # type: ignore[arg-type]
    assert 1.99 <= spent <= 2.0
    assert dp_ftrl_epsilon(noise_multiplier=z * 0.99, **args) > 2.0  # type: ignore[arg-type]


def test_the_public_and_the_coordinator_get_the_same_epsilon() -> None:
    config = TreeDpConfig(
        noise_multiplier=8.0, clip_norm=1.0, rounds=30, max_participations=3, min_separation=10
    )
    shared = dp_ftrl_report(config, rounds_released=20, noise_from_aggregators=True)
    assert shared.epsilon_public == shared.epsilon_coordinator == config.epsilon(20)
    assert config.epsilon(20) <= config.epsilon()
    central = dp_ftrl_report(config, rounds_released=20, noise_from_aggregators=False)
    assert central.epsilon_coordinator is None
    assert config.block_stddev(2.5) == pytest.approx(20.0)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        tree_sensitivity(rounds=10, max_participations=0, min_separation=1)
    with pytest.raises(ConfigurationError):
        TreeDpConfig(
            noise_multiplier=1.0, clip_norm=1.0, rounds=10, max_participations=1, min_separation=0
        )


def test_a_runs_dp_settings_select_dp_ftrl_and_refuse_what_it_cannot_do() -> None:
    from veilfl.privacy.clipping import AdaptiveClipping
    from veilfl.privacy.dp_config import DpConfig
    from veilfl.privacy.mechanisms import DpFtrlTree

    dp = DpConfig(
        placement="distributed",
        noise_multiplier=8.46,
        clip_norm=1.0,
        mechanism="ftrl",
        max_participations=3,
        min_separation=10,
        accounting="pld",
    )
    assert DpConfig.from_json(dp.to_json()) == dp
    assert DpFtrlTree().tree_config(dp, rounds=30).epsilon() == pytest.approx(
        dp_ftrl_epsilon(
            noise_multiplier=8.46,
            rounds=30,
            max_participations=3,
            min_separation=10,
            delta=1e-5,
            accounting="pld",
        )
    )
    base = {"noise_multiplier": 1.0, "clip_norm": 1.0, "mechanism": "ftrl"}
    with pytest.raises(ConfigurationError, match="--dp-max-participations K"):
        DpConfig(placement="central", **base)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="--dp local"):
        DpConfig(placement="local", max_participations=1, **base)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="--adaptive-clipping"):
        DpConfig(
            placement="central",
            max_participations=1,
            adaptive=AdaptiveClipping(target_quantile=0.5),
            **base,  # type: ignore[arg-type]
        )
