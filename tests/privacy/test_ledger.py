"""The privacy ledger persists exactly and counts released rounds, not round ids."""

from __future__ import annotations

import json

import dp_accounting
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError, StorageError
from veilfl.privacy.accountant import (
    RDP_ORDERS,
    ClientLevelAccountant,
    epsilon_for,
    epsilon_of,
)
from veilfl.privacy.ledger import PrivacyLedger, ReleasedRounds

entries = st.lists(
    st.tuples(
        st.floats(0.3, 20.0), st.sampled_from([0.001, 0.01, 0.1, 0.5, 1.0]), st.integers(1, 50)
    ),
    max_size=6,
)


def _ledger(items: list[tuple[float, float, int]]) -> PrivacyLedger:
    ledger = PrivacyLedger()
    for z, q, count in items:
        ledger = ledger.record(noise_multiplier=z, sample_rate=q, count=count)
    return ledger


@settings(max_examples=100, deadline=None)
@given(items=entries)
def test_the_ledger_survives_json_exactly(items: list[tuple[float, float, int]]) -> None:
    ledger = _ledger(items)
    restored = PrivacyLedger.from_json(json.loads(json.dumps(ledger.to_json())))
    assert restored == ledger
    assert restored.rounds == sum(count for _, _, count in items)


@settings(max_examples=10, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.floats(0.5, 5.0), st.sampled_from([0.01, 0.1, 1.0]), st.integers(1, 3)),
        min_size=1,
        max_size=4,
    )
)
def test_a_mixed_ledger_costs_what_dp_accounting_composes(
    items: list[tuple[float, float, int]],
) -> None:
    # Oracle: the rounds one by one, composed by dp-accounting's own RDP accountant.
    accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
    for z, q, count in items:
        for _ in range(count):
            event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(z)
            accountant.compose(event if q == 1.0 else dp_accounting.PoissonSampledDpEvent(q, event))
    assert epsilon_of(_ledger(items), delta=1e-5) == pytest.approx(
        accountant.get_epsilon(1e-5), rel=1e-9
    )


def test_consecutive_identical_rounds_share_one_entry() -> None:
    ledger = PrivacyLedger()
    for _ in range(4):
        ledger = ledger.record(noise_multiplier=1.0, sample_rate=0.1)
    ledger = ledger.record(noise_multiplier=1.2, sample_rate=0.1)
    assert ledger.entries == (ReleasedRounds(1.0, 0.1, 4), ReleasedRounds(1.2, 0.1, 1))


@pytest.mark.parametrize("accounting", ["rdp", "pld"])
def test_a_restarted_accountant_continues_exactly(accounting: str) -> None:
    # Arrange: a run releases 7 rounds, persists, and is restarted from the store.
    first = ClientLevelAccountant(
        noise_multiplier=1.1,
        sample_rate=0.05,
        delta=1e-5,
        target_epsilon=5.0,
        accounting=accounting,  # type: ignore[arg-type]
    )
    for _ in range(7):
        first.record_round()
    stored = json.dumps(first.to_json())
    resumed = ClientLevelAccountant.from_json(json.loads(stored))
    # Act: both go on for 5 more rounds.
    ahead = [first.record_round() for _ in range(5)]
    after_restart = [resumed.record_round() for _ in range(5)]
    # Assert
    assert after_restart == ahead
    assert resumed.rounds == 12 and resumed.accounting == accounting


def test_abandoned_round_ids_are_not_charged_after_a_restart() -> None:
    # Rounds 3 and 6 were abandoned (nothing released); round ids reached 7.
    released_ids = [1, 2, 4, 5, 7]
    ledger = PrivacyLedger.from_released_rounds(
        len(released_ids), noise_multiplier=1.0, sample_rate=0.1
    )
    rebuilt = ClientLevelAccountant(
        noise_multiplier=1.0, sample_rate=0.1, delta=1e-5, ledger=ledger
    )
    honest = epsilon_for(noise_multiplier=1.0, sample_rate=0.1, rounds=5, delta=1e-5)
    by_last_id = epsilon_for(noise_multiplier=1.0, sample_rate=0.1, rounds=7, delta=1e-5)
    assert rebuilt.epsilon == honest < by_last_id


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"version": 99, "entries": []},
        {"version": 1},
        {"version": 1, "entries": [{"noise_multiplier": 1.0, "sample_rate": 2.0, "count": 1}]},
        {"version": 1, "entries": [{"noise_multiplier": 1.0, "sample_rate": 0.1, "count": 0}]},
        {"version": 1, "entries": [{"noise_multiplier": "x", "sample_rate": 0.1, "count": 1}]},
        {"version": 1, "entries": [{"sample_rate": 0.1, "count": 1}]},
    ],
)
def test_a_damaged_ledger_is_refused_with_a_storage_error(data: object) -> None:
    with pytest.raises(StorageError, match="ledger"):
        PrivacyLedger.from_json(data)


def test_invalid_entries_and_counts_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        ReleasedRounds(0.0, 0.1)
    with pytest.raises(ConfigurationError):
        ReleasedRounds(1.0, 0.0)
    with pytest.raises(ConfigurationError):
        PrivacyLedger.from_released_rounds(-1, noise_multiplier=1.0, sample_rate=0.1)
    with pytest.raises(StorageError):
        ClientLevelAccountant.from_json({"noise_multiplier": 1.0})
