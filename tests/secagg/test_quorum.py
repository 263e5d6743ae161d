"""The certificate quorum (issue 19): two certificates of one round share t signers, so
the coordinator with t - 1 colluding aggregators cannot get two participant lists
summed, whose difference would be one client's update. Played through the real
aggregator nodes; the colluders sign whatever the coordinator asks."""

from __future__ import annotations

import numpy as np
import pytest
from tests.contributions import make_nodes, seal

from veilfl.crypto.keys import generate_keypair
from veilfl.crypto.shamir import Share
from veilfl.errors import ConfigurationError, ProtocolError
from veilfl.secagg.aggregator_node import AggregatorNode
from veilfl.secagg.commitment import Commitment, CommitmentCertificate, default_quorum
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout, SealedShare
from veilfl.secagg.reconstruction import reconstruct_aggregate

KEYS = [generate_keypair("x25519") for _ in range(5)]
RUN = "run"
D = 6
UPDATES = {"victim": 0.3, "b": -0.1, "c": 0.2}
FIRST = ["b", "c", "victim"]
SECOND = ["b", "c"]  # FIRST minus the victim


def _nodes(
    config: SecureAggregationConfig,
    *,
    allow: bool = False,
    sealed: dict[str, list[SealedShare]] | None = None,
) -> list[AggregatorNode]:
    """Aggregators 1..m of a run in which every client of ``UPDATES`` uploaded (its
    ``sealed`` shares, if given)."""
    nodes = make_nodes(config, KEYS, run_id=RUN, dimension=D, allow_split_certificates=allow)
    for client, shares in (sealed or _sealed(config)).items():
        for share in shares:
            nodes[share.aggregator_index - 1].receive(1, client, share.envelope)
    return nodes


def _sealed(config: SecureAggregationConfig) -> dict[str, list[SealedShare]]:
    return {
        client: seal(
            config, KEYS, run_id=RUN, round_id=1, client_id=client, update=np.full(D, value)
        )
        for client, value in UPDATES.items()
    }


def _certificate(
    participants: list[str], *, honest: list[AggregatorNode], colluders: list[int]
) -> CommitmentCertificate:
    """The honest aggregators' real commitments, plus the colluders' signatures."""
    commitment = Commitment.of(RUN, 1, participants)
    signatures = {node.index: node.commit(1, participants) for node in honest}
    signatures |= {j: KEYS[j - 1].sign(commitment.message()) for j in colluders}
    return CommitmentCertificate(commitment, signatures)


def _released(node: AggregatorNode, participants: list[str], cert: CommitmentCertificate) -> bool:
    try:
        node.aggregate(1, participants, cert)
    except ProtocolError:
        return False
    return True


def test_the_default_quorum_is_the_least_whose_certificates_always_share_t_signers() -> None:
    # Oracle: the smallest q for which every two q-subsets of m share at least t.
    for m in range(1, 17):
        for t in range(1, m + 1):
            least = min(q for q in range(1, m + 1) if 2 * q - m >= t)
            assert default_quorum(num_aggregators=m, threshold=t) == least
            assert SecureAggregationConfig(threshold=t, num_aggregators=m).quorum == least


@pytest.mark.parametrize(("m", "t"), [(3, 2), (5, 3)])
def test_the_coordinator_and_t_minus_1_colluders_cannot_get_two_lists_summed(
    m: int, t: int
) -> None:
    config = SecureAggregationConfig(threshold=t, num_aggregators=m)
    honest = list(range(1, m - t + 2))
    colluders = list(range(m - t + 2, m + 1))  # t - 1 of them
    # The coordinator's best try: split the honest aggregators, each group commits to
    # one list, and the colluders sign both.
    for split in range(1, len(honest)):
        nodes = _nodes(config)
        first_group = [nodes[j - 1] for j in honest[:split]]
        second_group = [nodes[j - 1] for j in honest[split:]]
        first = _certificate(FIRST, honest=first_group, colluders=colluders)
        second = _certificate(SECOND, honest=second_group, colluders=colluders)
        first_out = [n.index for n in first_group if _released(n, FIRST, first)]
        second_out = [n.index for n in second_group if _released(n, SECOND, second)]
        assert not (first_out and second_out), (split, first_out, second_out)


