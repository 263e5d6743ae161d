"""Which version is the best so far: accuracies maximised, losses minimised, federated
metrics scoring the model a round started from."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError
from veilfl.protocol.best_model import BestMetric, BestModel, BestModelKeeper
from veilfl.protocol.metrics import RoundMetrics


def _round(round_id: int, **values: float | None) -> RoundMetrics:
    return RoundMetrics(
        round_id=round_id,
        num_clients=2,
        train_loss=None,
        test_loss=values.get("test_loss"),
        test_accuracy=values.get("test_accuracy"),
        seconds=1.0,
        federated_loss=values.get("federated_loss"),
        federated_accuracy=values.get("federated_accuracy"),
        federated_examples=None if values.get("federated_loss") is None else 10.0,
    )


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12), st.sampled_from(list(BestMetric)))
def test_the_kept_version_is_the_oracles_best(values: list[float], metric: BestMetric) -> None:
    # Arrange: round r (producing version r) reports values[r - 1] for every metric.
    keeper = BestModelKeeper(metric)
    rounds = [
        _round(
            r,
            test_loss=v,
            test_accuracy=v,
            federated_loss=v,
            federated_accuracy=v,
        )
        for r, v in enumerate(values, start=1)
    ]
    # Act
    for r, metrics in enumerate(rounds, start=1):
        keeper.offer(metrics, version=r)
    # Assert: the first round holding the best value (ties keep the earlier version).
    chosen = BestMetric.FEDERATED_ACCURACY if metric is BestMetric.AUTO else metric
    best_value = min(values) if chosen.minimised else max(values)
    best_round = values.index(best_value) + 1
    assert keeper.best == BestModel(
        version=best_round - 1 if chosen.federated else best_round,
        round_id=best_round,
        metric=chosen,
        value=best_value,
    )


def test_auto_falls_back_to_test_accuracy_without_federated_evaluation() -> None:
    keeper = BestModelKeeper(BestMetric.AUTO)
    assert keeper.offer(_round(1), version=1) is None  # nothing evaluated yet
    assert keeper.offer(_round(2, test_accuracy=0.4), version=2) is not None
    keeper.offer(_round(3, test_accuracy=0.3, federated_accuracy=0.99), version=3)
    # Auto was decided by round 2: the federated value does not compete.
    assert keeper.best is not None
    assert (keeper.best.metric, keeper.best.version) == (BestMetric.TEST_ACCURACY, 2)


def test_a_resumed_keeper_beats_only_the_best_recorded_before() -> None:
    before = BestModel(version=4, round_id=4, metric=BestMetric.TEST_LOSS, value=0.2)
    keeper = BestModelKeeper(BestMetric.AUTO, best=before)
    assert keeper.offer(_round(5, test_loss=0.3, test_accuracy=0.99), version=5) is None
    assert keeper.offer(_round(6, test_loss=0.1), version=6) == BestModel(
        version=6, round_id=6, metric=BestMetric.TEST_LOSS, value=0.1
    )


def test_a_best_model_round_trips_through_its_metadata_and_names_are_checked() -> None:
    best = BestModel(version=3, round_id=4, metric=BestMetric.FEDERATED_LOSS, value=0.125)
    assert BestModel.from_metadata(best.to_metadata(), version=3) == best
    assert BestMetric.parse("Federated-Accuracy") is BestMetric.FEDERATED_ACCURACY
    with pytest.raises(ConfigurationError, match="choose one of auto"):
        BestMetric.parse("accuracy")
