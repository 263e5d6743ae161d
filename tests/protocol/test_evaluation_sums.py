"""Federated evaluation sums: validated, carried in a plaintext update's metadata, and
added up by plaintext aggregation as example-weighted means."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilfl.errors import WireFormatError
from veilfl.protocol.messages import UpdateHeader
from veilfl.protocol.metrics import FederatedEvaluation, RoundMetrics


def test_an_evaluation_claiming_more_correct_than_examples_is_refused() -> None:
    with pytest.raises(WireFormatError, match="correct count"):
        FederatedEvaluation(examples=10, loss_sum=3.0, correct=11)


def test_a_plaintext_update_with_an_inflated_correct_count_does_not_parse() -> None:
    metadata = UpdateHeader(
        client_id="c",
        round_id=1,
        base_version=0,
        num_samples=5,
        loss=0.5,
        evaluation=FederatedEvaluation(examples=10, loss_sum=3.0, correct=4),
    ).to_metadata()
    metadata["eval_correct"] = "11.0"
    with pytest.raises(WireFormatError):
        UpdateHeader.from_metadata(metadata)


def test_the_evaluation_travels_in_the_update_metadata() -> None:
    evaluation = FederatedEvaluation(examples=7, loss_sum=2.25, correct=3)
    header = UpdateHeader(
        client_id="c", round_id=2, base_version=1, num_samples=5, loss=0.5, evaluation=evaluation
    )
    assert UpdateHeader.from_metadata(header.to_metadata()).evaluation == evaluation
    bare = UpdateHeader(client_id="c", round_id=2, base_version=1, num_samples=5, loss=0.5)
    assert UpdateHeader.from_metadata(bare.to_metadata()).evaluation is None


@given(
    st.lists(
        st.tuples(st.integers(1, 1000), st.floats(0, 10), st.floats(0, 1)), min_size=1, max_size=8
    )
)
def test_the_total_gives_the_example_weighted_means(
    parts: list[tuple[int, float, float]],
) -> None:
    evaluations = [
        FederatedEvaluation.of_means(loss=loss, accuracy=acc, examples=n) for n, loss, acc in parts
    ]
    total = FederatedEvaluation.total(evaluations)
    counts = np.array([n for n, _, _ in parts], dtype=np.float64)
    assert total is not None
    assert total.examples == counts.sum()
    assert total.loss == pytest.approx(np.average([p[1] for p in parts], weights=counts))
    assert total.accuracy == pytest.approx(
        sum(round(acc * n) for n, _, acc in parts) / counts.sum()
    )


def test_no_examples_give_no_total_and_leave_the_metrics_alone() -> None:
    assert FederatedEvaluation.total([]) is None
    metrics = RoundMetrics(
        round_id=1, num_clients=1, train_loss=None, test_loss=None, test_accuracy=None, seconds=1
    )
    assert metrics.with_federated(None) == metrics
    filled = metrics.with_federated(FederatedEvaluation(examples=4, loss_sum=2.0, correct=1))
    assert (filled.federated_examples, filled.federated_loss, filled.federated_accuracy) == (
        4,
        0.5,
        0.25,
    )
    assert math.isnan(FederatedEvaluation(examples=0, loss_sum=0, correct=0).accuracy)


def test_sums_that_overflow_lose_the_metric_not_the_round() -> None:
    huge = FederatedEvaluation(examples=1e308, loss_sum=1e308, correct=0)
    assert FederatedEvaluation.total([huge, huge]) is None
