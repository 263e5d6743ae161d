"""m aggregators living in the simulator's process, reached by function calls."""

from __future__ import annotations

import base64
from collections.abc import Collection, Sequence

from veilfl.auth.identity import encode_public_key
from veilfl.crypto.envelope import PublicKey
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ProtocolError, VeilflError
from veilfl.protocol.effects import (
    AggregateShareReported,
    AggregatorFailed,
    CollectAggregateShares,
    CollectCommitments,
    CollectHoldings,
    CollectVerifierShares,
    CommitmentReported,
    Event,
    HoldingsReported,
    VerifierSharesReported,
)
from veilfl.protocol.messages import PublishedAggregator
from veilfl.secagg.aggregator_node import AggregatorNode
from veilfl.secagg.aggregator_state import InMemoryShareArchive, ShareArchive
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout, SealedShare

__all__ = ["InProcessAggregators"]


def _memory_archive(round_id: int) -> ShareArchive:
    return InMemoryShareArchive()


class InProcessAggregators:
    """The simulator's aggregators; they answer the coordinator's commands in process.

    Args:
        config: Secure-aggregation parameters (m aggregators are made).
        run_id: The simulated run.
        model_size: Parameters in the model.
        down: Aggregators that are unreachable for the whole simulation.
        min_participants: The fewest clients each aggregator sums over (its operator's
            setting, as on a real aggregator).
    """

    def __init__(
        self,
        config: SecureAggregationConfig,
        *,
        run_id: str,
        model_size: int,
        down: Collection[int] = (),
        min_participants: int = 1,
    ) -> None:
        self.down: set[int] = set(down)
        """Aggregators unreachable now (a test may change it)."""
        keypairs = [generate_keypair(config.kem) for _ in range(config.num_aggregators)]
        self._public_keys: list[PublicKey] = [k.public_key for k in keypairs]
        self._published = tuple(
            PublishedAggregator(
                index=index,
                url=f"inprocess://aggregator-{index}",
                kem=pair.kem,
                public_key=base64.b64encode(pair.public_bytes).decode(),
                signing_key=encode_public_key(pair.signing_public_bytes),
            )
            for index, pair in enumerate(keypairs, start=1)
        )
        peers = {j: pair.signing_public_bytes for j, pair in enumerate(keypairs, start=1)}
        layout = ContributionLayout(model_size, config)
        self._nodes = [
            AggregatorNode(
                index=index,
                keypair=keypairs[index - 1],
                run_id=run_id,
                layout=layout,
                peers=peers,
                archive_for_round=_memory_archive,
                min_participants=min_participants,
            )
            for index in range(1, config.num_aggregators + 1)
        ]

    @property
    def public_keys(self) -> list[PublicKey]:
        """Aggregator j's public key at position j - 1."""
        return list(self._public_keys)

    @property
    def published(self) -> tuple[PublishedAggregator, ...]:
        """What a coordinator would publish about these aggregators."""
        return self._published

    def upload(
        self, round_id: int, client_id: str, sealed: Sequence[SealedShare]
    ) -> tuple[int, ...]:
        """Deliver a client's sealed shares; return the indices that acknowledged."""
        acknowledged = []
        for share in sealed:
            if share.aggregator_index in self.down:
                continue
            try:
                self._nodes[share.aggregator_index - 1].receive(round_id, client_id, share.envelope)
            except VeilflError:
                continue  # refused, as an HTTP aggregator would answer 4xx
            acknowledged.append(share.aggregator_index)
        return tuple(acknowledged)

    def perform(
        self,
        command: CollectHoldings
        | CollectVerifierShares
        | CollectCommitments
        | CollectAggregateShares,
    ) -> list[Event]:
        """Answer one of the coordinator's commands, one event per aggregator asked."""
        events: list[Event] = []
        round_id = command.round_id
        for index in command.aggregators:
            if index in self.down:
                events.append(AggregatorFailed(round_id, index, "it is down"))
                continue
            node = self._nodes[index - 1]
            try:
                if isinstance(command, CollectHoldings):
                    events.append(HoldingsReported(round_id, index, node.holdings(round_id)))
                elif isinstance(command, CollectVerifierShares):
                    answers = node.verify(round_id, command.clients, command.query_seed)
                    events.append(VerifierSharesReported(round_id, index, answers))
                elif isinstance(command, CollectCommitments):
                    signature = node.commit(round_id, command.participants)
                    events.append(CommitmentReported(round_id, index, signature))
                else:
                    share = node.aggregate(round_id, command.participants, command.certificate)
                    events.append(AggregateShareReported(round_id, index, share))
            except VeilflError as exc:
                events.append(
                    AggregatorFailed(round_id, index, str(exc), isinstance(exc, ProtocolError))
                )
        return events
