"""Server momentum (FedAvgM) against a two-round example computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError, StorageError, UpdateRejectedError
from veilfl.strategy import Aggregate, FedAvg, FedBuff, LearningRateSchedule, ServerSgd
from veilfl.strategy.momentum import ServerSgdState
from veilfl.tensors import FloatArray


class _NoHistory:
    def weights_at(self, version: int) -> FloatArray:
        raise AssertionError("server momentum reads no earlier model")


START = np.array([1.0, 0.0], dtype=np.float32)
# Two clients each round; weights 1 and 1, so the mean delta is half the sum.
ROUND_SUMS = ([2.0, -4.0], [1.0, 2.0])  # mean deltas [1, -2] and [0.5, 1]


def _aggregate(weighted_sum: list[float], *, total_weight: float = 2.0) -> Aggregate:
    return Aggregate(
        weighted_delta_sum=np.array(weighted_sum, dtype=np.float64),
        total_weight=total_weight,
        participants=("a", "b"),
        trained_versions=(0, 0),
    )


def _two_rounds(strategy: ServerSgd, *, total_weight: float = 2.0) -> list[FloatArray]:
    models, current = [], START
    for weighted_sum in ROUND_SUMS:
        current = strategy.apply(
            current, _aggregate(weighted_sum, total_weight=total_weight), history=_NoHistory()
        )
        models.append(current)
    return models


def test_heavy_ball_momentum_matches_the_hand_computed_rounds() -> None:
    # m1 = [1, -2]; w1 = [1, 0] + 0.5 m1 = [1.5, -1]
    # m2 = 0.9 m1 + [0.5, 1] = [1.4, -0.8]; w2 = w1 + 0.5 m2 = [2.2, -1.4]
    strategy = ServerSgd(FedAvg(server_learning_rate=0.5), momentum=0.9)

    first, second = _two_rounds(strategy)

    np.testing.assert_allclose(first, [1.5, -1.0], rtol=1e-6)
    np.testing.assert_allclose(second, [2.2, -1.4], rtol=1e-6)
    state = strategy.state()
    assert state.steps == 2 and state.buffer is not None
    np.testing.assert_allclose(state.buffer, [1.4, -0.8], rtol=1e-12)
    assert strategy.name == "fedavgm"


def test_nesterov_momentum_matches_the_hand_computed_rounds() -> None:
    # w1 = [1, 0] + 0.5 ([1, -2] + 0.9 [1, -2]) = [1.95, -1.9]
    # w2 = w1 + 0.5 ([0.5, 1] + 0.9 [1.4, -0.8]) = [2.83, -1.76]
    strategy = ServerSgd(FedAvg(server_learning_rate=0.5), momentum=0.9, nesterov=True)

    first, second = _two_rounds(strategy)

    np.testing.assert_allclose(first, [1.95, -1.9], rtol=1e-6)
    np.testing.assert_allclose(second, [2.83, -1.76], rtol=1e-6)


def test_the_schedule_scales_the_momentum_step_by_round() -> None:
    # Linear over 2 rounds to half: multipliers 1 and 0.75.
    # w2 = [1.5, -1] + 0.5 * 0.75 * [1.4, -0.8] = [2.025, -1.3]
    schedule = LearningRateSchedule(name="linear", total_steps=2, final_fraction=0.5)
    strategy = ServerSgd(FedAvg(server_learning_rate=0.5), momentum=0.9, schedule=schedule)

    _, second = _two_rounds(strategy)

    np.testing.assert_allclose(second, [2.025, -1.3], rtol=1e-6)


def test_fedbuff_momentum_steps_along_the_buffer_mean() -> None:
    """FedBuff's pseudo-gradient divides by the buffer's size, not its total weight."""
    strategy = ServerSgd(FedBuff(server_learning_rate=0.5), momentum=0.9)

    _, second = _two_rounds(strategy, total_weight=1.5)

    np.testing.assert_allclose(second, [2.2, -1.4], rtol=1e-6)
    assert strategy.name == "fedbuffm"


def test_without_momentum_or_schedule_it_is_the_inner_strategy() -> None:
    plain = FedAvg(server_learning_rate=0.7)
    wrapped = ServerSgd(plain)

    for weighted_sum in ROUND_SUMS:
        aggregate = _aggregate(weighted_sum)
        np.testing.assert_array_equal(
            wrapped.apply(START, aggregate, history=_NoHistory()),
            plain.apply(START, aggregate, history=_NoHistory()),
        )
    assert wrapped.name == "fedavg" and wrapped.state().buffer is None


def test_a_restored_strategy_continues_with_the_same_buffer() -> None:
    straight = ServerSgd(FedAvg(server_learning_rate=0.5), momentum=0.9)
    first, second = _two_rounds(straight)
    halfway = ServerSgd(FedAvg(server_learning_rate=0.5), momentum=0.9)
    halfway.apply(START, _aggregate(ROUND_SUMS[0]), history=_NoHistory())

    resumed = ServerSgd(FedAvg(server_learning_rate=0.5), momentum=0.9)
    resumed.restore(halfway.state().to_bytes())
    again = resumed.apply(first, _aggregate(ROUND_SUMS[1]), history=_NoHistory())

    np.testing.assert_array_equal(again, second)
    assert resumed.steps == 2


def test_a_state_saved_with_other_settings_is_refused() -> None:
    saved = ServerSgd(FedAvg(server_learning_rate=0.5), momentum=0.9)
    saved.apply(START, _aggregate(ROUND_SUMS[0]), history=_NoHistory())

    other = ServerSgd(FedAvg(server_learning_rate=0.5), momentum=0.8)
    with pytest.raises(StorageError, match="resume with the settings the run was started with"):
        other.restore(saved.state().to_bytes())
    with pytest.raises(StorageError, match="does not start as one"):
        other.restore(b"VFOPT1....")
    truncated = saved.state().to_bytes()[:-8]
    with pytest.raises(StorageError, match="the run store is damaged"):
        other.restore(truncated)


def test_the_state_round_trips_through_bytes_exactly() -> None:
    strategy = ServerSgd(FedAvg(server_learning_rate=0.5), momentum=0.9)
    _two_rounds(strategy)

    back = ServerSgdState.from_bytes(strategy.state().to_bytes())

    assert back.steps == 2 and dict(back.settings) == strategy.settings()
    assert back.buffer is not None
    np.testing.assert_array_equal(back.buffer, strategy.state().buffer)  # type: ignore[arg-type]


def test_a_non_finite_aggregate_is_refused_and_leaves_the_buffer() -> None:
    strategy = ServerSgd(FedAvg(server_learning_rate=0.5), momentum=0.9)
    strategy.apply(START, _aggregate(ROUND_SUMS[0]), history=_NoHistory())
    before = strategy.state().to_bytes()

    with pytest.raises(UpdateRejectedError, match="NaN or infinite"):
        strategy.apply(START, _aggregate([np.nan, 1.0]), history=_NoHistory())

    assert strategy.state().to_bytes() == before


@pytest.mark.parametrize("beta", [-0.1, 1.0, float("nan")])
def test_a_momentum_out_of_range_is_refused_in_one_line(beta: float) -> None:
    with pytest.raises(ConfigurationError, match=r"^--server-momentum must lie in \[0, 1\)"):
        ServerSgd(FedAvg(), momentum=beta)


@settings(max_examples=40, deadline=None)
@given(
    rounds=st.lists(st.lists(st.floats(-10, 10), min_size=3, max_size=3), min_size=1, max_size=6),
    beta=st.floats(0, 0.99),
    nesterov=st.booleans(),
    rate=st.floats(0.01, 2),
)
def test_momentum_equals_a_one_coordinate_at_a_time_loop(
    rounds: list[list[float]], beta: float, nesterov: bool, rate: float
) -> None:
    schedule = LearningRateSchedule(name="cosine", total_steps=len(rounds), final_fraction=0.1)
    strategy = ServerSgd(
        FedAvg(server_learning_rate=rate), momentum=beta, nesterov=nesterov, schedule=schedule
    )
    model = np.zeros(3, dtype=np.float32)
    expected = [0.0, 0.0, 0.0]
    buffer = [0.0, 0.0, 0.0]

    for t, mean in enumerate(rounds):
        model = strategy.apply(model, _aggregate([2 * x for x in mean]), history=_NoHistory())
        eta = rate * schedule.multiplier(t)
        for i, g in enumerate(mean):
            buffer[i] = beta * buffer[i] + g
            step = (g + beta * buffer[i]) if nesterov and beta > 0 else buffer[i]
            expected[i] = float(np.float32(expected[i] + eta * step))

    np.testing.assert_allclose(model, expected, rtol=1e-5, atol=1e-4)
