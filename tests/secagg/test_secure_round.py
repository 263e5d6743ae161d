"""Secure aggregation end to end in memory: clients, aggregators, reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.crypto.shamir import Share
from veilfl.errors import (
    DecryptionError,
    ProtocolError,
    ReconstructionError,
    RoundMismatchError,
    WireFormatError,
)
from veilfl.secagg.aggregator_state import AggregatorRound, InMemoryShareArchive
from veilfl.secagg.client_shares import seal_update
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig
from veilfl.secagg.reconstruction import plan_aggregation, reconstruct_aggregate
from veilfl.strategy.aggregate import WeightedSum

KEYS = [generate_keypair("x25519") for _ in range(5)]


def _aggregators(
    config: SecureAggregationConfig, length: int, keys: list[AggregatorKeyPair], round_id: int = 1
) -> list[AggregatorRound]:
    return [
        AggregatorRound(
            run_id="run",
            round_id=round_id,
            index=j + 1,
            vector_length=length + EXTRA_COORDINATES,
            field=MERSENNE_31,
            private_key=keys[j].private_key,
            archive=InMemoryShareArchive(),
        )
        for j in range(config.num_aggregators)
    ]


def _upload(
    config: SecureAggregationConfig,
    aggregators: list[AggregatorRound],
    client: str,
    delta: np.ndarray,
    samples: int,
    *,
    loss: float = 1.0,
    only: set[int] | None = None,
    round_id: int = 1,
) -> None:
    sealed = seal_update(
        delta,
        num_samples=samples,
        loss=loss,
        config=config,
        public_keys=[k.public_key for k in KEYS[: config.num_aggregators]],
        run_id="run",
        round_id=round_id,
        client_id=client,
        rng=CsprngStream(),
    )
    for share in sealed:
        if only is None or share.aggregator_index in only:
            aggregators[share.aggregator_index - 1].receive(client, share.envelope)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    clients=st.integers(1, 8),
    length=st.integers(1, 50),
    tm=st.sampled_from([(1, 1), (2, 3), (3, 5), (2, 2)]),
)
def test_secure_aggregate_equals_the_plaintext_weighted_mean(
    seed: int, clients: int, length: int, tm: tuple[int, int]
) -> None:
    # Arrange
    t, m = tm
    config = SecureAggregationConfig(
        threshold=t,
        num_aggregators=m,
        clip_range=1.0,
        max_clients=16,
        max_samples_per_client=1000,
    )
    rng = np.random.default_rng(seed)
    deltas = rng.uniform(-0.5, 0.5, size=(clients, length)).astype(np.float32)
    samples = rng.integers(1, 1000, size=clients)
    aggregators = _aggregators(config, length, KEYS)
    plaintext = WeightedSum(length)
    # Act
    for i in range(clients):
        _upload(config, aggregators, f"c{i}", deltas[i], int(samples[i]), loss=0.5 + i)
        plaintext.add(deltas[i], weight=float(samples[i]))
    participants = [f"c{i}" for i in range(clients)]
    shares = [a.aggregate(participants) for a in aggregators[:t]]
    result = reconstruct_aggregate(
        shares,
        config=config,
        participants=tuple(participants),
        trained_versions=(0,) * clients,
    )
    # Assert: within the documented quantisation bound of the weighted mean.
    expected = plaintext.vector() / plaintext.total_weight
    total_weight = result.total_weight
    bound = config.encoding().quantisation_bound(clients)
    # |Σw·Δ error| <= bound and |Σw error| <= bound, so the mean is off by at most:
    mean_bound = (bound + bound * np.abs(expected)) / (total_weight - bound)
    assert np.all(np.abs(result.mean_delta() - expected) <= mean_bound + 1e-9)
    expected_loss = float(np.average(0.5 + np.arange(clients), weights=samples))
    assert result.mean_loss == pytest.approx(expected_loss, abs=1e-3)


def test_round_survives_a_client_that_reached_only_some_aggregators() -> None:
    config = SecureAggregationConfig(threshold=2, num_aggregators=3, max_clients=8)
    aggregators = _aggregators(config, 4, KEYS)
    ones = np.full(4, 0.25, dtype=np.float32)
    _upload(config, aggregators, "a", ones, 100)
    _upload(config, aggregators, "b", ones, 100)
    _upload(config, aggregators, "dropped", np.full(4, -0.9, np.float32), 100, only={1})
    acks = {"a": {1, 2, 3}, "b": {1, 2, 3}}  # "dropped" never reported to the coordinator
    plan = plan_aggregation(acks, alive={1, 2, 3}, threshold=2, min_participants=2)
    assert plan.participants == ("a", "b") and plan.aggregators == (1, 2, 3)
    # Aggregator 1 holds the dropped client's share and subtracts it again.
    shares = [
        aggregators[0].aggregate(plan.participants),
        aggregators[2].aggregate(plan.participants),
    ]
    result = reconstruct_aggregate(
        shares, config=config, participants=plan.participants, trained_versions=(0, 0)
    )
    np.testing.assert_allclose(result.mean_delta(), 0.25, atol=1e-5)


def test_plan_prefers_the_aggregators_that_hold_the_most_clients() -> None:
    acks = {"a": {1, 2}, "b": {1, 2}, "c": {2, 3}, "d": {1, 2, 3}}
    plan = plan_aggregation(acks, alive={1, 2, 3}, threshold=2, min_participants=1)
    assert plan.participants == ("a", "b", "d")
    assert plan.aggregators == (1, 2)
    without_two = plan_aggregation(acks, alive={1, 3}, threshold=2, min_participants=1)
    assert without_two.participants == ("d",)
    with pytest.raises(ProtocolError, match="cannot be aggregated"):
        plan_aggregation(acks, alive={1, 3}, threshold=2, min_participants=2)


def _state(aggregator: AggregatorRound) -> tuple[frozenset[str], bytes]:
    return aggregator.clients, aggregator._sum.tobytes()


def test_tampered_truncated_replayed_and_misrouted_shares_change_nothing() -> None:
    config = SecureAggregationConfig(threshold=2, num_aggregators=3, max_clients=8)
    aggregators = _aggregators(config, 3, KEYS)
    next_round = _aggregators(config, 3, KEYS, round_id=2)
    sealed = seal_update(
        np.zeros(3, np.float32),
        num_samples=5,
        loss=1.0,
        config=config,
        public_keys=[k.public_key for k in KEYS[:3]],
        run_id="run",
        round_id=1,
        client_id="a",
        rng=CsprngStream(),
    )
    first = aggregators[0]
    before = _state(first)
    envelope = sealed[0].envelope
    tampered = bytearray(envelope)
    tampered[-5] ^= 0xFF
    attempts = [
        (first, "a", bytes(tampered)),  # tampered
        (first, "a", envelope[:-10]),  # truncated
        (first, "a", b""),  # empty
        (first, "mallory", envelope),  # claimed by another client
        (aggregators[1], "a", envelope),  # misrouted to aggregator 2
        (next_round[0], "a", envelope),  # replayed into round 2
    ]
    for aggregator, client, body in attempts:
        aggregator_before = _state(aggregator)
        with pytest.raises(DecryptionError):
            aggregator.receive(client, body)
        assert _state(aggregator) == aggregator_before
    assert _state(first) == before
    assert not first.receive("a", envelope).duplicate
    assert first.receive("a", envelope).duplicate  # a retry is idempotent
    first.aggregate(["a"])
    with pytest.raises(RoundMismatchError, match="already aggregated"):
        first.receive("b", sealed[0].envelope)


def test_a_share_of_the_wrong_length_is_rejected() -> None:
    config = SecureAggregationConfig(threshold=2, num_aggregators=3, max_clients=8)
    aggregators = _aggregators(config, 3, KEYS)
    with pytest.raises(WireFormatError, match="values"):
        _upload(config, aggregators, "a", np.zeros(5, np.float32), 5)
    assert aggregators[0].clients == frozenset()


def test_aggregating_a_participant_the_aggregator_never_saw_is_refused() -> None:
    config = SecureAggregationConfig(threshold=2, num_aggregators=3, max_clients=8)
    aggregators = _aggregators(config, 2, KEYS)
    _upload(config, aggregators, "a", np.zeros(2, np.float32), 5, only={1, 2})
    with pytest.raises(ProtocolError, match="holds no share"):
        aggregators[2].aggregate(["a"])


def test_an_aggregator_answers_one_participant_list_per_round() -> None:
    config = SecureAggregationConfig(threshold=2, num_aggregators=3, max_clients=8)
    aggregators = _aggregators(config, 2, KEYS)
    for client in ("a", "b", "c"):
        _upload(config, aggregators, client, np.zeros(2, np.float32), 5)
    first = aggregators[0].aggregate(["a", "b", "c"])
    again = aggregators[0].aggregate(["c", "b", "a"])  # a retry gets the same answer
    np.testing.assert_array_equal(first.values, again.values)
    with pytest.raises(ProtocolError, match="reveal the difference"):
        aggregators[0].aggregate(["a", "b"])


def test_an_aggregator_refuses_to_sum_over_too_few_clients() -> None:
    config = SecureAggregationConfig(threshold=2, num_aggregators=3, max_clients=8)
    guarded = AggregatorRound(
        run_id="run",
        round_id=1,
        index=1,
        vector_length=2 + EXTRA_COORDINATES,
        field=MERSENNE_31,
        private_key=KEYS[0].private_key,
        archive=InMemoryShareArchive(),
        min_participants=2,
    )
    sealed = seal_update(
        np.zeros(2, np.float32),
        num_samples=5,
        loss=1.0,
        config=config,
        public_keys=[k.public_key for k in KEYS[:3]],
        run_id="run",
        round_id=1,
        client_id="victim",
        rng=CsprngStream(),
    )
    guarded.receive("victim", sealed[0].envelope)
    with pytest.raises(ProtocolError, match="at least 2"):
        guarded.aggregate(["victim"])


def test_a_rejected_share_for_a_later_round_does_not_drop_the_current_round() -> None:
    from veilfl.secagg.aggregator_node import AggregatorNode

    config = SecureAggregationConfig(threshold=2, num_aggregators=3, max_clients=8)
    node = AggregatorNode(
        index=1,
        keypair=KEYS[0],
        run_id="run",
        vector_length=2 + EXTRA_COORDINATES,
        archive_for_round=lambda r: InMemoryShareArchive(),
    )
    sealed = seal_update(
        np.zeros(2, np.float32),
        num_samples=5,
        loss=1.0,
        config=config,
        public_keys=[k.public_key for k in KEYS[:3]],
        run_id="run",
        round_id=1,
        client_id="a",
        rng=CsprngStream(),
    )
    node.receive(1, "a", sealed[0].envelope)
    with pytest.raises(DecryptionError):
        node.receive(7, "b", b"garbage that does not open")
    assert node.open_rounds == {1: frozenset({"a"})}
    with pytest.raises(ProtocolError, match="holds no share of round 7"):
        node.aggregate(7, ["a", "b"])
    assert node.open_rounds == {1: frozenset({"a"})}


def test_reconstruction_from_more_than_t_shares_refuses_inconsistent_ones() -> None:
    config = SecureAggregationConfig(threshold=2, num_aggregators=3, max_clients=8)
    aggregators = _aggregators(config, 3, KEYS)
    for client in ("a", "b"):
        _upload(config, aggregators, client, np.full(3, 0.25, np.float32), 100)
    shares = [a.aggregate(["a", "b"]) for a in aggregators]
    consistent = reconstruct_aggregate(
        shares, config=config, participants=("a", "b"), trained_versions=(0, 0)
    )
    np.testing.assert_allclose(consistent.mean_delta(), 0.25, atol=1e-5)
    corrupted = Share(index=3, values=(shares[2].values + 1) % MERSENNE_31.p)
    with pytest.raises(ReconstructionError, match="disagrees"):
        reconstruct_aggregate(
            [shares[0], shares[1], corrupted],
            config=config,
            participants=("a", "b"),
            trained_versions=(0, 0),
        )
