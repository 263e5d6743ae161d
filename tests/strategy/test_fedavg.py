"""FedAvg aggregation against a hand-computed weighted mean (an oracle test)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError, ProtocolError, UpdateRejectedError
from veilfl.strategy import Aggregate, FedAvg, WeightedSum
from veilfl.tensors import FloatArray


class _NoHistory:
    def weights_at(self, version: int) -> FloatArray:
        raise AssertionError("FedAvg reads no earlier model")


def _oracle_mean(deltas: list[list[float]], weights: list[int]) -> list[float]:
    """One coordinate at a time, in plain Python floats."""
    total = sum(weights)
    return [
        sum(w * d[i] for d, w in zip(deltas, weights, strict=True)) / total
        for i in range(len(deltas[0]))
    ]


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 20),
    weights=st.lists(st.integers(1, 10_000), min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
    server_lr=st.floats(0.1, 2.0),
)
def test_fedavg_equals_hand_computed_weighted_mean(
    size: int, weights: list[int], seed: int, server_lr: float
) -> None:
    # Arrange
    rng = np.random.default_rng(seed)
    deltas = [rng.normal(size=size).astype(np.float32) for _ in weights]
    start = rng.normal(size=size).astype(np.float32)
    running = WeightedSum(size)
    # Act
    for delta, weight in zip(deltas, weights, strict=True):
        running.add(delta, weight=weight)
    aggregate = Aggregate(
        weighted_delta_sum=running.vector(),
        total_weight=running.total_weight,
        participants=tuple(f"c{i}" for i in range(len(weights))),
        trained_versions=(0,) * len(weights),
    )
    new = FedAvg(server_learning_rate=server_lr).apply(start, aggregate, history=_NoHistory())
    # Assert
    mean = _oracle_mean([d.tolist() for d in deltas], weights)
    expected = [float(s) + server_lr * m for s, m in zip(start.tolist(), mean, strict=True)]
    np.testing.assert_allclose(new, np.array(expected), rtol=1e-5, atol=1e-5)
    assert running.count == len(weights)


def test_weighted_sum_rejects_wrong_length_and_bad_weight() -> None:
    running = WeightedSum(3)
    with pytest.raises(UpdateRejectedError, match="cannot be added"):
        running.add(np.zeros(4, dtype=np.float32), weight=1.0)
    with pytest.raises(UpdateRejectedError, match="weight"):
        running.add(np.zeros(3, dtype=np.float32), weight=0.0)
    assert running.count == 0


def test_empty_sum_has_no_aggregate() -> None:
    with pytest.raises(ProtocolError, match="nothing to aggregate"):
        WeightedSum(3).vector()


def test_server_learning_rate_must_be_positive() -> None:
    with pytest.raises(ConfigurationError):
        FedAvg(server_learning_rate=0.0)
