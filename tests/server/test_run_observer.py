"""What the run observer keeps from the service's commands, answers and notices: the
round timeline, refusals and exclusions per round, aggregator health and counters."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.effects import (
    AggregationStalled,
    AggregatorFailed,
    ClientsExcluded,
    CollectCommitments,
    CollectHoldings,
    CommitmentReported,
    HoldingsReported,
    PersistRound,
    RoundAbandoned,
    RoundCompleted,
    RoundOutcome,
)
from veilfl.protocol.messages import ClientReport
from veilfl.protocol.metrics import RoundMetrics
from veilfl.server.run_observer import AggregatorState, RoundState, RunObserver

START = 1000.0


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def _observer(aggregators: int = 3) -> tuple[RunObserver, Clock]:
    clock = Clock()
    urls = {j: f"https://aggregator-{j}.example" for j in range(1, aggregators + 1)}
    return RunObserver(aggregators=urls, clock=clock), clock


def _outcome(round_id: int, clients: int, *, opened: float, closed: float) -> RoundOutcome:
    cohort = ClosedCohort(
        round_id=round_id,
        base_version=round_id - 1,
        participants=tuple(ClientReport(f"c{i}", 10, 1.0) for i in range(clients)),
        opened_at=START + opened,
        closed_at=START + closed,
        sampled=clients + 1,
    )
    metrics = RoundMetrics(round_id, clients, 1.0, None, None, seconds=closed - opened + 1)
    return RoundOutcome(cohort, metrics, new_version=round_id, weights=np.zeros(2, np.float32))


def test_a_round_moves_through_its_phases_with_times_from_the_cohort() -> None:
    observer, clock = _observer()
    clock.now = START + 1.0
    observer.round_open(1)
    assert observer.rounds()[0].state is RoundState.OPEN
    assert observer.rounds()[0].opened_s == 1.0
    clock.now = START + 3.0
    observer.command_sent(CollectHoldings(1, (1, 2, 3)))
    assert observer.rounds()[0].state is RoundState.AGGREGATING
    clock.now = START + 4.0
    outcome = _outcome(1, clients=2, opened=0.5, closed=2.75)
    observer.command_sent(PersistRound(outcome))
    row = observer.rounds()[0]
    assert row.state is RoundState.PERSISTING
    assert (row.opened_s, row.closed_s, row.aggregated_s) == (0.5, 2.75, 4.0)
    assert (row.sampled, row.participants) == (3, 2)
    clock.now = START + 4.5
    observer.notice(RoundCompleted(outcome))
    row = observer.rounds()[0]
    assert (row.state, row.completed_s, row.model_version) == (RoundState.COMPLETED, 4.5, 1)
    assert observer.counts().rounds_completed == 1


def test_aggregator_health_follows_answers_failures_and_outstanding_requests() -> None:
    observer, clock = _observer()
    assert {a.state for a in observer.aggregators()} == {AggregatorState.UNKNOWN}
    clock.now = START + 10.0
    observer.command_sent(CollectHoldings(1, (1, 2, 3)))
    clock.now = START + 10.25
    observer.event_received(HoldingsReported(1, 1, frozenset({"c0"})))
    observer.event_received(AggregatorFailed(1, 2, "Aggregator 2 is unreachable.", refused=False))
    one, two, three = observer.aggregators()
    assert (one.state, one.answers, one.last_latency_s) == (AggregatorState.OK, 1, 0.25)
    assert (two.state, two.failures, two.refusals) == (AggregatorState.FAILING, 1, 0)
    assert two.last_failure == "Aggregator 2 is unreachable."
    assert three.state is AggregatorState.WAITING
    assert three.asked_for is not None and "holdings of round 1" in three.asked_for
    observer.event_received(AggregatorFailed(1, 3, "refused: HTTP 409", refused=True))
    observer.command_sent(CollectCommitments(1, ("c0",), (1, 2)))
    observer.event_received(CommitmentReported(1, 2, b"signature"))
    one, two, three = observer.aggregators()
    assert one.state is AggregatorState.WAITING
    assert one.asked_for == "its commitment to round 1's 1 participants"
    assert (two.state, two.consecutive_failures, two.answers) == (AggregatorState.OK, 0, 1)
    assert (three.state, three.refusals) == (AggregatorState.FAILING, 1)
    counts = observer.counts()
    assert counts.aggregator_answers == {1: 1, 2: 1, 3: 0}
    assert counts.aggregator_failures[(2, "unreachable")] == 1
    assert counts.aggregator_failures[(3, "refused")] == 1


def test_exclusions_stalls_and_abandonment_are_kept_per_round() -> None:
    observer, clock = _observer()
    observer.command_sent(CollectHoldings(4, (1, 2, 3)))
    observer.notice(ClientsExcluded(4, ("c1", "c2"), "their shares are not held"))
    observer.notice(AggregationStalled(4, "1 of 3 aggregators answered"))
    clock.now = START + 30.0
    observer.notice(RoundAbandoned(4, 5, "not aggregated 30 s after it closed"))
    stuck, fresh = observer.rounds()
    assert (stuck.state, stuck.excluded, stuck.abandoned_for) == (RoundState.ABANDONED, 2, 5)
    assert stuck.stalled == "1 of 3 aggregators answered"
    assert stuck.exclusion_reason == "their shares are not held"
    assert (fresh.round_id, fresh.state, fresh.opened_s) == (5, RoundState.OPEN, 30.0)
    counts = observer.counts()
    assert (counts.clients_excluded, counts.stalls, counts.rounds_abandoned) == (2, 1, 1)


def test_refusals_count_per_round_and_reason_and_tickets_count_against_the_latest_round() -> None:
    observer, _ = _observer(0)
    observer.round_open(1)
    observer.round_open(2)
    observer.update_answered("update", round_id=1, refused="RoundMismatchError")
    observer.update_answered("update", round_id=2, refused=None)
    observer.update_answered("ticket", round_id=None, refused="StaleUpdateError")
    observer.update_answered("update", round_id=99, refused="RoundMismatchError")
    first, second = observer.rounds()
    assert first.refused == {"RoundMismatchError": 1}
    assert second.refused == {"StaleUpdateError": 1}
    counts = observer.counts()
    assert counts.updates_accepted == {"update": 1}
    assert counts.updates_refused == {
        ("update", "RoundMismatchError"): 2,
        ("ticket", "StaleUpdateError"): 1,
    }


def test_a_poller_gets_only_the_rows_changed_since_its_revision() -> None:
    observer, _ = _observer(0)
    observer.round_open(1)
    observer.round_open(2)
    seen = observer.revision
    assert observer.rounds(since=seen) == []
    observer.update_answered("update", round_id=2, refused="WireFormatError")
    assert [r.round_id for r in observer.rounds(since=seen)] == [2]
    assert [r.round_id for r in observer.rounds(since=0)] == [1, 2]


def test_history_merges_evaluations_and_an_unchanged_history_changes_nothing() -> None:
    observer, _ = _observer(0)
    plain = RoundMetrics(1, 3, 0.9, None, None, seconds=2.0)
    observer.merge_history([plain])
    seen = observer.revision
    observer.merge_history([plain])
    assert observer.revision == seen
    evaluated = RoundMetrics(1, 3, 0.9, test_loss=0.4, test_accuracy=0.88, seconds=2.0)
    observer.merge_history([evaluated])
    (row,) = observer.rounds(since=seen)
    assert (row.state, row.test_accuracy, row.participants) == (RoundState.COMPLETED, 0.88, 3)
    assert row.opened_s is None  # completed before this coordinator started


@given(
    st.lists(
        st.tuples(st.integers(1, 6), st.sampled_from(["update", "receipt"]), st.booleans()),
        max_size=40,
    )
)
def test_counters_equal_a_one_by_one_tally(answers: list[tuple[int, str, bool]]) -> None:
    observer, _ = _observer(0)
    for round_id in range(1, 7):
        observer.round_open(round_id)
    for round_id, kind, refused in answers:
        observer.update_answered(kind, round_id=round_id, refused="X" if refused else None)
    counts = observer.counts()
    for kind in ("update", "receipt"):
        assert counts.updates_accepted.get(kind, 0) == sum(
            1 for _, k, r in answers if k == kind and not r
        )
        assert counts.updates_refused.get((kind, "X"), 0) == sum(
            1 for _, k, r in answers if k == kind and r
        )
    per_round = {row.round_id: row.refused.get("X", 0) for row in observer.rounds()}
    assert per_round == {
        round_id: sum(1 for r_id, _, r in answers if r_id == round_id and r)
        for round_id in range(1, 7)
    }


def test_client_ids_in_quoted_reasons_are_masked() -> None:
    observer, _ = _observer()
    client = "33442c52b1727f06e2eb709c60ee943a"
    observer.command_sent(CollectHoldings(1, (1, 2, 3)))
    observer.event_received(
        AggregatorFailed(1, 1, f"Aggregator 1 refused: it holds no share of {client}.", True)
    )
    observer.notice(AggregationStalled(1, f"aggregator 1: no share of {client}"))
    shown = repr(observer.aggregators()) + repr(observer.rounds())
    assert client not in shown
    assert (
        observer.aggregators()[0].last_failure == "Aggregator 1 refused: it holds no share of <id>."
    )
