"""When finishing a round fails (an aggregator is down or restarting), the accepted
updates stay accepted, the client's request still succeeds, and the next tick finishes
the round with the same participants; a round that cannot be finished within a round
timeout is abandoned and run again under a new round id."""

from __future__ import annotations

import numpy as np
import pytest
from tests.tiny_coordinator import sync_core

from veilfl.errors import TransportError
from veilfl.protocol.buffered import BufferConfig, BufferedMachine
from veilfl.protocol.buffered_coordinator import BufferedCoordinator
from veilfl.protocol.coordinator import PlaintextAggregation, RoundAggregate
from veilfl.protocol.messages import UpdateHeader
from veilfl.protocol.sync_round import ClosedRound
from veilfl.strategy.buffered import FedBuff
from veilfl.tensors import spec_of

START = {"w": np.zeros(3, np.float32)}


class FlakyAggregation(PlaintextAggregation):
    """Plaintext aggregation whose first ``failures`` attempts to aggregate fail, and
    that can never aggregate the rounds in ``lost``."""

    def __init__(self, failures: int, lost: frozenset[int] = frozenset()) -> None:
        super().__init__(spec_of(START))
        self.failures = failures
        self.lost = lost
        self.attempts: list[tuple[str, ...]] = []

    def aggregate(self, closed: ClosedRound) -> RoundAggregate:
        self.attempts.append(tuple(sorted(p.client_id for p in closed.participants)))
        if len(self.attempts) <= self.failures or closed.round_id in self.lost:
            raise TransportError("Aggregator 2 is unreachable.")
        return super().aggregate(closed)


def _header(client: str, round_id: int = 1) -> UpdateHeader:
    return UpdateHeader(
        client_id=client, round_id=round_id, base_version=0, num_samples=1, loss=0.5
    )


def _delta(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full(3, value, np.float32)}


def test_a_round_whose_aggregation_fails_is_finished_by_a_later_tick() -> None:
    aggregation = FlakyAggregation(failures=2)
    core = sync_core(
        START, aggregation=aggregation, num_rounds=1, clients_per_round=2, min_clients=2
    )
    for client in ("a", "b"):
        core.join(client, now=0.0)
    for client in ("a", "b"):  # the round opens once both have joined
        assert core.task_for(client, now=0.0).kind.value == "train"
    assert core.submit_plaintext_update(_header("a"), _delta(1.0), now=1.0)
    # The last update fills the round; closing it fails, but the update is accepted.
    assert core.submit_plaintext_update(_header("b"), _delta(3.0), now=1.0)
    assert core.history == () and core.model_version == 0
    with pytest.raises(TransportError):
        core.tick(now=2.0)  # still down: the ticker logs and tries again
    metrics = core.tick(now=3.0)
    assert metrics is not None and metrics.num_clients == 2
    assert aggregation.attempts == [("a", "b")] * 3  # always the same participant list
    np.testing.assert_allclose(core.global_model().weights["w"], 2.0)
    assert not core.submit_plaintext_update(_header("b"), _delta(3.0), now=4.0)  # a duplicate


def test_a_round_that_cannot_be_aggregated_is_abandoned_and_run_again() -> None:
    aggregation = FlakyAggregation(failures=0, lost=frozenset({1}))
    core = sync_core(
        START,
        aggregation=aggregation,
        num_rounds=1,
        clients_per_round=2,
        min_clients=2,
        round_timeout_s=30,
    )
    for client in ("a", "b"):
        core.join(client, now=0.0)
    for client in ("a", "b"):
        core.task_for(client, now=0.0)
    for client, value in (("a", 5.0), ("b", 7.0)):
        core.submit_plaintext_update(_header(client), _delta(value), now=1.0)
    with pytest.raises(TransportError):
        core.tick(now=20.0)  # within the round timeout: retried, same participants
    assert core.tick(now=31.5) is None  # past it: round 1 is abandoned
    tasks = [core.task_for(client, now=32.0) for client in ("a", "b")]
    assert [(t.kind.value, t.round_id, t.model_version) for t in tasks] == [("train", 2, 0)] * 2
    assert not core.done and core.history == ()
    for client, value in (("a", 1.0), ("b", 3.0)):
        assert core.submit_plaintext_update(_header(client, round_id=2), _delta(value), now=33.0)
    assert [m.round_id for m in core.history] == [2] and core.done
    np.testing.assert_allclose(core.global_model().weights["w"], 2.0)  # round 1's sums gone


def test_a_buffer_whose_release_fails_is_released_by_a_later_tick() -> None:
    aggregation = FlakyAggregation(failures=1)
    core = BufferedCoordinator(
        machine=BufferedMachine(BufferConfig(buffer_size=2, max_staleness=2, max_versions=2)),
        spec=spec_of(START),
        initial_weights=START,
        aggregation=aggregation,
        strategy=FedBuff(),
    )
    for client, value in (("a", 1.0), ("b", 3.0)):
        core.join(client, now=0.0)
        assert core.task_for(client).kind.value == "train"
        assert core.submit_plaintext_update(_header(client), _delta(value))
    assert core.model_version == 0  # the release failed, the updates are kept
    core.tick(now=1.0)
    assert core.model_version == 1 and len(core.history) == 1
    assert aggregation.attempts == [("a", "b")] * 2
    np.testing.assert_allclose(core.global_model().weights["w"], 2.0)
