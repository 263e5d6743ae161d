"""The sans-I/O coordinator core: rounds from updates to the next model, with the
commands it issues and the events that answer them."""

from __future__ import annotations

import numpy as np
import pytest
from tests.tiny_coordinator import settle, sync_core

from veilfl.errors import ProtocolError, UpdateRejectedError
from veilfl.protocol.aggregation import PlaintextAggregation
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.coordinator import Coordinator, CoordinatorPhase
from veilfl.protocol.effects import PersistRound, RoundCompleted, RoundPersisted
from veilfl.protocol.messages import TaskKind, UpdateHeader
from veilfl.strategy.fedavg import FedAvg
from veilfl.tensors import Weights, spec_of


def _weights(value: float) -> Weights:
    return {
        "a": np.full((2, 3), value, dtype=np.float32),
        "b": np.full((4,), value, dtype=np.float32),
    }


def _coordinator(*, clients_per_round: int = 3, server_lr: float = 1.0) -> Coordinator:
    return sync_core(
        _weights(0.0),
        strategy=FedAvg(server_learning_rate=server_lr),
        num_rounds=2,
        clients_per_round=clients_per_round,
        min_clients=2,
    )


def _header(client: str, samples: int, *, round_id: int = 1, version: int = 0) -> UpdateHeader:
    return UpdateHeader(
        client_id=client, round_id=round_id, base_version=version, num_samples=samples, loss=2.0
    )


def _open_round(coordinator: Coordinator, clients: str = "xyz") -> None:
    for client in clients:
        coordinator.join(client, now=0.0)
    coordinator.tick(now=0.0)


def test_round_produces_the_sample_weighted_mean() -> None:
    coordinator = _coordinator(server_lr=0.5)
    contributions = {"x": (10, 1.0), "y": (30, 3.0), "z": (60, -1.0)}
    _open_round(coordinator)
    for client, (samples, value) in contributions.items():
        assert coordinator.task_for(client, now=0.0).kind is TaskKind.TRAIN
        coordinator.submit_plaintext_update(_header(client, samples), _weights(value), now=1.0)
    (outcome,) = settle(coordinator, now=1.0)
    expected_mean = (10 * 1.0 + 30 * 3.0 + 60 * -1.0) / 100
    model = coordinator.global_model()
    assert model.version == 1 == outcome.new_version
    np.testing.assert_allclose(model.weights["a"], 0.5 * expected_mean, rtol=1e-6)
    (metrics,) = coordinator.history
    assert metrics.num_clients == 3
    assert metrics.train_loss == pytest.approx(2.0)


def test_the_new_model_is_served_only_once_it_is_recorded() -> None:
    coordinator = _coordinator()
    _open_round(coordinator)
    for client in "xyz":
        coordinator.submit_plaintext_update(_header(client, 5), _weights(1.0), now=1.0)
    (persist,) = coordinator.drain()
    assert isinstance(persist, PersistRound)
    assert coordinator.phase is CoordinatorPhase.PERSISTING
    assert coordinator.global_model().version == 0  # not served yet
    assert coordinator.task_for("x", now=2.0).kind is TaskKind.WAIT
    coordinator.handle(RoundPersisted(round_id=7), now=2.0)  # about another round: ignored
    assert coordinator.global_model().version == 0
    coordinator.handle(RoundPersisted(round_id=1), now=2.0)
    assert coordinator.global_model().version == 1
    completed = [e for e in coordinator.drain() if isinstance(e, RoundCompleted)]
    assert [c.outcome.cohort.round_id for c in completed] == [1]
    assert coordinator.phase is CoordinatorPhase.COLLECTING


def test_the_core_reads_no_clock_and_does_no_io_it_only_queues_commands() -> None:
    coordinator = _coordinator()
    _open_round(coordinator)
    for client in "xy":
        coordinator.submit_plaintext_update(_header(client, 5), _weights(1.0), now=1.0)
    assert coordinator.drain() == []  # z has not reported and the deadline is far
    coordinator.tick(now=1_000.0)  # the deadline passed: the round closes with x and y
    effects = coordinator.drain()
    assert [type(e) for e in effects] == [PersistRound]
    assert effects[0].outcome.cohort.participant_ids == ("x", "y")  # type: ignore[union-attr]


def test_wrong_shapes_are_rejected_and_the_round_is_untouched() -> None:
    coordinator = _coordinator()
    _open_round(coordinator)
    bad = {"a": np.zeros((3, 2), dtype=np.float32), "b": np.zeros(4, dtype=np.float32)}
    before = coordinator.status()
    with pytest.raises(UpdateRejectedError, match="shape"):
        coordinator.submit_plaintext_update(_header("x", 5), bad, now=0.0)
    assert coordinator.status() == before
    # The client can still send a good update afterwards.
    assert coordinator.submit_plaintext_update(_header("x", 5), _weights(1.0), now=0.0)


def test_non_finite_update_is_rejected() -> None:
    coordinator = _coordinator()
    _open_round(coordinator)
    with pytest.raises(UpdateRejectedError, match="NaN"):
        coordinator.submit_plaintext_update(_header("x", 5), _weights(float("nan")), now=0.0)
    assert coordinator.status()["reported"] == 0


def test_duplicate_upload_does_not_count_twice() -> None:
    coordinator = _coordinator()
    _open_round(coordinator)
    assert coordinator.submit_plaintext_update(_header("x", 5), _weights(1.0), now=0.0)
    assert not coordinator.submit_plaintext_update(_header("x", 5), _weights(9.0), now=0.0)
    coordinator.submit_plaintext_update(_header("y", 5), _weights(3.0), now=0.0)
    coordinator.tick(now=1000.0)  # deadline: close with x and y
    settle(coordinator, now=1000.0)
    np.testing.assert_allclose(coordinator.global_model().weights["b"], 2.0)


def test_plaintext_aggregation_refuses_a_participant_list_it_did_not_sum() -> None:
    spec = spec_of(_weights(0.0))
    aggregation = PlaintextAggregation(spec)
    aggregation.open_cohort(1)
    aggregation.add(_header("x", 1), _weights(1.0))
    closed = ClosedCohort(
        round_id=1, base_version=0, participants=(), opened_at=0.0, closed_at=1.0, sampled=1
    )
    with pytest.raises(ProtocolError, match="does not match"):
        aggregation.begin(closed)
