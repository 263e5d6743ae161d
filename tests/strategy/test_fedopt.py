"""FedAdagrad, FedYogi and FedAdam (Reddi et al. 2021, Algorithm 2): hand-computed
steps, a per-coordinate oracle, and state that survives a restart exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError, StorageError, UpdateRejectedError
from veilfl.strategy.fedopt import (
    SERVER_OPTIMIZERS,
    FedAdagrad,
    FedAdam,
    FedOpt,
    FedYogi,
    server_optimizer,
)
from veilfl.strategy.schedule import LearningRateSchedule


def _vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_fedadam_first_two_steps_by_hand() -> None:
    # eta 0.1, beta1 0.5, beta2 0.75, tau 0.5; x = [1, -2], deltas [2, 0] then [-1, 4].
    opt = FedAdam(server_learning_rate=0.1, beta1=0.5, beta2=0.75, tau=0.5)
    x0 = np.array([1.0, -2.0], dtype=np.float32)

    x1 = opt.step(x0, _vec(2.0, 0.0))
    # m = [1, 0]; v = 0.75 * 0.25 + 0.25 * [4, 0] = [1.1875, 0.1875]
    expected1 = [1.0 + 0.1 * 1.0 / (math.sqrt(1.1875) + 0.5), -2.0]
    np.testing.assert_allclose(x1, expected1, rtol=1e-6)

    x2 = opt.step(x1, _vec(-1.0, 4.0))
    # m = [0.5 - 0.5, 0 + 2] = [0, 2]; v = 0.75 * v + 0.25 * [1, 16]
    v2 = [0.75 * 1.1875 + 0.25, 0.75 * 0.1875 + 4.0]
    expected2 = [expected1[0], -2.0 + 0.1 * 2.0 / (math.sqrt(v2[1]) + 0.5)]
    np.testing.assert_allclose(x2, expected2, rtol=1e-6)
    assert opt.steps == 2


def test_fedadagrad_accumulates_squares_without_decay() -> None:
    opt = FedAdagrad(server_learning_rate=1.0, beta1=0.0, tau=1.0)
    x = np.zeros(1, dtype=np.float32)

    x = opt.step(x, _vec(3.0))  # m = 3, v = 1 + 9 = 10
    first = 3.0 / (math.sqrt(10.0) + 1.0)
    np.testing.assert_allclose(x, [first], rtol=1e-6)
    x = opt.step(x, _vec(-4.0))  # m = -4, v = 10 + 16 = 26
    np.testing.assert_allclose(x, [first - 4.0 / (math.sqrt(26.0) + 1.0)], rtol=1e-6)


def test_fedyogi_moves_v_towards_the_squared_delta_by_a_fixed_fraction() -> None:
    # tau 1: v starts at 1. Coordinate 0: delta 2, v < delta^2 so v grows by
    # (1 - beta2) * 4; coordinate 1: delta 0.5, v > delta^2 so v shrinks by (1 - beta2) * 0.25.
    opt = FedYogi(server_learning_rate=0.2, beta1=0.0, beta2=0.5, tau=1.0)
    x = opt.step(np.zeros(2, dtype=np.float32), _vec(2.0, 0.5))

    v = [1.0 + 0.5 * 4.0, 1.0 - 0.5 * 0.25]
    expected = [0.2 * 2.0 / (math.sqrt(v[0]) + 1.0), 0.2 * 0.5 / (math.sqrt(v[1]) + 1.0)]
    np.testing.assert_allclose(x, expected, rtol=1e-6)


def _oracle(kind: str, hyper: dict[str, float], x0: list[float], deltas: list[list[float]]):
    """The paper's Algorithm 2, one coordinate at a time, in plain Python floats."""
    eta, b1, tau = hyper["server_learning_rate"], hyper["beta1"], hyper["tau"]
    b2 = hyper.get("beta2", 0.0)
    x = list(x0)
    m = [0.0] * len(x)
    v = [tau * tau] * len(x)
    for delta in deltas:
        for i, d in enumerate(delta):
            m[i] = b1 * m[i] + (1 - b1) * d
            if kind == "fedadagrad":
                v[i] = v[i] + d * d
            elif kind == "fedyogi":
                sign = (v[i] > d * d) - (v[i] < d * d)
                v[i] = v[i] - (1 - b2) * d * d * sign
            else:
                v[i] = b2 * v[i] + (1 - b2) * d * d
            x[i] = float(np.float32(x[i] + eta * m[i] / (math.sqrt(v[i]) + tau)))
    return x