def test_with_split_certificates_allowed_the_same_attack_recovers_the_victims_update() -> None:
    # What the default quorum prevents: m = 3, t = 2 with a majority of 2 (the quorum
    # before issue 19). Aggregator 3 colludes; it keeps its shares for both lists.
    config = SecureAggregationConfig(
        threshold=2, num_aggregators=3, quorum=2, allow_split_certificates=True
    )
    sealed = _sealed(config)
    nodes = _nodes(config, allow=True, sealed=sealed)
    twin = _nodes(config, allow=True, sealed=sealed)
    colluder, colluder_twin = nodes[2], twin[2]
    first = _certificate(FIRST, honest=[nodes[0]], colluders=[3])
    second = _certificate(SECOND, honest=[nodes[1]], colluders=[3])

    def total(participants: list[str], shares: list[Share]) -> np.ndarray:
        layout = ContributionLayout(D, config)
        kept = tuple(sorted(participants))
        aggregate = reconstruct_aggregate(
            shares, layout=layout, participants=kept, trained_versions=(0,) * len(kept)
        )
        return aggregate.weighted_delta_sum

    first_sum = total(
        FIRST, [nodes[0].aggregate(1, FIRST, first), colluder.aggregate(1, FIRST, first)]
    )
    second_sum = total(
        SECOND,
        [nodes[1].aggregate(1, SECOND, second), colluder_twin.aggregate(1, SECOND, second)],
    )
    victim = first_sum - second_sum  # its weight (0.5) times its update
    np.testing.assert_allclose(victim, 0.5 * UPDATES["victim"], atol=1e-3)


def test_a_splittable_quorum_is_refused_in_one_line_naming_the_flag() -> None:
    for t, m, q in ((2, 3, 2), (3, 5, 3), (2, 4, 2)):
        with pytest.raises(ConfigurationError) as refused:
            SecureAggregationConfig(threshold=t, num_aggregators=m, quorum=q)
        message = str(refused.value)
        assert "\n" not in message
        assert f"--quorum {q}" in message and "--allow-split-certificates" in message
        assert f"use --quorum {default_quorum(num_aggregators=m, threshold=t)}" in message
        allowed = SecureAggregationConfig(
            threshold=t, num_aggregators=m, quorum=q, allow_split_certificates=True
        )
        assert allowed.certificates_can_split
    for q in (-1, 4):
        with pytest.raises(ConfigurationError, match="--quorum must be between 1 and the 3"):
            SecureAggregationConfig(threshold=2, num_aggregators=3, quorum=q)
    assert not SecureAggregationConfig(threshold=2, num_aggregators=4).certificates_can_split


def test_an_aggregator_refuses_a_run_with_a_splittable_quorum_unless_its_operator_allows() -> None:
    # The coordinator's description may carry the run's own consent; the aggregator's
    # operator decides for its aggregator.
    config = SecureAggregationConfig(
        threshold=2, num_aggregators=3, quorum=2, allow_split_certificates=True
    )
    with pytest.raises(ConfigurationError, match="refuses it unless its operator passes"):
        make_nodes(config, KEYS, run_id=RUN, dimension=D)
    assert len(make_nodes(config, KEYS, run_id=RUN, dimension=D, allow_split_certificates=True))


def test_the_quorum_travels_in_the_configs_json() -> None:
    config = SecureAggregationConfig(threshold=2, num_aggregators=5, quorum=5)
    data = config.to_json()
    assert (data["quorum"], data["allow_split_certificates"]) == (5, False)
    assert SecureAggregationConfig.from_json(data) == config
    assert SecureAggregationConfig.from_json({**data, "quorum": 4}).quorum == 4
    with pytest.raises(ConfigurationError, match="--allow-split-certificates"):
        SecureAggregationConfig.from_json({**data, "quorum": 3})
    with pytest.raises(ConfigurationError, match="must be true or false"):
        SecureAggregationConfig.from_json({**data, "allow_split_certificates": "false"})
