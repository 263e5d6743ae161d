"""The aggregators' tree noise: any t of them reconstruct the raw prefix sum plus
exactly the cover's block noise, blocks are reused not redrawn, and the state
survives restarts."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.shamir import ShamirScheme, Share
from veilfl.errors import ProtocolError, StorageError, WireFormatError
from veilfl.privacy.tree import TreeNode, cover, cover_change
from veilfl.secagg.tree_noise import NoiseDeal, TreeNoiseAggregator, TreeNoiseConfig

P = MERSENNE_31.modulus


def _signed(values: np.ndarray) -> np.ndarray:
    signed = values.astype(np.int64)
    return np.where(signed > P // 2, signed - P, signed)


def _field(values: np.ndarray) -> np.ndarray:
    return np.mod(values.astype(np.int64), P).astype(np.uint64)


class Fleet:
    """m aggregators, the coordinator's reconstruction, and the plaintext truth."""

    def __init__(self, config: TreeNoiseConfig, *, seed: int) -> None:
        self.config = config
        self.scheme = ShamirScheme(threshold=config.threshold, num_shares=config.num_aggregators)
        self.rng = CsprngStream(key=bytes([seed]) * 32)
        self.aggregators = {
            j: TreeNoiseAggregator(config, index=j, rng=CsprngStream(key=bytes([seed, j]) * 16))
            for j in range(1, config.num_aggregators + 1)
        }
        self.block_noise: dict[TreeNode, np.ndarray] = {}
        self.raw_prefix = np.zeros(config.length, dtype=np.int64)
        self.noised_prefix = np.zeros(config.length, dtype=np.int64)

    def deal_and_deliver(self, step: int) -> None:
        for dealer in self.aggregators.values():
            for deal in dealer.deal(step):
                wire = NoiseDeal.from_bytes(deal.to_bytes(), config=self.config)
                self.aggregators[deal.recipient].receive(wire)

    def reconstruct(self, shares: list[Share], subset: tuple[int, ...]) -> np.ndarray:
        chosen = [s for s in shares if s.index in subset]
        return _signed(self.scheme.reconstruct(chosen))

    def step(self, step: int, subset: tuple[int, ...]) -> None:
        self.deal_and_deliver(step)
        added = cover_change(step).added
        # The block's total noise, as any t aggregators would reconstruct it.
        self.block_noise[added] = self.reconstruct(
            [a.node_noise_share(added) for a in self.aggregators.values()], subset
        )
        # The round's aggregate: a small random integer vector, Shamir-shared.
        raw = self.rng.random_uint32(self.config.length).astype(np.int64) % 2001 - 1000
        self.raw_prefix += raw
        shares = {s.index: s for s in self.scheme.split(_field(raw), rng=self.rng)}
        released = [a.release(step, shares[j].values) for j, a in self.aggregators.items()]
        self.noised_prefix += self.reconstruct(released, subset)


def _subsets(config: TreeNoiseConfig) -> list[tuple[int, ...]]:
    return list(itertools.combinations(range(1, config.num_aggregators + 1), config.threshold))


@pytest.mark.parametrize(("m", "t"), [(3, 2), (5, 3), (4, 1), (4, 4)])
def test_any_t_aggregators_get_the_prefix_sum_plus_exactly_the_covers_noise(m: int, t: int) -> None:
    config = TreeNoiseConfig(num_aggregators=m, threshold=t, length=64, block_stddev=300.0)
    fleet = Fleet(config, seed=m * 10 + t)
    subsets = _subsets(config)
    for step in range(1, 24):
        fleet.step(step, subsets[step % len(subsets)])
        expected = fleet.raw_prefix + sum(fleet.block_noise[b] for b in cover(step))
        np.testing.assert_array_equal(fleet.noised_prefix, expected)
        # A block still in the cover holds the noise it was dealt with: reused, not redrawn.
        for block in cover(step):
            again = fleet.reconstruct(
                [a.node_noise_share(block) for a in fleet.aggregators.values()],
                subsets[(step + 1) % len(subsets)],
            )
            np.testing.assert_array_equal(again, fleet.block_noise[block])
    assert all(a.released_steps == 23 for a in fleet.aggregators.values())


def test_block_noise_has_the_variance_of_sigma_squared_times_m_over_h() -> None:
    config = TreeNoiseConfig(num_aggregators=5, threshold=3, length=20_000, block_stddev=40.0)
    fleet = Fleet(config, seed=99)
    fleet.deal_and_deliver(1)
    noise = fleet.reconstruct(
        [a.node_noise_share(TreeNode(0, 1)) for a in fleet.aggregators.values()], (1, 2, 3)
    ).astype(np.float64)
    expected = config.dealer_stddev**2 * config.num_aggregators  # m sigma^2 / h >= sigma^2
    low, high = stats.chi2.ppf([1e-4, 1 - 1e-4], config.length) / config.length
    assert low < float((noise**2).mean()) / expected < high
    assert expected >= config.block_stddev**2
    assert abs(noise.mean()) < 5 * np.sqrt(expected / config.length)


def test_seeded_recipients_get_seeds_and_the_rest_full_shares() -> None:
    config = TreeNoiseConfig(num_aggregators=5, threshold=3, length=1000, block_stddev=10.0)
    dealer = TreeNoiseAggregator(config, index=4, rng=CsprngStream(key=bytes(32)))
    deals = {d.recipient: d for d in dealer.deal(1)}
    assert set(deals) == {1, 2, 3, 5}
    assert config.seeded_recipients(4) == (5, 1)
    assert all(deals[j].seed is not None and len(deals[j].to_bytes()) < 64 for j in (5, 1))
    assert all(deals[j].values is not None for j in (2, 3))
    assert "seed" in repr(deals[5]) and "values=" not in repr(deals[2])