finite = st.floats(-10, 10, allow_nan=False, width=32)


@given(
    kind=st.sampled_from(sorted(SERVER_OPTIMIZERS)),
    size=st.integers(1, 6),
    rounds=st.integers(1, 4),
    data=st.data(),
)
def test_apply_matches_the_per_coordinate_oracle(
    kind: str, size: int, rounds: int, data: st.DataObject
) -> None:
    hyper = {
        "server_learning_rate": data.draw(st.floats(1e-3, 1.0)),
        "beta1": data.draw(st.floats(0.0, 0.99)),
        "tau": data.draw(st.floats(1e-4, 1.0)),
    }
    if kind != "fedadagrad":
        hyper["beta2"] = data.draw(st.floats(0.0, 0.999))
    x0 = data.draw(st.lists(finite, min_size=size, max_size=size))
    deltas = [data.draw(st.lists(finite, min_size=size, max_size=size)) for _ in range(rounds)]
    opt = server_optimizer(kind, **hyper)

    x = np.array(x0, dtype=np.float32)
    for delta in deltas:
        x = opt.step(x, np.array(delta, dtype=np.float64))

    np.testing.assert_allclose(x, _oracle(kind, hyper, x0, deltas), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(SERVER_OPTIMIZERS))
def test_state_survives_a_json_round_trip_exactly(kind: str) -> None:
    rng = np.random.default_rng(1)
    opt = server_optimizer(kind, server_learning_rate=0.05)
    x = rng.normal(size=7).astype(np.float32)
    for _ in range(3):
        x = opt.step(x, rng.normal(size=7))

    restored = FedOpt.from_json(json.loads(json.dumps(opt.to_json())))
    delta = rng.normal(size=7)

    assert type(restored) is type(opt) and restored.steps == 3
    assert restored.hyperparameters() == opt.hyperparameters()
    np.testing.assert_array_equal(restored.step(x, delta), opt.step(x, delta))


def test_a_fresh_optimiser_round_trips_without_state() -> None:
    restored = FedOpt.from_json(FedYogi(server_learning_rate=0.1).to_json())
    assert isinstance(restored, FedYogi) and restored.steps == 0


def test_saved_state_of_another_model_size_is_refused() -> None:
    saved = FedAdam(server_learning_rate=0.1)
    saved.step(np.zeros(3, dtype=np.float32), _vec(1, 2, 3))
    state = saved.to_json() | {"size": 4}
    with pytest.raises(StorageError, match="holds 3 values, not 4"):
        FedOpt.from_json(state)


def test_a_damaged_saved_state_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="does not parse"):
        FedOpt.from_json({"kind": "fedsomething"})


def test_a_delta_that_does_not_fit_is_refused_and_state_kept() -> None:
    opt = FedAdam(server_learning_rate=0.1)
    opt.step(np.zeros(2, dtype=np.float32), _vec(1, 1))
    before = opt.to_json()
    with pytest.raises(UpdateRejectedError, match="length"):
        opt.step(np.zeros(2, dtype=np.float32), _vec(1, 1, 1))
    with pytest.raises(UpdateRejectedError, match="another model"):
        opt.step(np.zeros(3, dtype=np.float32), _vec(1, 1, 1))
    with pytest.raises(UpdateRejectedError, match="NaN"):
        opt.step(np.zeros(2, dtype=np.float32), _vec(1, math.nan))
    assert opt.to_json() == before


