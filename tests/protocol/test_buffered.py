"""FedBuff and FedAsync: staleness, buffering and counting against hand-computed oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from veilfl.errors import (
    BufferFullError,
    ConfigurationError,
    RoundMismatchError,
    StaleUpdateError,
)
from veilfl.protocol.buffered import (
    BufferConfig,
    BufferedMachine,
    BufferMode,
    polynomial_staleness_weight,
)
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.messages import LocalTrainingPlan, TaskKind, UpdateHeader
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.sim.in_process_aggregators import InProcessAggregators
from veilfl.strategy.aggregate import Aggregate
from veilfl.strategy.buffered import FedAsync, FedBuff
from veilfl.tensors import FloatArray


def _machine(k: int = 2, max_staleness: int = 2, versions: int = 10) -> BufferedMachine:
    machine = BufferedMachine(
        BufferConfig(buffer_size=k, max_staleness=max_staleness, max_versions=versions)
    )
    for client in "abcdef":
        machine.join(client)
    return machine


def _header(client: str, buffer_id: int, trained: int) -> UpdateHeader:
    return UpdateHeader(client_id=client, round_id=buffer_id, base_version=trained)


def _accept(
    machine: BufferedMachine, client: str, *, trained: int, buffer_id: int | None = None
) -> bool:
    header = _header(client, machine.round_id if buffer_id is None else buffer_id, trained)
    placement = machine.admit(header)
    return placement is not None and machine.accept(header, placement)


def _release(machine: BufferedMachine) -> ClosedCohort:
    assert machine.tick(now=0.0).ready_to_close or machine.tick(now=0.0).ready_to_close
    cohort = machine.close(now=1.0)
    machine.complete()
    return cohort


def test_staleness_weight_is_one_over_root_one_plus_staleness() -> None:
    assert [polynomial_staleness_weight(s) for s in (0, 1, 3, 8)] == pytest.approx(
        [1.0, 1 / math.sqrt(2), 0.5, 1 / 3]
    )


def test_buffer_of_k_releases_and_weights_follow_staleness() -> None:
    machine = _machine(k=2)
    for client in "ab":
        task = machine.task_for(client)
        assert task.kind is TaskKind.TRAIN and task.model_version == 0
    assert _accept(machine, "a", trained=0)
    assert not machine.tick(now=0.0).ready_to_close
    assert _accept(machine, "b", trained=0)
    cohort = machine.close(now=1.0)
    assert cohort.base_version == 0 and cohort.participant_ids == ("a", "b")
    assert [p.weight for p in cohort.participants] == [1.0, 1.0]
    assert machine.complete() == 1
    # c trained on version 0 but uploads into buffer 2 (base 1): staleness 1.
    ticket = machine.ticket("c", trained_version=0)
    assert (ticket.buffer_id, ticket.staleness) == (2, 1)
    assert ticket.weight == pytest.approx(1 / math.sqrt(2))


def test_an_update_beyond_the_staleness_bound_is_refused_clearly() -> None:
    machine = _machine(k=1, max_staleness=1)
    for client in "abc":
        assert _accept(machine, client, trained=machine.model_version)
        _release(machine)
    with pytest.raises(StaleUpdateError, match=r"3 versions behind the open buffer \(at most 1"):
        machine.ticket("d", trained_version=0)


def test_every_accepted_update_is_counted_exactly_once_across_buffers() -> None:
    machine = _machine(k=2)
    counted: list[str] = []
    assert _accept(machine, "a", trained=0)
    assert not _accept(machine, "a", trained=0)  # retried upload
    assert _accept(machine, "b", trained=0)
    counted += _release(machine).participant_ids
    assert not _accept(machine, "a", trained=0, buffer_id=1)  # a late retry after release
    with pytest.raises(RoundMismatchError):
        _accept(machine, "c", trained=0, buffer_id=1)  # c cannot use a's old buffer
    assert _accept(machine, "a", trained=1)  # a's next update
    assert _accept(machine, "c", trained=0)
    counted += _release(machine).participant_ids
    assert counted == ["a", "b", "a", "c"]


def test_a_client_whose_update_is_in_the_open_buffer_waits_for_the_next_one() -> None:
    """Training again for the same buffer would only send a repeat, shared for nothing."""
    machine = _machine(k=2)
    assert machine.task_for("a").kind is TaskKind.TRAIN
    assert _accept(machine, "a", trained=0)
    assert machine.task_for("a").kind is TaskKind.WAIT
    assert machine.task_for("b").kind is TaskKind.TRAIN
    assert _accept(machine, "b", trained=0)
    _release(machine)
    task = machine.task_for("a")
    assert (task.kind, task.model_version) == (TaskKind.TRAIN, 1)


def test_an_abandoned_buffer_reopens_under_a_new_id_on_the_same_version() -> None:
    machine = _machine(k=2)
    _accept(machine, "a", trained=0)
    _accept(machine, "b", trained=0)
    machine.close(now=1.0)
    assert machine.task_for("c").kind is TaskKind.WAIT
    assert machine.abandon(now=2.0) == 2
    assert (machine.round_id, machine.model_version, machine.pending) == (2, 0, 0)
    assert _accept(machine, "a", trained=0)  # a may hand in again, into buffer 2


def test_concurrency_limit_and_end_of_run() -> None:
    machine = BufferedMachine(
        BufferConfig(buffer_size=1, max_staleness=5, max_versions=1, max_concurrency=1)
    )
    machine.join("a")
    machine.join("b")
    assert machine.task_for("a").kind is TaskKind.TRAIN
    assert machine.task_for("b").kind is TaskKind.WAIT
    _accept(machine, "a", trained=0)
    _release(machine)
    assert machine.done and machine.task_for("b").kind is TaskKind.DONE


class _History:
    def __init__(self, versions: dict[int, FloatArray]) -> None:
        self._versions = versions

    def weights_at(self, version: int) -> FloatArray:
        return self._versions[version]


def _aggregate(total: np.ndarray, *, weight: float, count: int, trained: int = 0) -> Aggregate:
    return Aggregate(
        weighted_delta_sum=np.asarray(total, dtype=np.float64),
        total_weight=weight,
        participants=tuple(f"c{i}" for i in range(count)),
        trained_versions=(trained,) * count,
    )


def test_fedbuff_step_matches_the_hand_computed_oracle() -> None:
    w = np.array([1.0, -2.0], dtype=np.float32)
    deltas = [np.array([0.5, 0.5]), np.array([-1.0, 2.0]), np.array([0.2, 0.0])]
    staleness = [0, 1, 3]
    weights = [polynomial_staleness_weight(s) for s in staleness]
    weighted = sum(wt * d for wt, d in zip(weights, deltas, strict=True))
    new = FedBuff(server_learning_rate=0.8).apply(
        w, _aggregate(weighted, weight=sum(weights), count=3), history=_History({})
    )
    expected = [
        1.0 + 0.8 * (0.5 * 1 + -1.0 / math.sqrt(2) + 0.2 * 0.5) / 3,
        -2.0 + 0.8 * (0.5 * 1 + 2.0 / math.sqrt(2) + 0.0) / 3,
    ]
    np.testing.assert_allclose(new, expected, rtol=1e-6)


def test_fedasync_mixes_with_a_staleness_discounted_rate() -> None:
    current = np.array([1.0, 1.0], dtype=np.float32)
    history = _History({0: np.array([0.0, 2.0], dtype=np.float32)})
    delta = np.array([1.0, -1.0])
    # The buffer's sum is s·Δ and its total weight s (here s = 0.5).
    new = FedAsync(mixing=0.5).apply(
        current, _aggregate(0.5 * delta, weight=0.5, count=1), history=history
    )
    # alpha = 0.25; client model = [1, 1]; (0.75)[1, 1] + 0.25 [1, 1] = [1, 1]
    np.testing.assert_allclose(new, [1.0, 1.0])
    other = FedAsync(mixing=1.0).apply(
        current, _aggregate(3 * delta, weight=1.0, count=1), history=history
    )
    np.testing.assert_allclose(other, [3.0, -1.0])


def test_inconsistent_buffer_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="K = 1"):
        BufferConfig(buffer_size=4, max_staleness=1, max_versions=1, mode=BufferMode.FEDASYNC)
    with pytest.raises(ConfigurationError):
        BufferConfig(buffer_size=0, max_staleness=1, max_versions=1)


def test_fedasync_is_refused_when_updates_are_secret_shared() -> None:
    config = SecureAggregationConfig(threshold=2, num_aggregators=2)
    aggregators = InProcessAggregators(config, run_id="r", model_size=3)
    with pytest.raises(ConfigurationError, match="use --mode fedbuff"):
        RunSpec(
            model_name="tiny",
            rounds=RoundConfig(num_rounds=1, clients_per_round=1),
            plan=LocalTrainingPlan(),
            secure=SecureSettings(config=config, aggregators=aggregators.published),
            buffer=BufferConfig(
                buffer_size=1, max_staleness=1, max_versions=1, mode=BufferMode.FEDASYNC
            ),
        )


def _ticketed_machine(k: int, *, timeout_s: float = 10.0) -> BufferedMachine:
    machine = BufferedMachine(
        BufferConfig(buffer_size=k, max_staleness=5, max_versions=10, ticket_timeout_s=timeout_s)
    )
    for client in "abcdef":
        machine.join(client)
    return machine


def test_a_buffer_issues_at_most_k_live_tickets_and_a_holder_asking_again_keeps_its_place() -> None:
    machine = _ticketed_machine(k=2)
    first = machine.ticket("a", trained_version=0, now=0.0)
    machine.ticket("b", trained_version=0, now=0.0)
    assert machine.free_places(now=0.0) == 0
    with pytest.raises(BufferFullError, match="All 2 places in buffer 1") as refused:
        machine.ticket("c", trained_version=0, now=1.0)
    assert refused.value.retry_after_s > 0
    assert machine.ticket("a", trained_version=0, now=2.0) == first  # renewed, not refused


def test_an_expired_ticket_frees_its_place_and_its_holders_update_still_counts() -> None:
    machine = _ticketed_machine(k=2, timeout_s=10.0)
    machine.ticket("a", trained_version=0, now=0.0)
    machine.ticket("b", trained_version=0, now=5.0)
    with pytest.raises(BufferFullError):
        machine.ticket("c", trained_version=0, now=9.0)
    assert machine.free_places(now=10.0) == 1  # a's ticket ran out at 10
    machine.ticket("c", trained_version=0, now=10.0)
    assert _accept(machine, "a", trained=0)  # late, but the buffer is open: it counts
    assert machine.pending == 1 and machine.free_places(now=10.0) == 0


def test_an_accepted_update_or_a_drop_out_hands_the_place_on() -> None:
    machine = _ticketed_machine(k=3)
    for client in "abc":
        machine.ticket(client, trained_version=0, now=0.0)
    assert _accept(machine, "a", trained=0)
    assert machine.free_places(now=0.0) == 0  # a's update holds its place in the buffer
    machine.abandon_training("b")
    assert machine.free_places(now=0.0) == 1
    machine.ticket("d", trained_version=0, now=0.0)
    with pytest.raises(BufferFullError):
        machine.ticket("e", trained_version=0, now=0.0)


def test_tickets_wait_while_a_full_buffer_is_applied_and_the_next_buffer_has_k_places() -> None:
    machine = _ticketed_machine(k=2)
    for client in "ab":
        machine.ticket(client, trained_version=0, now=0.0)
        assert _accept(machine, client, trained=0)
    assert machine.tick(now=0.0).ready_to_close
    machine.close(now=1.0)
    with pytest.raises(BufferFullError, match="being applied"):
        machine.ticket("c", trained_version=0, now=1.0)
    assert machine.free_places(now=1.0) == 0
    machine.complete()
    assert machine.free_places(now=1.0) == 2
    assert machine.ticket("c", trained_version=0, now=1.0).buffer_id == 2


def test_a_stale_update_is_told_to_retrain_even_when_the_buffer_is_full() -> None:
    machine = BufferedMachine(BufferConfig(buffer_size=1, max_staleness=1, max_versions=10))
    for client in "abc":
        machine.join(client)
    for _ in range(2):
        machine.ticket("a", trained_version=machine.model_version, now=0.0)
        assert _accept(machine, "a", trained=machine.model_version)
        _release(machine)
    machine.ticket("b", trained_version=2, now=0.0)  # holds the only place
    with pytest.raises(StaleUpdateError, match="train again"):
        machine.ticket("c", trained_version=0, now=0.0)
