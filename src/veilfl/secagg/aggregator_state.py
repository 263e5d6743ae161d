"""One aggregator's part of secure aggregation, as a pure state machine.

An aggregator receives, from each client, one HPKE-sealed Shamir share of the
client's encoded update. It opens the envelope (the HPKE ``info`` binds run, round,
client and this aggregator's index, so a share replayed into another round or sent
to another aggregator does not open), checks it, and adds it into a running sum:
memory is O(model size) however many clients report. It never sees a plaintext
update: a share on its own is uniformly random (Shamir 1979).

When the coordinator closes the round it names the final participant list P. The
aggregator answers with the sum of the shares of exactly P. Clients it summed but
that are not in P (they uploaded here but not to every aggregator the coordinator
uses, or reported too late) are subtracted again; their individual shares are kept
in a :class:`ShareArchive` for that purpose, which the edge backs with files so that
memory stays O(model size).

The archive is also what makes an aggregator restart-safe: it holds every share the
aggregator acknowledged and, before the aggregate leaves, the participant list it
answered. :meth:`AggregatorRound.restore` rebuilds the round from it, so a restarted
aggregator still holds its shares and still refuses a second participant list.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from veilfl.crypto.envelope import PrivateKey, ShareContext, decode_share, open_sealed
from veilfl.crypto.field import PrimeField
from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError, RoundMismatchError

__all__ = ["AggregatorRound", "InMemoryShareArchive", "ShareArchive", "ShareReceipt"]


class ShareArchive(Protocol):
    """Keeps each client's share of one round, and the answer given, until the round
    is dropped."""

    def put(self, client_id: str, share: Share) -> None:
        """Store ``client_id``'s share (durably, before it is acknowledged)."""

    def get(self, client_id: str) -> Share:
        """Return the stored share of ``client_id``."""
        ...

    def items(self) -> Iterator[tuple[str, Share]]:
        """Every stored (client id, share)."""
        ...

    def record_answer(self, participants: frozenset[str]) -> None:
        """Remember (durably) the participant list the round was aggregated over."""

    def recorded_answer(self) -> frozenset[str] | None:
        """The participant list recorded by :meth:`record_answer`, if any."""
        ...

    def clear(self) -> None:
        """Forget every stored share and the answer."""


class InMemoryShareArchive:
    """A :class:`ShareArchive` in memory (simulator and tests)."""

    def __init__(self) -> None:
        self._shares: dict[str, Share] = {}
        self._answer: frozenset[str] | None = None

    def put(self, client_id: str, share: Share) -> None:
        self._shares[client_id] = share

    def get(self, client_id: str) -> Share:
        return self._shares[client_id]

    def items(self) -> Iterator[tuple[str, Share]]:
        return iter(list(self._shares.items()))

    def record_answer(self, participants: frozenset[str]) -> None:
        self._answer = participants

    def recorded_answer(self) -> frozenset[str] | None:
        return self._answer

    def clear(self) -> None:
        self._shares.clear()
        self._answer = None


@dataclass(frozen=True)
class ShareReceipt:
    """The answer to a share upload."""

    aggregator_index: int
    round_id: int
    client_id: str
    duplicate: bool


