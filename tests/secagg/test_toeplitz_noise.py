"""The aggregators' dealt noise under a Toeplitz strategy (banded matrix factorisation):
each releases its share of ``sum_j c_j a_(t-j) + z_t``; reconstructed, the release
minus C_int times the aggregates is exactly the sum of the dealt noise of block
(0, t), and the coordinator's decoding minus the round sums is C_int^-1 times that
noise, across a restart of every aggregator from its stored state; a state stored by
the previous format is still read."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.shamir import ShamirScheme
from veilfl.errors import ConfigurationError, ProtocolError, StorageError
from veilfl.privacy.banded_toeplitz import toeplitz_matrix
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.mechanisms.schedule import ToeplitzReleaseSchedule, dealt_schedule_named
from veilfl.privacy.tree import TreeNode
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.secagg.dealt_noise import dealt_noise_config
from veilfl.secagg.tree_noise import TreeNoiseAggregator, TreeNoiseConfig

COEFFICIENTS = (9, -4, 3)
P = MERSENNE_31.modulus
SCHEME = ShamirScheme(threshold=2, num_shares=3)


def _signed(values: np.ndarray) -> np.ndarray:
    signed = values.astype(np.int64)
    signed[signed > (P - 1) // 2] -= P
    return signed


def _field(values: np.ndarray) -> np.ndarray:
    return np.mod(values, P).astype(np.uint64)


def _fleet(config: TreeNoiseConfig) -> dict[int, TreeNoiseAggregator]:
    return {
        j: TreeNoiseAggregator(config, index=j, rng=CsprngStream(key=bytes([7, j]) * 16))
        for j in (1, 2, 3)
    }


@pytest.mark.parametrize(("restart_after", "encoded"), [(None, 6), (1, 6), (3, 4)])
def test_released_minus_the_strategy_times_the_aggregates_is_the_dealt_noise(
    restart_after: int | None, encoded: int
) -> None:
    # Arrange: three aggregators, threshold 2, and integer aggregates to share.
    config = TreeNoiseConfig(
        num_aggregators=3,
        threshold=2,
        length=6,
        block_stddev=40.0,
        schedule="toeplitz",
        coefficients=COEFFICIENTS,
        encoded_length=encoded,
    )
    fleet = _fleet(config)
    rng = np.random.default_rng(1)  # test data only
    steps = 5
    aggregates = rng.integers(-1000, 1000, size=(steps, config.length))
    released, noises = [], []
    # Act: deal, release, (restart), step by step.
    for step in range(1, steps + 1):
        for dealer in fleet.values():
            for deal in dealer.deal(step):
                fleet[deal.recipient].receive(deal)
        node = TreeNode(0, step)
        noises.append(
            _signed(SCHEME.reconstruct([fleet[j].node_noise_share(node) for j in (1, 3)]))
        )
        shares = SCHEME.split(_field(aggregates[step - 1]), rng=CsprngStream(key=bytes(32)))
        out = [fleet[s.index].release(step, s.values, round_id=step) for s in shares]
        released.append(_signed(SCHEME.reconstruct(out[:2])))
        if step == restart_after:
            fleet = {
                j: TreeNoiseAggregator.from_bytes(a.to_bytes(), config=config, index=j)
                for j, a in fleet.items()
            }
    # Assert: r = C_int a + z exactly on the encoded coordinates, a + z on the others,
    # and the decoder recovers a + C_int^-1 z.
    strategy = toeplitz_matrix(np.array(COEFFICIENTS, float), steps).astype(np.int64)
    noise = np.array(noises)
    released_array = np.array(released)
    np.testing.assert_array_equal(
        released_array[:, :encoded] - strategy @ aggregates[:, :encoded], noise[:, :encoded]
    )
    np.testing.assert_array_equal(
        released_array[:, encoded:] - aggregates[:, encoded:], noise[:, encoded:]
    )
    assert np.any(noise != 0)
    schedule = dealt_schedule_named("toeplitz", coefficients=COEFFICIENTS)
    decoder = schedule.decoder()
    decoded = np.array(
        [
            decoder.decode(schedule.terms(t), r[:encoded].astype(float))
            for t, r in enumerate(released, 1)
        ]
    )
    np.testing.assert_allclose(
        decoded - aggregates[:, :encoded],
        np.linalg.solve(strategy, noise[:, :encoded]),
        rtol=1e-9,
        atol=1e-9,
    )


def test_toeplitz_steps_are_consecutive_and_old_blocks_are_forgotten() -> None:
    config = TreeNoiseConfig(
        num_aggregators=3,
        threshold=2,
        length=4,
        block_stddev=5.0,
        schedule="toeplitz",
        coefficients=COEFFICIENTS,
    )
    fleet = _fleet(config)
    for step in (1, 2):
        for dealer in fleet.values():
            for deal in dealer.deal(step):
                fleet[deal.recipient].receive(deal)
    zero = np.zeros(4, dtype=np.uint64)
    with pytest.raises(ProtocolError, match="in order"):
        fleet[1].release(2, zero, round_id=2)
    fleet[1].release(1, zero, round_id=1)
    fleet[1].release(2, zero, round_id=2)
    with pytest.raises(ProtocolError, match="not held"):
        fleet[1].node_noise_share(TreeNode(0, 1))


def test_a_state_stored_by_the_previous_format_is_still_read() -> None:
    # Arrange: a tree state as version 2 wrote it (no coefficients, no encoder).
    config = TreeNoiseConfig(num_aggregators=3, threshold=2, length=4, block_stddev=5.0)
    fleet = _fleet(config)
    for dealer in fleet.values():
        for deal in dealer.deal(1):
            fleet[deal.recipient].receive(deal)
    data = fleet[1].to_bytes()
    (size,) = struct.unpack_from("<I", data, 4)
    header = json.loads(data[8 : 8 + size])
    assert header["version"] == 3
    header["version"] = 2
    del header["coefficients"], header["encoder"]
    old = json.dumps(header, sort_keys=True).encode()
    stored = data[:4] + struct.pack("<I", len(old)) + old + data[8 + size :]
    # Act
    restored = TreeNoiseAggregator.from_bytes(stored, config=config, index=1)
    # Assert
    node = TreeNode(0, 1)
    assert np.array_equal(
        restored.node_noise_share(node).values, fleet[1].node_noise_share(node).values
    )
    other = TreeNoiseConfig(
        num_aggregators=3,
        threshold=2,
        length=4,
        block_stddev=5.0,
        schedule="toeplitz",
        coefficients=COEFFICIENTS,
    )
    with pytest.raises(StorageError, match="coefficients"):
        TreeNoiseAggregator.from_bytes(stored, config=other, index=1)


def test_coefficients_belong_to_the_toeplitz_schedule_only() -> None:
    with pytest.raises(ConfigurationError, match="takes no coefficients"):
        TreeNoiseConfig(
            num_aggregators=3, threshold=2, length=4, block_stddev=5.0, coefficients=(1, 2)
        )
    with pytest.raises(ConfigurationError, match="c_0 > 0"):
        TreeNoiseConfig(
            num_aggregators=3, threshold=2, length=4, block_stddev=5.0, schedule="toeplitz"
        )


LAYOUT = ContributionLayout(
    3,
    SecureAggregationConfig(
        threshold=2, num_aggregators=3, norm_bound=10.0, max_samples_per_client=100
    ),
)


def _banded(*, bits: int, z: float = 1.0) -> DpConfig:
    from veilfl.privacy.mechanisms import BandedOptions

    return DpConfig(
        placement="distributed",
        noise_multiplier=z,
        clip_norm=10.0,
        mechanism="banded",
        max_participations=2,
        min_separation=3,
        options=BandedOptions(scale_bits=bits),
    )


def test_the_banded_mechanism_plans_the_toeplitz_schedule_the_aggregators_deal() -> None:
    dp = _banded(bits=6)
    mechanism = dp.privacy_mechanism
    config = dealt_noise_config(dp, layout=LAYOUT, expected_clients=2)
    strategy = mechanism.strategy(dp)  # type: ignore[attr-defined]
    schedule = mechanism.release_schedule(dp, rounds=4)
    assert isinstance(schedule, ToeplitzReleaseSchedule)
    assert config.schedule == "toeplitz" and config.coefficients == strategy.coefficients
    assert config.encoded == LAYOUT.dimension  # the extra coordinates stay plain sums
    assert schedule.terms(4).scale == 1  # the aggregators never divide
    assert schedule.terms(4).coefficients == strategy.coefficients
    assert config.block_stddev == pytest.approx(1.0 * LAYOUT.bounds.norm_bound * 2**6)
    epsilon = mechanism.planned_epsilon(dp, rounds=4, sample_rate=1.0)
    assert mechanism.epsilon_against_coordinator(dp, rounds=4, expected_clients=2) == epsilon


def test_a_release_that_could_wrap_around_the_field_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigurationError, match=r"beyond the field's .*lower its scale bits"):
        dealt_noise_config(_banded(bits=24), layout=LAYOUT, expected_clients=2)
