"""m aggregators living in the simulator's process, reached by function calls."""

from __future__ import annotations

import base64
from collections.abc import Collection, Sequence

from veilfl.crypto.envelope import PublicKey
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ProtocolError, VeilflError
from veilfl.protocol.effects import (
    AggregateShareReported,
    AggregatorFailed,
    CollectAggregateShares,
    CollectHoldings,
    Event,
    HoldingsReported,
)
from veilfl.protocol.messages import PublishedAggregator
from veilfl.secagg.aggregator_node import AggregatorNode
from veilfl.secagg.aggregator_state import InMemoryShareArchive, ShareArchive
from veilfl.secagg.client_shares import SealedShare
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig

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
            )
            for index, pair in enumerate(keypairs, start=1)
        )
        self._nodes = [
            AggregatorNode(
                index=index,
                keypair=keypairs[index - 1],
                run_id=run_id,
                vector_length=model_size + EXTRA_COORDINATES,
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

    def perform(self, command: CollectHoldings | CollectAggregateShares) -> list[Event]:
        """Answer one of the coordinator's commands, one event per aggregator asked."""
        events: list[Event] = []
        for index in command.aggregators:
            if index in self.down:
                events.append(AggregatorFailed(command.round_id, index, "it is down"))
                continue
            node = self._nodes[index - 1]
            try:
                if isinstance(command, CollectHoldings):
                    clients = node.holdings(command.round_id)
                    events.append(HoldingsReported(command.round_id, index, clients))
                else:
                    share = node.aggregate(command.round_id, command.participants)
                    events.append(AggregateShareReported(command.round_id, index, share))
            except VeilflError as exc:
                events.append(
                    AggregatorFailed(
                        command.round_id, index, str(exc), isinstance(exc, ProtocolError)
                    )
                )
        return events
