"""An aggregator across rounds: one :class:`AggregatorRound` per round, old ones dropped.

Pure and synchronous; the HTTP aggregator service and the simulators drive it. Memory
stays O(model size) per open round: a round's state is dropped as soon as a later round
starts (the coordinator only starts round r + 1 after it is done with r).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from veilfl.crypto.keys import AggregatorKeyPair
from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError, RoundMismatchError
from veilfl.secagg.aggregator_state import (
    AggregatorRound,
    OpenedShare,
    RoundKeys,
    ShareArchive,
    ShareReceipt,
    open_contribution,
)
from veilfl.secagg.bounds_messages import VerifierShare
from veilfl.secagg.commitment import CommitmentCertificate
from veilfl.secagg.contribution import ContributionLayout

__all__ = ["AggregatorNode"]


class AggregatorNode:
    """Aggregator ``index`` of run ``run_id``.

    Args:
        index: This aggregator's share index, 1..m.
        keypair: Its HPKE and signing keys.
        run_id: The run it serves.
        layout: The contributions' encoding and proof parameters.
        peers: Every aggregator's Ed25519 public key by index (its own included), as its
            operator pinned them: commitment certificates are checked against these.
        archive_for_round: Makes the share archive of a round.
        min_participants: The fewest clients this aggregator sums over.
    """

    def __init__(
        self,
        *,
        index: int,
        keypair: AggregatorKeyPair,
        run_id: str,
        layout: ContributionLayout,
        peers: Mapping[int, bytes],
        archive_for_round: Callable[[int], ShareArchive],
        min_participants: int = 1,
    ) -> None:
        if peers.get(index) != keypair.signing_public_bytes:
            raise ProtocolError(
                f"Aggregator {index}'s own signing key is not among the run's aggregators."
            )
        self.index = index
        self._min_participants = min_participants
        self._keys = RoundKeys(private_key=keypair.private_key, sign=keypair.sign, peers=peers)
        self._run_id = run_id
        self._layout = layout
        self._archive_for_round = archive_for_round
        self._rounds: dict[int, AggregatorRound] = {}
        self._latest = 0

    @property
    def open_rounds(self) -> dict[int, frozenset[str]]:
        """Each round held, with the clients summed so far."""
        return {r: state.clients for r, state in self._rounds.items()}

    @property
    def max_participants(self) -> int:
        """The most clients this aggregator sums (the encoding's limit)."""
        return self._layout.max_summands()

    def receive(self, round_id: int, client_id: str, envelope: bytes) -> ShareReceipt:
        """Take one client's sealed share for ``round_id``.

        A share for a later round starts that round and drops the earlier ones, but
        only once it has been opened and checked: a rejected request changes nothing.

        Raises:
            RoundMismatchError: for a round older than one already started.
            DecryptionError, WireFormatError, UpdateRejectedError, RoundMismatchError:
                as :meth:`AggregatorRound.receive`; the state is then unchanged.
        """
        self._require_current_or_later(round_id)
        state = self._rounds.get(round_id)
        if state is not None:
            return state.receive(client_id, envelope)
        return self.take_share(self.open_share(round_id, client_id, envelope))

    def open_share(self, round_id: int, client_id: str, envelope: bytes) -> OpenedShare:
        """Open and check a sealed share for ``round_id`` without changing any state
        (the costly part of a receipt; safe to run in parallel with anything else).

        Raises:
            RoundMismatchError: for a round older than one already started.
            As :func:`~veilfl.secagg.aggregator_state.open_contribution`.
        """
        self._require_current_or_later(round_id)
        return open_contribution(
            envelope,
            run_id=self._run_id,
            round_id=round_id,
            index=self.index,
            client_id=client_id,
            layout=self._layout,
            private_key=self._keys.private_key,
        )

    def take_share(self, opened: OpenedShare) -> ShareReceipt:
        """Store and add a share :meth:`open_share` accepted; a share for a later round
        starts that round and drops the earlier ones.

        Raises:
            RoundMismatchError: for a round older than one already started, or closed.
        """
        round_id = opened.round_id
        self._require_current_or_later(round_id)
        state = self._rounds.get(round_id)
        if state is None:
            for old in list(self._rounds):
                self._rounds.pop(old).discard()
            state = self._new_round(round_id)
            self._rounds[round_id] = state
            self._latest = round_id
        return state.take(opened)

    def restore(self, round_ids: Iterable[int]) -> int | None:
        """Take back the rounds an earlier run of this aggregator left in its archives:
        the latest is rebuilt (:meth:`AggregatorRound.restore`), older ones are cleared.

        Returns:
            The round restored, or None if there was none.
        """
        found = sorted(set(round_ids))
        if not found:
            return None
        for old in found[:-1]:
            self._archive_for_round(old).clear()
        latest = found[-1]
        state = self._new_round(latest)
        state.restore()
        self._rounds[latest] = state
        self._latest = latest
        return latest

    def holdings(self, round_id: int) -> frozenset[str]:
        """The clients whose shares of ``round_id`` this aggregator holds (none for a
        round it has no state of yet).

        Raises:
            RoundMismatchError: for a round already dropped.
        """
        self._require_current_or_later(round_id)
        state = self._rounds.get(round_id)
        return frozenset() if state is None else state.clients

    def verify(
        self, round_id: int, clients: Iterable[str], query_seed: bytes
    ) -> dict[str, VerifierShare]:
        """The answers to ``query_seed`` for ``clients`` (see :meth:`AggregatorRound.verify`)."""
        return self._round(round_id).verify(clients, query_seed)

    def commit(self, round_id: int, participants: Iterable[str]) -> bytes:
        """Commit to ``round_id``'s one list (see :meth:`AggregatorRound.commit`). An
        aggregator that holds no share of the round may commit too (it cannot release a
        sum, but its word counts towards the majority)."""
        self._require_current_or_later(round_id)
        state = self._rounds.get(round_id)
        if state is not None:
            return state.commit(participants)
        fresh = self._new_round(round_id)
        try:
            signature = fresh.commit(participants)
        except ProtocolError:
            fresh.discard()  # a refused commitment changes nothing
            raise
        for old in list(self._rounds):
            self._rounds.pop(old).discard()
        self._rounds[round_id] = fresh
        self._latest = round_id
        return signature

    def aggregate(
        self, round_id: int, participants: Iterable[str], certificate: CommitmentCertificate
    ) -> Share:
        """The certified aggregate share (see :meth:`AggregatorRound.aggregate`)."""
        return self._round(round_id).aggregate(participants, certificate)

    def _round(self, round_id: int) -> AggregatorRound:
        self._require_current_or_later(round_id)
        state = self._rounds.get(round_id)
        if state is None:
            raise ProtocolError(
                f"Aggregator {self.index} holds no share of round {round_id}; choose "
                "aggregators that hold every participant."
            )
        return state

    def _require_current_or_later(self, round_id: int) -> None:
        if round_id < self._latest:
            raise RoundMismatchError(
                f"Aggregator {self.index} has moved on to round {self._latest}; round "
                f"{round_id} is closed."
            )

    def _new_round(self, round_id: int) -> AggregatorRound:
        return AggregatorRound(
            run_id=self._run_id,
            round_id=round_id,
            index=self.index,
            layout=self._layout,
            keys=self._keys,
            archive=self._archive_for_round(round_id),
            min_participants=self._min_participants,
        )