def test_a_restarted_aggregator_continues_and_deals_the_same_bytes() -> None:
    config = TreeNoiseConfig(num_aggregators=3, threshold=2, length=32, block_stddev=50.0)
    fleet = Fleet(config, seed=5)
    for step in range(1, 7):
        fleet.step(step, (1, 3))
    fleet.deal_and_deliver(7)  # deals for step 7 sent before the restart
    before = [d.to_bytes() for d in fleet.aggregators[2].deal(7)]
    # Restart every aggregator from its stored state (with fresh, unrelated streams).
    fleet.aggregators = {
        j: TreeNoiseAggregator.from_bytes(a.to_bytes(), config=config, index=j)
        for j, a in fleet.aggregators.items()
    }
    assert [d.to_bytes() for d in fleet.aggregators[2].deal(7)] == before
    for step in range(7, 15):
        fleet.step(step, (2, 3))  # redealing step 7 is accepted once, as the same deal
        expected = fleet.raw_prefix + sum(fleet.block_noise[b] for b in cover(step))
        np.testing.assert_array_equal(fleet.noised_prefix, expected)


def test_a_step_is_released_over_one_aggregate_only() -> None:
    config = TreeNoiseConfig(num_aggregators=3, threshold=2, length=8, block_stddev=5.0)
    fleet = Fleet(config, seed=3)
    fleet.deal_and_deliver(1)
    aggregator = fleet.aggregators[1]
    first = aggregator.release(1, _field(np.arange(8)))
    again = aggregator.release(1, _field(np.arange(8)))
    np.testing.assert_array_equal(first.values, again.values)
    with pytest.raises(ProtocolError, match="without noise"):
        aggregator.release(1, _field(np.arange(8) + 1))
    with pytest.raises(ProtocolError, match="in order"):
        aggregator.release(3, _field(np.arange(8)))
    with pytest.raises(ProtocolError, match=r"aggregators \[1, 2, 3\] have not dealt"):
        aggregator.release(2, _field(np.arange(8)))


def test_deals_that_do_not_fit_are_refused() -> None:
    config = TreeNoiseConfig(num_aggregators=3, threshold=2, length=8, block_stddev=5.0)
    one = TreeNoiseAggregator(config, index=1, rng=CsprngStream(key=bytes(32)))
    two = TreeNoiseAggregator(config, index=2, rng=CsprngStream(key=bytes(range(32))))
    three = TreeNoiseAggregator(config, index=3)
    deal_to_two = next(d for d in one.deal(1) if d.recipient == 2)
    with pytest.raises(ProtocolError, match="is for aggregator 2"):
        three.receive(deal_to_two)
    two.receive(deal_to_two)
    two.receive(deal_to_two)  # the same deal twice is fine
    forged = NoiseDeal(deal_to_two.node, 1, 2, seed=bytes(32))
    with pytest.raises(ProtocolError, match="different share"):
        two.receive(forged)
    with pytest.raises(ProtocolError, match="never in a cover"):
        two.receive(NoiseDeal(TreeNode(0, 2), 1, 2, seed=bytes(32)))


def test_a_block_that_left_the_cover_is_not_dealt_again() -> None:
    config = TreeNoiseConfig(num_aggregators=3, threshold=2, length=4, block_stddev=5.0)
    fleet = Fleet(config, seed=8)
    for step in range(1, 3):
        fleet.step(step, (1, 2))
    with pytest.raises(ProtocolError, match="left the cover"):
        fleet.aggregators[1].deal(1)  # block [1] merged into [1, 2] at step 2


def test_stored_state_for_other_settings_or_damaged_is_refused() -> None:
    config = TreeNoiseConfig(num_aggregators=3, threshold=2, length=8, block_stddev=5.0)
    stored = TreeNoiseAggregator(config, index=1).to_bytes()
    other = TreeNoiseConfig(num_aggregators=3, threshold=2, length=8, block_stddev=6.0)
    with pytest.raises(StorageError, match="block_stddev"):
        TreeNoiseAggregator.from_bytes(stored, config=other, index=1)
    with pytest.raises(StorageError):
        TreeNoiseAggregator.from_bytes(stored[:-3] + b"xyz", config=config, index=1)
    with pytest.raises(StorageError):
        TreeNoiseAggregator.from_bytes(stored, config=config, index=2)


_VALID_DEAL = NoiseDeal(TreeNode(0, 1), 1, 2, values=np.arange(8, dtype=np.uint64)).to_bytes()


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=120),
        st.tuples(st.integers(0, len(_VALID_DEAL)), st.binary(max_size=40)).map(
            lambda cut: _VALID_DEAL[: cut[0]] + cut[1]
        ),
    )
)
def test_a_deal_decoder_raises_only_wire_format_errors(data: bytes) -> None:
    config = TreeNoiseConfig(num_aggregators=3, threshold=2, length=8, block_stddev=5.0)
    with contextlib.suppress(WireFormatError):
        NoiseDeal.from_bytes(data, config=config)


def test_a_valid_deal_round_trips() -> None:
    config = TreeNoiseConfig(num_aggregators=3, threshold=2, length=8, block_stddev=5.0)
    decoded = NoiseDeal.from_bytes(_VALID_DEAL, config=config)
    assert decoded.values is not None
    np.testing.assert_array_equal(decoded.values, np.arange(8))
    assert (decoded.node, decoded.dealer, decoded.recipient) == (TreeNode(0, 1), 1, 2)