class AggregatorRound:
    """Aggregator ``index``'s running sum of shares for one round of one run.

    Args:
        run_id: The run (bound into every envelope).
        round_id: The round (bound into every envelope).
        index: This aggregator's share index, 1..m.
        vector_length: Length of every shared vector.
        field: The prime field of the shares.
        private_key: This aggregator's HPKE private key.
        archive: Where individual shares wait until the round is aggregated.
        min_participants: The fewest clients this aggregator will ever sum over; a
            sum over one client would be that client's share.
    """

    def __init__(
        self,
        *,
        run_id: str,
        round_id: int,
        index: int,
        vector_length: int,
        field: PrimeField,
        private_key: PrivateKey,
        archive: ShareArchive,
        min_participants: int = 1,
    ) -> None:
        self._run_id = run_id
        self._min_participants = min_participants
        self._answered: frozenset[str] | None = None
        self._round_id = round_id
        self._index = index
        self._length = vector_length
        self._field = field
        self._key = private_key
        self._archive = archive
        self._sum = np.zeros(vector_length, dtype=np.uint64)
        self._clients: set[str] = set()
        self._sealed = False

    def restore(self) -> None:
        """Take back what the archive holds (after a restart): every stored share is
        summed again and, if the round was already aggregated, it is sealed with the
        participant list answered. Call it on a fresh state only.

        Raises:
            ProtocolError: if a stored share has the wrong index or length.
        """
        assert not self._clients, "restore() rebuilds a fresh state only"
        for client_id, share in self._archive.items():
            if share.index != self._index or share.values.shape != (self._length,):
                raise ProtocolError(
                    f"The stored share of {client_id!r} in round {self._round_id} does not "
                    f"belong to aggregator {self._index}; the spool holds another's state."
                )
            self._sum += share.values
            self._clients.add(client_id)
        answered = self._archive.recorded_answer()
        if answered is not None:
            self._answered = answered
            self._sealed = True

    @property
    def round_id(self) -> int:
        """The round this state sums."""
        return self._round_id

    @property
    def clients(self) -> frozenset[str]:
        """Clients whose shares are in the sum."""
        return frozenset(self._clients)

    def receive(self, client_id: str, envelope: bytes) -> ShareReceipt:
        """Open, check and add one client's sealed share.

        A second upload from the same client is acknowledged and ignored. Any
        rejection leaves the state exactly as it was.

        Raises:
            DecryptionError: the envelope is tampered, truncated, replayed or misrouted.
            WireFormatError: the opened share is malformed or of the wrong length.
            RoundMismatchError: the round was already aggregated.
        """
        if self._sealed:
            raise RoundMismatchError(
                f"Round {self._round_id} was already aggregated by aggregator {self._index}."
            )
        if client_id in self._clients:
            return ShareReceipt(self._index, self._round_id, client_id, duplicate=True)
        context = ShareContext(
            run_id=self._run_id,
            round_id=self._round_id,
            client_id=client_id,
            aggregator_index=self._index,
        )
        plaintext = open_sealed(envelope, self._key, context=context)
        share = decode_share(plaintext, expected_length=self._length, field=self._field)
        if share.index != self._index:
            raise ProtocolError(
                f"The share is for aggregator {share.index}, not aggregator {self._index}."
            )
        self._archive.put(client_id, share)
        # Unreduced: each share is below 2**31, so 2**33 of them fit in a uint64.
        self._sum += share.values
        self._clients.add(client_id)
        return ShareReceipt(self._index, self._round_id, client_id, duplicate=False)

    def aggregate(self, participants: Iterable[str]) -> Share:
        """The sum of the shares of exactly ``participants``; no share is accepted after.

        An aggregator answers for one participant list per round. A retry with the same
        list gets the same answer; a different list is refused, since two sums over
        lists that differ in one client would reveal that client's share.

        Raises:
            ProtocolError: if a participant's share never reached this aggregator, the
                list is shorter than the minimum, or another list was already answered.
        """
        wanted = frozenset(participants)
        if self._answered is not None and wanted != self._answered:
            raise ProtocolError(
                f"Aggregator {self._index} already answered round {self._round_id} for another "
                "participant list; answering a second list would reveal the difference."
            )
        if len(wanted) < self._min_participants:
            raise ProtocolError(
                f"Aggregator {self._index} sums over at least {self._min_participants} clients; "
                f"the coordinator asked for {len(wanted)}."
            )
        missing = wanted - self._clients
        if missing:
            raise ProtocolError(
                f"Aggregator {self._index} holds no share from {len(missing)} of the "
                f"participants (for example {sorted(missing)[0]!r}); choose aggregators "
                "that hold every participant."
            )
        total = self._sum.copy()
        for client_id in sorted(self._clients - wanted):
            total -= self._archive.get(client_id).values  # it is part of the raw sum
        np.remainder(total, self._field.p, out=total)
        if self._answered is None:
            self._archive.record_answer(wanted)  # before the answer can leave
        self._sealed = True
        self._answered = wanted
        return Share(index=self._index, values=total)

    def discard(self) -> None:
        """Forget the round's shares."""
        self._archive.clear()
        self._clients.clear()
        self._sum = np.zeros(self._length, dtype=np.uint64)
