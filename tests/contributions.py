"""Test support: clients' contributions sealed through the real pipeline, aggregator
nodes, and certificates from a quorum's commitments."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.keys import AggregatorKeyPair
from veilfl.privacy.clipping import clip_l2
from veilfl.secagg.aggregator_node import AggregatorNode
from veilfl.secagg.aggregator_state import InMemoryShareArchive, ShareArchive
from veilfl.secagg.commitment import Commitment, CommitmentCertificate
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout, SealedShare, seal_contribution
from veilfl.strategy.federated_evaluation import FederatedEvaluation

__all__ = ["certify", "make_nodes", "seal"]


def seal(
    config: SecureAggregationConfig,
    keys: Sequence[AggregatorKeyPair],
    *,
    run_id: str,
    round_id: int,
    client_id: str,
    update: np.ndarray,
    weight: float = 0.5,
    loss: float = 1.0,
    unclipped: bool | None = None,
    evaluation: FederatedEvaluation | None = None,
) -> list[SealedShare]:
    """One client's weighted update ``weight · update`` (clipped to the norm bound),
    with its federated ``evaluation`` if any, encoded, proven, shared and sealed as a
    real client does."""
    layout = ContributionLayout(update.size, config)
    weighted = clip_l2(update.astype(np.float64) * weight, clip_norm=config.norm_bound).vector
    rng = CsprngStream()
    measurement = layout.encode(
        weighted, weight=weight, loss=loss, unclipped=unclipped, rng=rng, evaluation=evaluation
    )
    return seal_contribution(
        measurement,
        layout=layout,
        public_keys=[k.public_key for k in keys[: config.num_aggregators]],
        run_id=run_id,
        round_id=round_id,
        client_id=client_id,
        rng=rng,
    )


def make_nodes(
    config: SecureAggregationConfig,
    keys: Sequence[AggregatorKeyPair],
    *,
    run_id: str,
    dimension: int,
    min_participants: int = 1,
    archive_for_round: Callable[[int, int], ShareArchive] | None = None,
    allow_split_certificates: bool = False,
) -> list[AggregatorNode]:
    """Aggregators 1..m of a run (archives in memory unless given, by (index, round))."""
    m = config.num_aggregators
    peers = {j: keys[j - 1].signing_public_bytes for j in range(1, m + 1)}
    layout = ContributionLayout(dimension, config)
    return [
        AggregatorNode(
            index=j,
            keypair=keys[j - 1],
            run_id=run_id,
            layout=layout,
            peers=peers,
            archive_for_round=(
                (lambda r: InMemoryShareArchive())
                if archive_for_round is None
                else (lambda r, j=j: archive_for_round(j, r))  # type: ignore[misc]
            ),
            min_participants=min_participants,
            allow_split_certificates=allow_split_certificates,
        )
        for j in range(1, m + 1)
    ]


def certify(
    nodes: Sequence[AggregatorNode], *, run_id: str, round_id: int, participants: Sequence[str]
) -> CommitmentCertificate:
    """The certificate ``nodes`` (their commitments) give ``participants``."""
    return CommitmentCertificate(
        Commitment.of(run_id, round_id, participants),
        {node.index: node.commit(round_id, participants) for node in nodes},
    )
