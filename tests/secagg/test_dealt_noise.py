"""Fresh noise dealt by the aggregators for distributed DP-FedAvg: each release carries
noise of the profile's variance (m/h times sigma^2), the coordinator with t - 1
aggregators still faces sigma^2, a round gets one noisy release only, and the state
survives a restart."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.shamir import ShamirScheme, Share
from veilfl.errors import ProtocolError
from veilfl.privacy.clipping import AdaptiveClipping
from veilfl.privacy.dp_fedavg import DpConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import EXTRA_COORDINATES, ContributionLayout
from veilfl.secagg.dealt_noise import dealt_noise_config
from veilfl.secagg.tree_noise import NoiseDeal, TreeNoiseAggregator, TreeNoiseConfig

P = MERSENNE_31.modulus


def _signed(values: np.ndarray) -> np.ndarray:
    signed = values.astype(np.int64)
    return np.where(signed > P // 2, signed - P, signed)


def _fleet(config: TreeNoiseConfig, seed: int) -> dict[int, TreeNoiseAggregator]:
    return {
        j: TreeNoiseAggregator(config, index=j, rng=CsprngStream(key=bytes([seed, j]) * 16))
        for j in range(1, config.num_aggregators + 1)
    }


def _deal(fleet: dict[int, TreeNoiseAggregator], step: int) -> dict[int, list[NoiseDeal]]:
    """Deal ``step``; deliver every deal; return each dealer's deals."""
    dealt = {}
    for j, dealer in fleet.items():
        dealt[j] = dealer.deal(step)
        for deal in dealt[j]:
            fleet[deal.recipient].receive(deal)
    return dealt


def _dealer_noise(config: TreeNoiseConfig, deals: list[NoiseDeal], dealer: int) -> np.ndarray:
    """A dealer's noise vector, from t of its deals (what the dealer itself knows)."""
    shares = []
    for deal in deals[: config.threshold]:
        if deal.seed is not None:
            values = CsprngStream(key=deal.seed).uniform_field(config.field, config.length)
        else:
            assert deal.values is not None
            values = deal.values
        shares.append(Share(index=deal.recipient, values=values))
    scheme = ShamirScheme(threshold=config.threshold, num_shares=config.num_aggregators)
    return _signed(scheme.reconstruct(shares))


def _release(
    fleet: dict[int, TreeNoiseAggregator], step: int, *, round_id: int, subset: tuple[int, ...]
) -> np.ndarray:
    """Release a zero aggregate (shares of 0) at ``step`` from ``subset``: the noise."""
    config = next(iter(fleet.values())).config
    zero = np.zeros(config.length, dtype=np.uint64)
    shares = [fleet[j].release(step, zero, round_id=round_id) for j in subset]
    scheme = ShamirScheme(threshold=config.threshold, num_shares=config.num_aggregators)
    return _signed(scheme.reconstruct(shares))


LAYOUT = ContributionLayout(4000, SecureAggregationConfig(threshold=2, num_aggregators=3))
DP = DpConfig(
    placement="distributed",
    noise_multiplier=0.4,
    clip_norm=1.0,
    adaptive=AdaptiveClipping(target_quantile=0.5, learning_rate=0.2),
    count_stddev=40.0,
)


def test_the_profile_follows_the_verified_bound_and_the_count_noise() -> None:
    config = dealt_noise_config(DP, layout=LAYOUT, expected_clients=100)
    d, bound = LAYOUT.dimension, LAYOUT.bounds.norm_bound
    z_update = DP.update_noise_multiplier(100)
    assert config.schedule == "fresh" and config.length == d + EXTRA_COORDINATES
    assert config.segments == (
        (d, z_update * bound),
        (EXTRA_COORDINATES - 1, 0.0),
        (1, 2 * 40.0),
    )
    # The verified bound covers every encoded update: at least C·scale in integer units.
    assert bound >= DP.clip_norm * LAYOUT.scale


