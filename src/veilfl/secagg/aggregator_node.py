"""An aggregator across rounds: one :class:`AggregatorRound` per round, old ones dropped.

Pure and synchronous; the HTTP aggregator service and the simulator drive it.
Memory stays O(model size) per open round: a round's state is dropped as soon as a
later round starts (the coordinator only starts round r + 1 after reconstructing r).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from veilfl.crypto.field import MERSENNE_31, PrimeField
from veilfl.crypto.keys import AggregatorKeyPair
from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError, RoundMismatchError
from veilfl.secagg.aggregator_state import AggregatorRound, ShareArchive, ShareReceipt

__all__ = ["AggregatorNode"]


class AggregatorNode:
    """Aggregator ``index`` of run ``run_id``.

    Args:
        index: This aggregator's share index, 1..m.
        keypair: Its HPKE key pair.
        run_id: The run it serves.
        vector_length: Length of the shared vectors (model size plus extra coordinates).
        archive_for_round: Makes the share archive of a round.
        field: The prime field.
        min_participants: The fewest clients this aggregator sums over.
    """

    def __init__(
        self,
        *,
        index: int,
        keypair: AggregatorKeyPair,
        run_id: str,
        vector_length: int,
        archive_for_round: Callable[[int], ShareArchive],
        field: PrimeField = MERSENNE_31,
        min_participants: int = 1,
    ) -> None:
        self.index = index
        self._min_participants = min_participants
        self._keypair = keypair
        self._run_id = run_id
        self._length = vector_length
        self._archive_for_round = archive_for_round
        self._field = field
        self._rounds: dict[int, AggregatorRound] = {}
        self._latest = 0

    @property
    def open_rounds(self) -> dict[int, frozenset[str]]:
        """Each round held, with the clients summed so far."""
        return {r: state.clients for r, state in self._rounds.items()}

    def receive(self, round_id: int, client_id: str, envelope: bytes) -> ShareReceipt:
        """Take one client's sealed share for ``round_id``.

        A share for a later round starts that round and drops the earlier ones, but
        only once it has been opened and checked: a rejected request changes nothing.

        Raises:
            RoundMismatchError: for a round older than one already started.
            DecryptionError, WireFormatError, ProtocolError: as
                :meth:`AggregatorRound.receive`; the state is then unchanged.
        """
        self._require_current_or_later(round_id)
        state = self._rounds.get(round_id)
        if state is not None:
            return state.receive(client_id, envelope)
        state = self._new_round(round_id)
        try:
            receipt = state.receive(client_id, envelope)
        except BaseException:
            state.discard()
            raise
        for old in list(self._rounds):
            self._rounds.pop(old).discard()
        self._latest = round_id
        self._rounds[round_id] = state
        return receipt

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

    def aggregate(self, round_id: int, participants: Iterable[str]) -> Share:
        """The aggregate share of ``round_id`` over exactly ``participants``.

        Raises:
            ProtocolError: if this aggregator holds no share of that round, or not one
                from every participant.
            RoundMismatchError: for a round already dropped.
        """
        self._require_current_or_later(round_id)
        state = self._rounds.get(round_id)
        if state is None:
            raise ProtocolError(
                f"Aggregator {self.index} holds no share of round {round_id}; choose "
                "aggregators that hold every participant."
            )
        return state.aggregate(participants)

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
            vector_length=self._length,
            field=self._field,
            private_key=self._keypair.private_key,
            archive=self._archive_for_round(round_id),
            min_participants=self._min_participants,
        )
