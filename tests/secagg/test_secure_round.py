"""Secure aggregation end to end in memory: clients prove and seal, aggregators check,
verify, commit and sum, the coordinator decides and reconstructs.

Malicious clients (issue 12) and a coordinator that asks for two lists (issue 10) are
played through the real pure code: the aggregators' states and the decision."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests import malicious
from tests.contributions import certify, make_nodes, seal

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import ShareContext
from veilfl.crypto.envelope import seal as hpke_seal
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.keys import generate_keypair
from veilfl.crypto.shamir import Share
from veilfl.errors import (
    DecryptionError,
    ProtocolError,
    ReconstructionError,
    RoundMismatchError,
)
from veilfl.secagg.aggregator_node import AggregatorNode
from veilfl.secagg.bounds_messages import ContributionShare
from veilfl.secagg.bounds_verifier import decide
from veilfl.secagg.commitment import Commitment, CommitmentCertificate
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import (
    EVAL_MAX_EXAMPLES,
    EVAL_UNITS,
    ContributionLayout,
    contribution_binding,
)
from veilfl.secagg.reconstruction import plan_aggregation, reconstruct_aggregate
from veilfl.strategy.aggregate import Aggregate
from veilfl.strategy.federated_evaluation import FederatedEvaluation

KEYS = [generate_keypair("x25519") for _ in range(6)]
RUN = "run"
D = 12


def _config(t: int = 2, m: int = 3) -> SecureAggregationConfig:
    return SecureAggregationConfig(threshold=t, num_aggregators=m, norm_bound=1.0)


def _upload(
    nodes: list[AggregatorNode],
    client: str,
    update: np.ndarray,
    *,
    config: SecureAggregationConfig,
    weight: float = 0.5,
    loss: float = 1.0,
    unclipped: bool | None = None,
    only: set[int] | None = None,
    round_id: int = 1,
) -> None:
    for share in seal(
        config,
        KEYS,
        run_id=RUN,
        round_id=round_id,
        client_id=client,
        update=update,
        weight=weight,
        loss=loss,
        unclipped=unclipped,
    ):
        if only is None or share.aggregator_index in only:
            nodes[share.aggregator_index - 1].receive(round_id, client, share.envelope)


def _valid(
    nodes: list[AggregatorNode], clients: list[str], config: SecureAggregationConfig
) -> list[str]:
    """The clients the coordinator's decision accepts, from every node's answers."""
    seed = os.urandom(32)
    answers = [node.verify(1, clients, seed) for node in nodes]
    bounds = ContributionLayout(D, config).bounds
    return [
        c
        for c in clients
        if decide([a[c] for a in answers], params=bounds, threshold=config.threshold).valid
    ]


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    clients=st.integers(1, 6),
    tm=st.sampled_from([(1, 1), (2, 3), (3, 5), (2, 2)]),
)
def test_the_honest_clients_aggregate_is_their_weighted_mean(
    seed: int, clients: int, tm: tuple[int, int]
) -> None:
    # Arrange
    t, m = tm
    config = _config(t, m)
    rng = np.random.default_rng(seed)
    updates = rng.uniform(-0.3, 0.3, size=(clients, D))
    weights = rng.uniform(0.05, 1.0, size=clients)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    names = [f"c{i}" for i in range(clients)]
    # Act
    for i, name in enumerate(names):
        _upload(nodes, name, updates[i], config=config, weight=float(weights[i]), loss=0.5 + i)
    valid = _valid(nodes, names, config)
    certificate = certify(nodes, run_id=RUN, round_id=1, participants=names)
    shares = [node.aggregate(1, names, certificate) for node in nodes[:t]]
    result = reconstruct_aggregate(
        shares,
        layout=ContributionLayout(D, config),
        participants=tuple(names),
        trained_versions=(0,) * clients,
    )
    # Assert: every honest client verifies, and the sum is within the rounding bound:
    # each coordinate of each client moves by less than one integer unit (1/scale).
    assert valid == names
    layout = ContributionLayout(D, config)
    expected = (weights[:, None] * updates).sum(axis=0)
    assert np.all(np.abs(result.weighted_delta_sum - expected) < clients / layout.scale)
    assert result.total_weight == pytest.approx(weights.sum(), abs=clients / 1024)
    assert result.mean_loss == pytest.approx(
        float(np.average(0.5 + np.arange(clients), weights=weights)), abs=0.05
    )


def _poisoned(
    kind: str, config: SecureAggregationConfig, client: str, excess: int = 1
) -> list[bytes]:
    """Envelopes of a malicious client, one per aggregator, ``excess`` (>= 1) past what
    is allowed where the kind has a size. Its public parts match its shares (so every
    aggregator takes them): only the proof can catch it."""
    bounds = ContributionLayout(D, config).bounds
    binding = contribution_binding(RUN, 1, client)
    honest = [100] * D + [512, 0, 0, 0, 0, 1]
    count = 10 * EVAL_UNITS  # an evaluation over 10 examples
    P = MERSENNE_31.modulus

    def cheat(measurement: list[int], **options: object) -> list[ContributionShare]:
        return malicious.cheat(
            bounds,
            measurement,
            threshold=config.threshold,
            num_shares=config.num_aggregators,
            binding=binding,
            **options,  # type: ignore[arg-type]
        )

    if kind == "out-of-range coordinate":
        shares = cheat([min(bounds.norm_bound + excess, P // 2), *honest[1:]])
    elif kind == "field element (p - 1)/4":
        shares = cheat([(P - 1) // 4, *honest[1:]])
    elif kind == "norm over the bound":  # B^2 + x^2 > B^2
        shares = cheat([bounds.norm_bound, excess % bounds.norm_bound + 1, *honest[2:]])
    elif kind == "four halves (field norm 1)":
        shares = cheat([(P + 1) // 2] * 4 + [0] * (D - 4) + honest[D:])
    elif kind == "negative weight":
        shares = cheat([*honest[:D], -excess, 0, 0, 0, 0, 1])
    elif kind == "unclipped bit 0":
        shares = cheat([*honest[:D], 512, 0, 0, 0, 0, 0])
    elif kind == "weight 0, largest loss":
        shares = cheat([*honest[:D], 0, 1024, 0, 0, 0, 1])
    elif kind == "loss above its weight":
        shares = cheat([*honest[:D], 512, 512 + excess % 512 + 1, 0, 0, 0, 1])
    elif kind == "more correct than evaluated":
        correct = count + EVAL_UNITS * (1 + excess % 1000)
        shares = cheat([*honest[:D], 512, 0, count, 0, correct, 1])
    elif kind == "evaluation loss above 16 per example":
        shares = cheat([*honest[:D], 512, 0, count, count + 1 + excess % 1000, 0, 1])
    elif kind == "evaluation count off whole examples":
        shares = cheat([*honest[:D], 512, 0, count + 1 + excess % (EVAL_UNITS - 1), 0, 0, 1])
    elif kind == "correct count off whole examples":
        shares = cheat([*honest[:D], 512, 0, count, 0, 1 + excess % (EVAL_UNITS - 1), 1])
    elif kind == "inconsistent shares":

        def shift(full: list[np.ndarray]) -> None:
            full[-1][0] = (full[-1][0] + excess) % P

        shares = cheat(honest, tamper=shift)
    elif kind == "a proof for other shares":
        mine, theirs = cheat(honest), cheat(honest)
        shares = [mine[0], *theirs[1:]]
    else:
        raise AssertionError(kind)
    return [
        hpke_seal(
            s.to_bytes(),
            KEYS[s.index - 1].public_key,
            context=ShareContext(
                run_id=RUN, round_id=1, client_id=client, aggregator_index=s.index
            ),
        )
        for s in shares
    ]


POISONS = [
    "out-of-range coordinate",
    "field element (p - 1)/4",
    "norm over the bound",
    "four halves (field norm 1)",
    "negative weight",
    "unclipped bit 0",
    "weight 0, largest loss",
    "loss above its weight",
    "more correct than evaluated",
    "evaluation loss above 16 per example",
    "evaluation count off whole examples",
    "correct count off whole examples",
    "inconsistent shares",
    "a proof for other shares",
]


@settings(max_examples=len(POISONS) * 2, deadline=None)
@given(
    kind=st.sampled_from(POISONS),
    excess=st.integers(1, 10**6),
    honest_value=st.floats(-0.28, 0.28),  # inside the norm bound 1 at d = 12
)
def test_a_poisoned_contribution_is_always_excluded_and_the_honest_sum_is_exact(
    kind: str, excess: int, honest_value: float
) -> None:
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    honest = [f"h{i}" for i in range(3)]
    update = np.full(D, honest_value)
    for name in honest:
        _upload(nodes, name, update, config=config, weight=1.0)
    for index, envelope in enumerate(_poisoned(kind, config, "mallory", excess), start=1):
        nodes[index - 1].receive(1, "mallory", envelope)  # every aggregator takes it
    valid = _valid(nodes, [*honest, "mallory"], config)
    assert valid == honest
    certificate = certify(nodes, run_id=RUN, round_id=1, participants=valid)
    result = reconstruct_aggregate(
        [node.aggregate(1, valid, certificate) for node in nodes],
        layout=ContributionLayout(D, config),
        participants=tuple(valid),
        trained_versions=(0, 0, 0),
    )
    np.testing.assert_allclose(
        result.mean_delta(), honest_value, atol=3 / ContributionLayout(D, config).scale
    )


def _sum_of(
    nodes: list[AggregatorNode], valid: list[str], config: SecureAggregationConfig
) -> Aggregate:
    certificate = certify(nodes, run_id=RUN, round_id=1, participants=valid)
    return reconstruct_aggregate(
        [node.aggregate(1, valid, certificate) for node in nodes],
        layout=ContributionLayout(D, config),
        participants=tuple(valid),
        trained_versions=(0,) * len(valid),
    )


def test_an_unclipped_bit_of_zero_is_excluded_and_both_honest_bits_are_counted() -> None:
    # Arrange: two honest clients under adaptive clipping, one clipped (-1/2) and one
    # not (+1/2), and a client whose bit is 0 with an otherwise honest proof: it would
    # stay out of the count it is charged for.
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    _upload(nodes, "clipped", np.full(D, 0.2), config=config, unclipped=False)
    _upload(nodes, "unclipped", np.full(D, 0.2), config=config, unclipped=True)
    _upload(nodes, "plain", np.full(D, 0.2), config=config, unclipped=None)
    for index, envelope in enumerate(_poisoned("unclipped bit 0", config, "mallory"), start=1):
        nodes[index - 1].receive(1, "mallory", envelope)
    # Act
    valid = _valid(nodes, ["clipped", "unclipped", "plain", "mallory"], config)
    result = _sum_of(nodes, valid, config)
    # Assert: the aggregators' verification drops the 0; -1/2, +1/2 and the +1/2 of a
    # client that reports no bit (a constant) pass and sum exactly.
    assert valid == ["clipped", "unclipped", "plain"]
    assert result.within_bound_count == 0.5


def test_a_client_of_weight_zero_cannot_inflate_the_mean_loss() -> None:
    # Arrange: three honest clients of weight 1 report loss 0.5; mallory, of weight 0,
    # reports the largest loss coordinate (16), which alone would lift the mean loss
    # from 0.5 to (1.5 + 16) / 3, about 12 times.
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    honest = ["a", "b", "c"]
    for name in honest:
        _upload(nodes, name, np.full(D, 0.1), config=config, weight=1.0, loss=0.5)
    poison = _poisoned("weight 0, largest loss", config, "mallory")
    for index, envelope in enumerate(poison, start=1):
        nodes[index - 1].receive(1, "mallory", envelope)
    # Act
    valid = _valid(nodes, [*honest, "mallory"], config)
    result = _sum_of(nodes, valid, config)
    # Assert
    assert valid == honest
    assert result.mean_loss == pytest.approx(0.5, abs=1e-3)


def test_an_honest_client_of_weight_zero_encodes_no_loss() -> None:
    layout = ContributionLayout(D, _config())
    rng = CsprngStream()
    for weight, loss, expected in ((0.0, 9.0, 0), (0.5, 100.0, 512), (1.0, 4.0, 256)):
        encoded = layout.encode(np.zeros(D), weight=weight, loss=loss, unclipped=None, rng=rng)
        assert encoded[D + 1] == expected <= encoded[D]


def test_round_survives_a_client_that_reached_only_some_aggregators() -> None:
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    _upload(nodes, "a", np.full(D, 0.25), config=config)
    _upload(nodes, "b", np.full(D, 0.25), config=config)
    _upload(nodes, "dropped", np.full(D, -0.2), config=config, only={1})
    held = {"a": {1, 2, 3}, "b": {1, 2, 3}, "dropped": {1}}
    plan = plan_aggregation(held, alive={1, 2, 3}, threshold=2, min_participants=2)
    assert plan.participants == ("a", "b") and plan.aggregators == (1, 2, 3)
    certificate = certify(nodes, run_id=RUN, round_id=1, participants=plan.participants)
    # Aggregator 1 holds the dropped client's share and subtracts it again.
    shares = [
        nodes[0].aggregate(1, plan.participants, certificate),
        nodes[2].aggregate(1, plan.participants, certificate),
    ]
    result = reconstruct_aggregate(
        shares,
        layout=ContributionLayout(D, config),
        participants=plan.participants,
        trained_versions=(0, 0),
    )
    np.testing.assert_allclose(result.mean_delta(), 0.25, atol=1e-2)


def test_plan_prefers_the_aggregators_that_hold_the_most_clients() -> None:
    acks = {"a": {1, 2}, "b": {1, 2}, "c": {2, 3}, "d": {1, 2, 3}}
    plan = plan_aggregation(acks, alive={1, 2, 3}, threshold=2, min_participants=1)
    assert plan.participants == ("a", "b", "d")
    assert plan.aggregators == (1, 2)
    without_two = plan_aggregation(acks, alive={1, 3}, threshold=2, min_participants=1)
    assert without_two.participants == ("d",)
    with pytest.raises(ProtocolError, match="cannot be aggregated"):
        plan_aggregation(acks, alive={1, 3}, threshold=2, min_participants=2)


def test_tampered_truncated_replayed_and_misrouted_shares_change_nothing() -> None:
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    sealed = seal(config, KEYS, run_id=RUN, round_id=1, client_id="a", update=np.zeros(D))
    first = nodes[0]
    envelope = sealed[0].envelope
    tampered = bytearray(envelope)
    tampered[-5] ^= 0xFF
    attempts = [
        (first, 1, "a", bytes(tampered)),  # tampered
        (first, 1, "a", envelope[:-10]),  # truncated
        (first, 1, "a", b""),  # empty
        (first, 1, "mallory", envelope),  # claimed by another client
        (nodes[1], 1, "a", envelope),  # misrouted to aggregator 2
        (first, 2, "a", envelope),  # replayed into round 2
    ]
    for node, round_id, client, body in attempts:
        before = node.open_rounds
        with pytest.raises(DecryptionError):
            node.receive(round_id, client, body)
        assert node.open_rounds == before
    assert not first.receive(1, "a", envelope).duplicate
    assert first.receive(1, "a", envelope).duplicate  # a retry is idempotent
    first.commit(1, ["a"])
    with pytest.raises(RoundMismatchError, match="already closed"):
        first.receive(
            1,
            "b",
            seal(config, KEYS, run_id=RUN, round_id=1, client_id="b", update=np.zeros(D))[
                0
            ].envelope,
        )


def test_aggregating_a_participant_the_aggregator_never_saw_is_refused() -> None:
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    _upload(nodes, "a", np.zeros(D), config=config, only={1, 2})
    certificate = certify(nodes, run_id=RUN, round_id=1, participants=["a"])
    with pytest.raises(ProtocolError, match="holds no share"):
        nodes[2].aggregate(1, ["a"], certificate)


def test_an_aggregator_commits_to_one_participant_list_per_round() -> None:
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    for client in ("a", "b", "c"):
        _upload(nodes, client, np.zeros(D), config=config)
    signature = nodes[0].commit(1, ["a", "b", "c"])
    assert nodes[0].commit(1, ["c", "b", "a"]) == signature  # a retry: the same answer
    with pytest.raises(ProtocolError, match="reveal the difference"):
        nodes[0].commit(1, ["a", "b"])


def test_an_aggregator_refuses_lists_below_its_minimum_or_above_the_encodings_maximum() -> None:
    config = _config(2, 3)
    guarded = make_nodes(config, KEYS, run_id=RUN, dimension=D, min_participants=2)
    _upload(guarded, "victim", np.zeros(D), config=config)
    with pytest.raises(ProtocolError, match="at least 2"):
        guarded[0].commit(1, ["victim"])
    too_many = [f"c{i}" for i in range(guarded[0].max_participants + 1)]
    with pytest.raises(ProtocolError, match="at most"):
        guarded[1].commit(1, too_many)


def test_two_disjoint_groups_of_t_cannot_each_release_a_list() -> None:
    # m = 4, t = 2: the attack of issue 10. Aggregators 1-2 are asked to sum {A, B, C},
    # aggregators 3-4 {B, C}; the difference would be A's update.
    config = _config(2, 4)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    for client in ("A", "B", "C"):
        _upload(nodes, client, np.full(D, 0.1), config=config)
    first = certify(nodes[:2], run_id=RUN, round_id=1, participants=["A", "B", "C"])
    second = certify(nodes[2:], run_id=RUN, round_id=1, participants=["B", "C"])
    for node, certificate, wanted in (
        (nodes[0], first, ["A", "B", "C"]),
        (nodes[1], first, ["A", "B", "C"]),
        (nodes[2], second, ["B", "C"]),
        (nodes[3], second, ["B", "C"]),
    ):
        with pytest.raises(ProtocolError, match="3 of the 4 aggregators must have committed"):
            node.aggregate(1, wanted, certificate)
    # Nor can the coordinator borrow the other group's commitments: each signed one list.
    with pytest.raises(ProtocolError, match="reveal the difference"):
        nodes[2].commit(1, ["A", "B", "C"])


def test_a_certificate_must_be_for_this_list_and_signed_by_the_runs_aggregators() -> None:
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    for client in ("a", "b"):
        _upload(nodes, client, np.zeros(D), config=config)
    impostor = generate_keypair()
    forged = CommitmentCertificate(
        Commitment.of(RUN, 1, ["a", "b"]),
        {j: impostor.sign(Commitment.of(RUN, 1, ["a", "b"]).message()) for j in (1, 2, 3)},
    )
    with pytest.raises(ProtocolError, match="0 valid aggregator commitments"):
        nodes[0].aggregate(1, ["a", "b"], forged)
    other_list = certify(nodes, run_id=RUN, round_id=1, participants=["a", "b"])
    with pytest.raises(ProtocolError, match="another run, round or participant list"):
        nodes[0].aggregate(1, ["a"], other_list)


def test_reconstruction_from_more_than_t_shares_refuses_inconsistent_ones() -> None:
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    for client in ("a", "b"):
        _upload(nodes, client, np.full(D, 0.25), config=config)
    certificate = certify(nodes, run_id=RUN, round_id=1, participants=["a", "b"])
    shares = [node.aggregate(1, ["a", "b"], certificate) for node in nodes]
    layout = ContributionLayout(D, config)
    consistent = reconstruct_aggregate(
        shares, layout=layout, participants=("a", "b"), trained_versions=(0, 0)
    )
    np.testing.assert_allclose(consistent.mean_delta(), 0.25, atol=1e-2)
    corrupted = Share(index=3, values=(shares[2].values + 1) % MERSENNE_31.p)
    with pytest.raises(ReconstructionError, match="disagrees"):
        reconstruct_aggregate(
            [shares[0], shares[1], corrupted],
            layout=layout,
            participants=("a", "b"),
            trained_versions=(0, 0),
        )


def test_a_rejected_share_for_a_later_round_does_not_drop_the_current_round() -> None:
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    node = nodes[0]
    _upload(nodes, "a", np.zeros(D), config=config, only={1})
    with pytest.raises(DecryptionError):
        node.receive(7, "b", b"garbage that does not open")
    assert node.open_rounds == {1: frozenset({"a"})}
    with pytest.raises(ProtocolError, match="holds no share of round 7"):
        node.verify(7, ["a", "b"], os.urandom(32))
    assert node.open_rounds == {1: frozenset({"a"})}


def test_an_aggregator_answers_one_query_seed_per_round() -> None:
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    _upload(nodes, "a", np.zeros(D), config=config)
    seed = os.urandom(32)
    nodes[0].verify(1, ["a"], seed)
    nodes[0].verify(1, ["a"], seed)  # the same query again: harmless
    with pytest.raises(ProtocolError, match="another query"):
        nodes[0].verify(1, ["a"], os.urandom(32))


@settings(max_examples=6, deadline=None)
@given(
    evaluations=st.lists(
        st.tuples(st.integers(1, 300), st.floats(0.0, 20.0), st.floats(0.0, 1.0)),
        min_size=1,
        max_size=4,
    )
)
def test_the_federated_evaluation_sums_to_the_example_weighted_means(
    evaluations: list[tuple[int, float, float]],
) -> None:
    # Arrange: each client evaluated the model it received on its own examples, with a
    # mean loss (above 16 is range-clipped) and an accuracy; one more sends none.
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    names = [f"c{i}" for i in range(len(evaluations))]
    for name, (examples, loss, accuracy) in zip(names, evaluations, strict=True):
        evaluation = FederatedEvaluation.of_means(loss=loss, accuracy=accuracy, examples=examples)
        for share in seal(
            config,
            KEYS,
            run_id=RUN,
            round_id=1,
            client_id=name,
            update=np.full(D, 0.1),
            evaluation=evaluation,
        ):
            nodes[share.aggregator_index - 1].receive(1, name, share.envelope)
    _upload(nodes, "silent", np.full(D, 0.1), config=config)
    # Act
    valid = _valid(nodes, [*names, "silent"], config)
    result = _sum_of(nodes, valid, config)
    # Assert: against the one-client-at-a-time oracle (losses clipped to [0, 16]; the
    # loss sum is rounded to 16 / EVAL_UNITS per client).
    counts = np.array([e[0] for e in evaluations], dtype=np.float64)
    corrects = np.array([round(e[2] * e[0]) for e in evaluations], dtype=np.float64)
    losses = np.array([min(e[1], 16.0) for e in evaluations])
    assert valid == [*names, "silent"]
    assert result.evaluation is not None
    assert result.evaluation.examples == counts.sum()
    assert result.evaluation.accuracy == pytest.approx(corrects.sum() / counts.sum())
    assert result.evaluation.loss == pytest.approx(
        float(np.average(losses, weights=counts)), abs=len(names) * 16 / EVAL_UNITS / counts.sum()
    )


def test_without_evaluations_the_aggregate_carries_none() -> None:
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    _upload(nodes, "a", np.full(D, 0.1), config=config)
    assert _sum_of(nodes, _valid(nodes, ["a"], config), config).evaluation is None


def test_a_client_that_claims_more_correct_than_evaluated_is_excluded() -> None:
    # Arrange: two honest clients evaluated 10 examples, 5 right each; mallory claims
    # 1,000 right answers out of 10 examples, which would lift the accuracy to ~33.
    config = _config(2, 3)
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D)
    honest = ["a", "b"]
    for name in honest:
        evaluation = FederatedEvaluation(examples=10, loss_sum=5.0, correct=5)
        for share in seal(
            config,
            KEYS,
            run_id=RUN,
            round_id=1,
            client_id=name,
            update=np.full(D, 0.1),
            evaluation=evaluation,
        ):
            nodes[share.aggregator_index - 1].receive(1, name, share.envelope)
    poison = _poisoned("more correct than evaluated", config, "mallory", excess=999)
    for index, envelope in enumerate(poison, start=1):
        nodes[index - 1].receive(1, "mallory", envelope)
    # Act
    valid = _valid(nodes, [*honest, "mallory"], config)
    result = _sum_of(nodes, valid, config)
    # Assert
    assert valid == honest
    assert result.evaluation is not None
    assert result.evaluation.examples == 20
    assert result.evaluation.accuracy == pytest.approx(0.5)


def test_a_large_evaluation_counts_as_at_most_eval_max_examples_with_its_means() -> None:
    layout = ContributionLayout(D, _config())
    big = FederatedEvaluation.of_means(loss=2.0, accuracy=0.75, examples=EVAL_MAX_EXAMPLES * 3)
    encoded = layout.encode(
        np.zeros(D), weight=0.5, loss=1.0, unclipped=None, rng=CsprngStream(), evaluation=big
    )
    count, loss, correct = (int(v) for v in encoded[D + 2 : D + 5])
    assert count == EVAL_MAX_EXAMPLES * EVAL_UNITS
    assert correct == round(0.75 * EVAL_MAX_EXAMPLES) * EVAL_UNITS
    assert loss == pytest.approx(EVAL_MAX_EXAMPLES * 2.0 / 16 * EVAL_UNITS, abs=1)
