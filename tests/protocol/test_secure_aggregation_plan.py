"""A client whose shares reached only t aggregators cannot shrink the set a round
verifies and sums with: it is left out, and the spare aggregator stays (so the round
still survives an aggregator failing after the holdings). Through the coordinator core
and in-process aggregators, without a socket."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.in_process_hand_in import hand_in
from tests.run_descriptions import run_info
from tests.tiny_coordinator import settle

from veilfl.errors import ProtocolError
from veilfl.protocol.assembly import build_coordinator
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.effects import (
    ClientsExcluded,
    CollectHoldings,
    CollectVerifierShares,
    Effect,
)
from veilfl.protocol.messages import RunInfo
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.secagg.reconstruction import SPARE_KEEPING_SHARE, AggregationPlan, plan_aggregation
from veilfl.sim.in_process_aggregators import InProcessAggregators

START = {"w": np.zeros(3, np.float32)}
STEP = 1 / ContributionLayout(3, SecureAggregationConfig(norm_bound=10.0)).scale
CLIENTS = ("a", "b", "c", "short")


def _secure_run(m: int) -> tuple[Coordinator, InProcessAggregators, RunInfo]:
    config = SecureAggregationConfig(
        threshold=2, num_aggregators=m, norm_bound=10.0, max_samples_per_client=100
    )
    aggregators = InProcessAggregators(config, run_id="r", model_size=3)
    settings = RunSpec(
        model_name="tiny",
        rounds=RoundConfig(
            num_rounds=1, clients_per_round=len(CLIENTS), min_clients=2, round_timeout_s=30.0
        ),
        secure=SecureSettings(config=config, aggregators=aggregators.published),
    )
    core = build_coordinator(
        settings, initial_weights=START, run_id="r", retry_interval_s=1.0
    ).coordinator
    return core, aggregators, run_info(settings, run_id="r", model_size=core.spec.total_size)


@pytest.mark.parametrize(
    ("m", "fails_after_holdings"),
    [
        pytest.param(3, None, id="m=3"),
        pytest.param(4, None, id="m=4"),
        pytest.param(4, 1, id="m=4, aggregator 1 fails"),
        pytest.param(4, 4, id="m=4, aggregator 4 fails"),
    ],
)
def test_a_client_held_by_only_t_aggregators_is_left_out_and_the_spares_stay(
    m: int, fails_after_holdings: int | None
) -> None:
    # Arrange: three clients reach all m aggregators; "short" reaches exactly t = 2 of
    # them (the others are unreachable while it uploads: uploads that failed, or a
    # client that chose to skip them).
    core, aggregators, run = _secure_run(m)
    everyone = tuple(range(1, m + 1))
    for client in CLIENTS:
        core.join(client, now=0.0)
    for client in CLIENTS:
        assert core.task_for(client, now=0.0).kind.value == "train"
    for client, value in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        assert hand_in(core, aggregators, run, client, value, now=1.0)
    aggregators.down = set(everyone[2:])
    assert hand_in(core, aggregators, run, "short", 50.0, now=1.0)
    aggregators.down = set()
    seen: list[Effect] = []
    # Act: the aggregators say what they hold; then (in some cases) one of them fails
    # before the verification, as a spare exists to allow.
    for effect in core.drain():
        seen.append(effect)
        if isinstance(effect, CollectHoldings):
            for event in aggregators.perform(effect):
                core.handle(event, now=1.0)
    aggregators.down = set() if fails_after_holdings is None else {fails_after_holdings}
    settle(core, now=1.0, aggregators=aggregators, seen=seen)
    # Assert: the round verifies with all m aggregators (t + 1 or t + 2), "short" is
    # excluded, and the round completes over the others, even when one aggregator fails
    # after the plan (at m = 4, three still verify, commit and sum).
    (verification,) = [e for e in seen if isinstance(e, CollectVerifierShares)]
    assert verification.aggregators == everyone
    assert verification.clients == ("a", "b", "c")
    (excluded,) = [e for e in seen if isinstance(e, ClientsExcluded)]
    assert excluded.clients == ("short",)
    assert f"({', '.join(map(str, everyone))})" in excluded.reason
    assert core.model_version == 1
    np.testing.assert_allclose(core.global_model().weights["w"], 2.0, atol=STEP)


def test_one_short_client_never_shrinks_the_plan_but_a_failed_aggregator_is_dropped() -> None:
    everyone = {1, 2, 3}
    # Any number of clients that reached everyone, and one that reached only {1, 2}.
    for honest in range(1, 8):
        held = {f"c{i}": everyone for i in range(honest)} | {"short": {1, 2}}
        plan = plan_aggregation(held, alive=everyone, threshold=2, min_participants=1)
        assert plan.aggregators == (1, 2, 3)
        assert "short" not in plan.participants
    # An aggregator that lacks most clients' shares (it was down, or lost its spool)
    # is the one left out, not the clients.
    held = {"a": {1, 2}, "b": {1, 2}, "c": {1, 2}, "d": everyone}
    plan = plan_aggregation(held, alive=everyone, threshold=2, min_participants=1)
    assert plan.aggregators == (1, 2) and plan.participants == ("a", "b", "c", "d")
    # With m = 5, t = 3: a client held by 3 or 4 aggregators removes none.
    five = {1, 2, 3, 4, 5}
    held = {"a": five, "b": five, "c": five, "three": {1, 2, 3}, "four": {1, 2, 3, 4}}
    plan = plan_aggregation(held, alive=five, threshold=3, min_participants=2)
    assert plan.aggregators == (1, 2, 3, 4, 5) and plan.participants == ("a", "b", "c")


def _slow_plan(
    held: dict[str, set[int]], alive: set[int], t: int, minimum: int
) -> AggregationPlan | None:
    """The rule of plan_aggregation, one set of aggregators at a time."""
    live = sorted(alive)

    def count(group: tuple[int, ...]) -> int:
        return sum(1 for acks in held.values() if set(group) <= acks)

    best = max((count(g) for g in itertools.combinations(live, t)), default=-1)
    if best < minimum:
        return None
    enough = max(minimum, math.ceil(SPARE_KEEPING_SHARE * best))
    for size in range(len(live), t - 1, -1):
        groups = list(itertools.combinations(live, size))
        most = max(count(g) for g in groups)
        if most >= enough:
            group = min(g for g in groups if count(g) == most)
            members = tuple(sorted(c for c, acks in held.items() if set(group) <= acks))
            return AggregationPlan(aggregators=group, participants=members)
    raise AssertionError("size t always holds the best list")


@settings(max_examples=200, deadline=None)
@given(
    m=st.integers(1, 6),
    data=st.data(),
)
def test_the_plan_equals_a_one_set_at_a_time_oracle(m: int, data: st.DataObject) -> None:
    everyone = list(range(1, m + 1))
    t = data.draw(st.integers(1, m), label="t")
    alive = data.draw(st.sets(st.sampled_from(everyone)), label="alive")
    held = data.draw(
        st.dictionaries(
            st.text("abcdefgh", min_size=1, max_size=2),
            st.sets(st.sampled_from(everyone)),
            max_size=12,
        ),
        label="held",
    )
    minimum = data.draw(st.integers(0, 4), label="minimum")
    expected = _slow_plan(held, alive, t, minimum)
    if expected is None:
        with pytest.raises(ProtocolError, match="cannot be aggregated"):
            plan_aggregation(held, alive=alive, threshold=t, min_participants=minimum)
    else:
        assert plan_aggregation(held, alive=alive, threshold=t, min_participants=minimum) == (
            expected
        )
