"""The transport-free coordinator: a full round from updates to the next model."""

from __future__ import annotations

import random

import numpy as np
import pytest

from veilfl.errors import ProtocolError, UpdateRejectedError
from veilfl.protocol.coordinator import PlaintextAggregation, SyncCoordinator
from veilfl.protocol.messages import TaskKind, UpdateHeader
from veilfl.protocol.metrics import Evaluation, RoundMetrics
from veilfl.protocol.sync_round import ClosedRound, RoundConfig, SyncRoundMachine
from veilfl.strategy.fedavg import FedAvg
from veilfl.tensors import Weights, spec_of


def _weights(value: float) -> Weights:
    return {
        "a": np.full((2, 3), value, dtype=np.float32),
        "b": np.full((4,), value, dtype=np.float32),
    }


class _MemoryRecorder:
    def __init__(self) -> None:
        self.rounds: list[tuple[int, int]] = []

    def record_round(
        self, metrics: RoundMetrics, closed: ClosedRound, *, new_version: int, weights: Weights
    ) -> None:
        self.rounds.append((closed.round_id, new_version))


def _coordinator(
    *, clients_per_round: int = 3, server_lr: float = 1.0, recorder: _MemoryRecorder | None = None
) -> SyncCoordinator:
    start = _weights(0.0)
    return SyncCoordinator(
        machine=SyncRoundMachine(
            RoundConfig(num_rounds=2, clients_per_round=clients_per_round, min_clients=2),
            rng=random.Random(0),
        ),
        spec=spec_of(start),
        initial_weights=start,
        aggregation=PlaintextAggregation(spec_of(start)),
        strategy=FedAvg(server_learning_rate=server_lr),
        evaluate=lambda w: Evaluation(loss=float(w["b"].sum()), accuracy=0.5),
        recorder=recorder,
    )


def _header(client: str, samples: int, *, round_id: int = 1, version: int = 0) -> UpdateHeader:
    return UpdateHeader(
        client_id=client, round_id=round_id, base_version=version, num_samples=samples, loss=2.0
    )


def test_round_produces_the_sample_weighted_mean_and_records_it() -> None:
    recorder = _MemoryRecorder()
    coordinator = _coordinator(server_lr=0.5, recorder=recorder)
    contributions = {"x": (10, 1.0), "y": (30, 3.0), "z": (60, -1.0)}
    for client in contributions:
        coordinator.join(client, now=0.0)
    for client, (samples, value) in contributions.items():
        assert coordinator.task_for(client, now=0.0).kind is TaskKind.TRAIN
        coordinator.submit_plaintext_update(_header(client, samples), _weights(value), now=1.0)
    expected_mean = (10 * 1.0 + 30 * 3.0 + 60 * -1.0) / 100
    model = coordinator.global_model()
    assert model.version == 1
    np.testing.assert_allclose(model.weights["a"], 0.5 * expected_mean, rtol=1e-6)
    assert recorder.rounds == [(1, 1)]
    (metrics,) = coordinator.history
    assert metrics.num_clients == 3
    assert metrics.test_accuracy == 0.5


def test_wrong_shapes_are_rejected_and_the_round_is_untouched() -> None:
    coordinator = _coordinator()
    for client in "xyz":
        coordinator.join(client, now=0.0)
    coordinator.tick(now=0.0)
    bad = {"a": np.zeros((3, 2), dtype=np.float32), "b": np.zeros(4, dtype=np.float32)}
    before = coordinator.machine.status()
    with pytest.raises(UpdateRejectedError, match="shape"):
        coordinator.submit_plaintext_update(_header("x", 5), bad, now=0.0)
    assert coordinator.machine.status() == before
    # The client can still send a good update afterwards.
    assert coordinator.submit_plaintext_update(_header("x", 5), _weights(1.0), now=0.0)


def test_non_finite_update_is_rejected() -> None:
    coordinator = _coordinator()
    for client in "xyz":
        coordinator.join(client, now=0.0)
    coordinator.tick(now=0.0)
    with pytest.raises(UpdateRejectedError, match="NaN"):
        coordinator.submit_plaintext_update(_header("x", 5), _weights(float("nan")), now=0.0)
    assert coordinator.machine.status().reported == 0


def test_duplicate_upload_does_not_count_twice() -> None:
    coordinator = _coordinator()
    for client in "xyz":
        coordinator.join(client, now=0.0)
    coordinator.tick(now=0.0)
    assert coordinator.submit_plaintext_update(_header("x", 5), _weights(1.0), now=0.0)
    assert not coordinator.submit_plaintext_update(_header("x", 5), _weights(9.0), now=0.0)
    coordinator.submit_plaintext_update(_header("y", 5), _weights(3.0), now=0.0)
    coordinator.tick(now=1000.0)  # deadline: close with x and y
    np.testing.assert_allclose(coordinator.global_model().weights["b"], 2.0)


def test_a_failed_round_close_is_retried_with_the_same_participants() -> None:
    class FlakyRecorder(_MemoryRecorder):
        fail = True

        def record_round(
            self, metrics: RoundMetrics, closed: ClosedRound, *, new_version: int, weights: Weights
        ) -> None:
            if self.fail:
                self.fail = False
                raise OSError("disk full")
            super().record_round(metrics, closed, new_version=new_version, weights=weights)

    recorder = FlakyRecorder()
    coordinator = _coordinator(recorder=recorder)
    for client in "xyz":
        coordinator.join(client, now=0.0)
    coordinator.tick(now=0.0)
    coordinator.submit_plaintext_update(_header("x", 5), _weights(1.0), now=0.0)
    coordinator.submit_plaintext_update(_header("y", 5), _weights(1.0), now=0.0)
    with pytest.raises(OSError):
        coordinator.submit_plaintext_update(_header("z", 5), _weights(1.0), now=0.0)
    assert coordinator.global_model().version == 0
    coordinator.tick(now=1.0)
    assert recorder.rounds == [(1, 1)]
    assert coordinator.global_model().version == 1


def test_plaintext_aggregation_refuses_a_participant_list_it_did_not_sum() -> None:
    spec = spec_of(_weights(0.0))
    aggregation = PlaintextAggregation(spec)
    aggregation.start_round(1)
    aggregation.add(_header("x", 1), _weights(1.0))
    closed = ClosedRound(
        round_id=1, base_version=0, participants=(), opened_at=0.0, closed_at=1.0, sampled=1
    )
    with pytest.raises(ProtocolError, match="does not match"):
        aggregation.aggregate(closed)