@pytest.mark.parametrize(
    ("hyper", "message"),
    [
        ({"server_learning_rate": 0.0}, "server learning rate"),
        ({"server_learning_rate": 0.1, "beta1": 1.0}, "beta1"),
        ({"server_learning_rate": 0.1, "beta2": -0.1}, "beta2"),
        ({"server_learning_rate": 0.1, "tau": math.inf}, "tau"),
    ],
)
def test_hyperparameters_out_of_range_are_refused(hyper: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        FedAdam(**hyper)


def test_the_factory_names_the_known_optimisers() -> None:
    with pytest.raises(ConfigurationError, match="fedadagrad, fedadam, fedyogi"):
        server_optimizer("fedsgd", server_learning_rate=0.1)
    with pytest.raises(ConfigurationError, match="takes server_learning_rate, beta1 and tau"):
        server_optimizer("fedadagrad", server_learning_rate=0.1, beta2=0.9)
    assert isinstance(server_optimizer("FedYogi", server_learning_rate=0.1), FedYogi)


def test_a_server_optimiser_is_a_server_strategy_on_the_aggregates_mean_delta() -> None:
    from veilfl.strategy.aggregate import Aggregate

    aggregate = Aggregate(
        weighted_delta_sum=np.array([4.0, -2.0]),
        total_weight=2.0,
        participants=("a", "b"),
        trained_versions=(0, 0),
    )
    start = np.zeros(2, dtype=np.float32)
    via_strategy = FedAdam(server_learning_rate=0.1).apply(start, aggregate, history=None)  # type: ignore[arg-type]
    via_step = FedAdam(server_learning_rate=0.1).step(start, aggregate.mean_delta())
    np.testing.assert_array_equal(via_strategy, via_step)


@pytest.mark.parametrize("kind", sorted(SERVER_OPTIMIZERS))
def test_a_restored_snapshot_continues_exactly_like_the_original(kind: str) -> None:
    rng = np.random.default_rng(2)
    opt = server_optimizer(kind, server_learning_rate=0.05)
    x = rng.normal(size=5).astype(np.float32)
    for _ in range(2):
        x = opt.step(x, rng.normal(size=5))
    saved = opt.state().to_bytes()

    restored = server_optimizer(kind, server_learning_rate=0.05)
    restored.restore(saved)
    deltas = [rng.normal(size=5) for _ in range(3)]
    a, b = x, x
    for delta in deltas:
        a, b = opt.step(a, delta), restored.step(b, delta)

    np.testing.assert_array_equal(a, b)
    assert restored.steps == opt.steps == 5


def test_a_snapshot_is_not_changed_by_later_steps() -> None:
    opt = FedYogi(server_learning_rate=0.1)
    opt.step(np.zeros(2, dtype=np.float32), _vec(1.0, -1.0))
    snapshot = opt.state()
    first = snapshot.to_bytes()

    opt.step(np.zeros(2, dtype=np.float32), _vec(3.0, 5.0))

    assert snapshot.to_bytes() == first and snapshot.steps == 1
    assert opt.state().to_bytes() != first


def test_a_fresh_optimisers_snapshot_round_trips_without_moments() -> None:
    restored = FedAdam(server_learning_rate=0.1)
    restored.restore(FedAdam(server_learning_rate=0.1).state().to_bytes())
    assert restored.steps == 0 and restored.state().m is None


def test_restoring_another_optimisers_or_settings_state_is_refused() -> None:
    saved = FedAdam(server_learning_rate=0.1)
    saved.step(np.zeros(2, dtype=np.float32), _vec(1.0, 2.0))
    data = saved.state().to_bytes()
    with pytest.raises(StorageError, match=r"fedadam .* not fedyogi"):
        FedYogi(server_learning_rate=0.1).restore(data)
    with pytest.raises(StorageError, match="resume with the settings"):
        FedAdam(server_learning_rate=0.2).restore(data)


@pytest.mark.parametrize("cut", [0, 3, 10, -8])
def test_damaged_state_bytes_are_a_storage_error(cut: int) -> None:
    saved = FedAdagrad(server_learning_rate=0.1)
    saved.step(np.zeros(2, dtype=np.float32), _vec(1.0, 2.0))
    data = saved.state().to_bytes()
    with pytest.raises(StorageError):
        FedAdagrad(server_learning_rate=0.1).restore(data[:cut])


def test_the_schedule_scales_each_adaptive_step_by_its_multiplier() -> None:
    """The moments do not depend on η, so each scheduled step is the constant one times
    the schedule's multiplier at that step."""
    schedule = LearningRateSchedule(name="step", total_steps=4, decay_factor=0.5, step_size=1)
    scheduled = FedAdam(server_learning_rate=0.1, tau=0.01, schedule=schedule)
    constant = FedAdam(server_learning_rate=0.1, tau=0.01)
    x = np.zeros(3, dtype=np.float32)
    for t, delta in enumerate(([1.0, -2.0, 0.5], [0.5, 1.0, -1.0], [2.0, 0.0, 1.0])):
        mean = np.array(delta, dtype=np.float64)
        with_schedule = scheduled.step(x, mean).astype(np.float64) - x
        without = constant.step(x, mean).astype(np.float64) - x
        np.testing.assert_allclose(with_schedule, 0.5**t * without, rtol=1e-5)
