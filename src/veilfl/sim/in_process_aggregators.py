"""m aggregators living in the simulator's process, reached by function calls."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from veilfl.crypto.envelope import PublicKey
from veilfl.crypto.keys import generate_keypair
from veilfl.crypto.shamir import Share
from veilfl.errors import TransportError
from veilfl.secagg.aggregator_node import AggregatorNode
from veilfl.secagg.aggregator_state import InMemoryShareArchive, ShareArchive
from veilfl.secagg.client_shares import SealedShare
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig

__all__ = ["InProcessAggregators"]


def _memory_archive(round_id: int) -> ShareArchive:
    return InMemoryShareArchive()


class InProcessAggregators:
    """The simulator's aggregators; also the coordinator's link to them.

    Args:
        config: Secure-aggregation parameters (m aggregators are made).
        run_id: The simulated run.
        model_size: Parameters in the model.
        down: Aggregators that are unreachable throughout (to simulate failures).
    """

    def __init__(
        self,
        config: SecureAggregationConfig,
        *,
        run_id: str,
        model_size: int,
        down: Collection[int] = (),
    ) -> None:
        self._down = set(down)
        keypairs = [generate_keypair(config.kem) for _ in range(config.num_aggregators)]
        self._public_keys: list[PublicKey] = [k.public_key for k in keypairs]
        self._nodes = [
            AggregatorNode(
                index=index,
                keypair=keypairs[index - 1],
                run_id=run_id,
                vector_length=model_size + EXTRA_COORDINATES,
                archive_for_round=_memory_archive,
            )
            for index in range(1, config.num_aggregators + 1)
        ]

    @property
    def public_keys(self) -> list[PublicKey]:
        """Aggregator j's public key at position j - 1."""
        return list(self._public_keys)

    def upload(
        self, round_id: int, client_id: str, sealed: Sequence[SealedShare]
    ) -> tuple[int, ...]:
        """Deliver a client's sealed shares; return the indices that acknowledged."""
        acknowledged = []
        for share in sealed:
            if share.aggregator_index in self._down:
                continue
            self._nodes[share.aggregator_index - 1].receive(round_id, client_id, share.envelope)
            acknowledged.append(share.aggregator_index)
        return tuple(acknowledged)

    def aggregate(self, index: int, round_id: int, participants: Sequence[str]) -> Share:
        """Aggregator ``index``'s aggregate share (the coordinator's link)."""
        if index in self._down:
            raise TransportError(f"Aggregator {index} is down.")
        return self._nodes[index - 1].aggregate(round_id, participants)