def test_a_release_carries_the_noise_and_a_coalition_of_t_minus_1_still_faces_sigma2() -> None:
    config = dealt_noise_config(DP, layout=LAYOUT, expected_clients=100)
    m, h = config.num_aggregators, config.honest_minimum
    sigma = config.block_stddev
    fleet = _fleet(config, seed=7)
    dealt = _deal(fleet, step=3)
    noise = _release(fleet, 3, round_id=3, subset=(1, 2))
    d = LAYOUT.dimension
    update, extras = noise[:d].astype(np.float64), noise[d:]
    # Released minus exact (0) has variance m/h sigma^2 on the update coordinates.
    assert stats.normaltest(update).pvalue > 1e-4
    assert abs(update.mean()) < 4 * sigma * math.sqrt(m / h) / math.sqrt(d)
    assert 0.9 < update.var() / (sigma**2 * m / h) < 1.1
    # Weight, loss and evaluation coordinates get none; the count (last) has some.
    assert not extras[:-1].any() and extras[-1] != 0
    # Aggregator 1 (t - 1 = 1 of them) with the coordinator subtracts its own noise:
    # the others' noise, variance (m - 1)/h sigma^2 >= sigma^2, remains.
    rest = (noise - _dealer_noise(config, dealt[1], dealer=1))[:d].astype(np.float64)
    assert rest.var() >= 0.9 * sigma**2
    assert 0.9 < rest.var() / (sigma**2 * (m - 1) / h) < 1.1


def test_the_noise_is_fresh_for_every_release() -> None:
    config = TreeNoiseConfig(
        num_aggregators=3, threshold=2, length=2000, block_stddev=50.0, schedule="fresh"
    )
    fleet = _fleet(config, seed=1)
    _deal(fleet, 1)
    first = _release(fleet, 1, round_id=1, subset=(1, 3))
    _deal(fleet, 4)  # rounds 2, 3 were abandoned: steps need only increase
    second = _release(fleet, 4, round_id=4, subset=(2, 3))
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.1


def test_a_round_is_released_at_one_step_only() -> None:
    config = TreeNoiseConfig(
        num_aggregators=3, threshold=2, length=8, block_stddev=50.0, schedule="fresh"
    )
    fleet = _fleet(config, seed=2)
    _deal(fleet, 5)
    _deal(fleet, 6)
    zero = np.zeros(8, dtype=np.uint64)
    first = fleet[1].release(5, zero, round_id=5)
    again = fleet[1].release(5, zero, round_id=5)  # a retried request: the same share
    assert np.array_equal(first.values, again.values)
    with pytest.raises(ProtocolError, match="one noisy release"):
        fleet[1].release(6, zero, round_id=5)  # the same round, a second block of noise
    with pytest.raises(ProtocolError, match="already released"):
        fleet[1].release(5, zero + 1, round_id=5)  # the same step over another sum
    with pytest.raises(ProtocolError, match="already released"):
        fleet[1].release(5, zero, round_id=6)


def test_a_release_waits_for_every_dealer() -> None:
    config = TreeNoiseConfig(
        num_aggregators=3, threshold=2, length=8, block_stddev=50.0, schedule="fresh"
    )
    fleet = _fleet(config, seed=3)
    for deal in fleet[2].deal(1):
        fleet[deal.recipient].receive(deal)
    fleet[1].deal(1)  # its own share only: aggregator 3 never dealt
    with pytest.raises(ProtocolError, match=r"aggregators \[3\]"):
        fleet[1].release(1, np.zeros(8, dtype=np.uint64), round_id=1)


def test_a_restarted_aggregator_continues_its_noise_state() -> None:
    config = TreeNoiseConfig(
        num_aggregators=3, threshold=2, length=16, block_stddev=50.0, schedule="fresh"
    )
    fleet = _fleet(config, seed=4)
    dealt = _deal(fleet, 2)
    zero = np.zeros(16, dtype=np.uint64)
    released = fleet[1].release(2, zero, round_id=2)
    restored = TreeNoiseAggregator.from_bytes(fleet[1].to_bytes(), config=config, index=1)
    assert restored.released_steps == 2 and restored.last_round == 2
    assert np.array_equal(restored.release(2, zero, round_id=2).values, released.values)
    with pytest.raises(ProtocolError, match="one noisy release"):
        restored.release(3, zero, round_id=2)
    redealt = restored.deal(2)  # the same seeds: recipients accept the deals again
    assert [d.to_bytes() for d in redealt] == [d.to_bytes() for d in dealt[1]]
