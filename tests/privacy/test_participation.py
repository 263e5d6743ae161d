"""DP-FTRL's selection: whoever reports and whoever drops out, no client takes part in
more than K released rounds or in two less than b apart (checked against the
history, one client at a time), rounds fill while enough clients are eligible, and the
rule is public and deterministic."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError, PrivacyError
from veilfl.privacy.participation import ParticipationLimits


@given(
    population=st.integers(1, 12),
    size=st.integers(1, 5),
    k=st.integers(1, 4),
    b=st.integers(1, 4),
    steps=st.integers(1, 20),
    drops=st.lists(st.booleans(), min_size=60, max_size=60),
)
def test_released_rounds_never_break_the_limits(
    population: int, size: int, k: int, b: int, steps: int, drops: list[bool]
) -> None:
    # Arrange
    clients = [f"c{i}" for i in range(population)]
    limits = ParticipationLimits(max_participations=k, min_separation=b)
    history: dict[str, list[int]] = {c: [] for c in clients}
    coins = itertools.cycle(drops)
    # Act: each round, some selected clients drop out (they do not take part).
    for round_id in range(1, 3 * steps):
        chosen = limits.select(clients, size=size, minimum=1, round_id=round_id)
        if chosen is None:
            continue
        assert len(chosen) <= size and len(set(chosen)) == len(chosen)
        reported = [c for c in chosen if next(coins)]
        if not reported:
            continue  # withheld: nothing released, no step consumed
        step = limits.record(reported)
        for client in reported:
            history[client].append(step)
    # Assert: the oracle, client by client.
    for client, taken in history.items():
        assert len(taken) <= k
        assert all(later - earlier >= b for earlier, later in itertools.pairwise(taken))
        assert limits.participations(client) == len(taken)


def test_round_robin_fills_every_round_when_the_population_allows_it() -> None:
    # 12 clients, 3 a round, b = 4, K = 2: 8 full rounds, then nobody is left.
    clients = [f"c{i:02d}" for i in range(12)]
    limits = ParticipationLimits(max_participations=2, min_separation=4)
    for round_id in range(1, 9):
        chosen = limits.select(clients, size=3, minimum=3, round_id=round_id)
        assert chosen is not None and len(chosen) == 3
        limits.record(chosen)
    assert all(limits.participations(c) == 2 for c in clients)
    assert limits.select(clients, size=3, minimum=1, round_id=9) is None


def test_the_rule_is_public_and_a_restarted_round_picks_other_ties() -> None:
    clients = [f"c{i}" for i in range(10)]
    first = ParticipationLimits(max_participations=1, min_separation=1)
    second = ParticipationLimits(max_participations=1, min_separation=1)
    # Anyone who knows who took part gets the same selection.
    assert first.select(clients, size=3, minimum=1, round_id=5) == second.select(
        clients, size=3, minimum=1, round_id=5
    )
    # A new round id for the same step breaks ties differently (stragglers rotate).
    picks = {first.select(clients, size=3, minimum=1, round_id=r) for r in range(1, 6)}
    assert len(picks) > 1


def test_a_client_past_its_limits_is_refused_and_a_resumed_state_is_checked() -> None:
    limits = ParticipationLimits(max_participations=2, min_separation=3)
    limits.record(["a"])
    with pytest.raises(PrivacyError, match="past their participation limits"):
        limits.record(["a"])  # one step later, b = 3
    resumed = ParticipationLimits(
        max_participations=2, min_separation=3, steps=4, counts={"a": 1}, last_steps={"a": 1}
    )
    assert resumed.next_step == 5 and resumed.eligible("a")
    with pytest.raises(ConfigurationError, match="run store does not match"):
        ParticipationLimits(max_participations=1, min_separation=1, steps=1, counts={"a": 2})
