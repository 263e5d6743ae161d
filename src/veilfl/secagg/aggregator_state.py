"""One aggregator's part of secure aggregation for one round, as a pure state machine.

An aggregator receives, from each client, one HPKE-sealed share of the client's
contribution (:mod:`veilfl.secagg.contribution`). It opens the envelope (the HPKE
``info`` binds run, round, client and this aggregator's index, so a share replayed into
another round or sent to another aggregator does not open), checks it against its public
part and computes its wraparound projections (:func:`~veilfl.secagg.bounds.prepare_share`),
and adds the measurement share into a running sum: memory is O(model size) however many
clients report. It never sees a plaintext update: a share on its own is uniformly random
(Shamir 1979), and a seed share is a seed for a uniformly random vector.

Closing a round takes three requests, all from the coordinator:

1. **verify**: the answer (:class:`~veilfl.secagg.bounds.VerifierShare`) to one query
   seed for each named client; the coordinator decides from t or more aggregators'
   answers whose contribution is valid. An aggregator answers one query seed per round:
   answers to two queries together would reveal wire values.
2. **commit**: a signature over the final participant list (run, round, list digest).
   An aggregator commits to one list per round, at least ``min_participants`` long and
   at most ``max_participants`` (what the encoding can sum without wrapping), and records
   it durably before the signature leaves (:mod:`veilfl.secagg.commitment`).
3. **aggregate**: its share of the sum over exactly that list, released only against a
   certificate: a quorum of the run's aggregators (q with ``2q - m >= t``) committed to
   the very same list. So no two lists of one round ever both get a sum, whatever t
   and m, even if t - 1 aggregators sign whatever the coordinator asks.

Clients summed but not in the list are subtracted again; their shares wait in a
:class:`ShareArchive` (files at the edge), which also makes an aggregator restart-safe:
:meth:`AggregatorRound.restore` rebuilds the round from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from veilfl.crypto.envelope import PrivateKey, ShareContext, open_sealed
from veilfl.crypto.field import MERSENNE_31, FieldArray
from veilfl.crypto.shamir import Share
from veilfl.errors import (
    ProtocolError,
    RoundMismatchError,
    StorageError,
    UpdateRejectedError,
    WireFormatError,
)
from veilfl.secagg.bounds_messages import ContributionShare, VerifierShare
from veilfl.secagg.bounds_verifier import (
    measurement_share,
    prepare_share,
    restore_prepared,
    verifier_share,
)
from veilfl.secagg.commitment import Commitment, CommitmentCertificate
from veilfl.secagg.contribution import ContributionLayout, contribution_binding

__all__ = [
    "AggregatorRound",
    "InMemoryShareArchive",
    "OpenedShare",
    "RoundKeys",
    "ShareArchive",
    "ShareReceipt",
    "open_contribution",
]


class ShareArchive(Protocol):
    """Keeps each client's share of one round, and the round's decisions, until the
    round is dropped."""

    def put(self, client_id: str, payload: bytes) -> None:
        """Store ``client_id``'s contribution share (durably, before it is acknowledged)."""

    def get(self, client_id: str) -> bytes:
        """Return the stored share of ``client_id``."""
        ...

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every stored (client id, share)."""
        ...

    def record_answer(self, participants: frozenset[str]) -> None:
        """Remember (durably) the participant list this aggregator committed to."""

    def recorded_answer(self) -> frozenset[str] | None:
        """The list recorded by :meth:`record_answer`, if any."""
        ...

    def record_query(self, query_seed: bytes) -> None:
        """Remember (durably) the query seed this aggregator answered."""

    def recorded_query(self) -> bytes | None:
        """The seed recorded by :meth:`record_query`, if any."""
        ...

    def clear(self) -> None:
        """Forget every stored share and decision."""


class InMemoryShareArchive:
    """A :class:`ShareArchive` in memory (simulator and tests)."""

    def __init__(self) -> None:
        self._shares: dict[str, bytes] = {}
        self._answer: frozenset[str] | None = None
        self._query: bytes | None = None

    def put(self, client_id: str, payload: bytes) -> None:
        self._shares[client_id] = payload

    def get(self, client_id: str) -> bytes:
        return self._shares[client_id]

    def items(self) -> Iterator[tuple[str, bytes]]:
        return iter(list(self._shares.items()))

    def record_answer(self, participants: frozenset[str]) -> None:
        self._answer = participants

    def recorded_answer(self) -> frozenset[str] | None:
        return self._answer

    def record_query(self, query_seed: bytes) -> None:
        self._query = query_seed

    def recorded_query(self) -> bytes | None:
        return self._query

    def clear(self) -> None:
        self._shares.clear()
        self._answer = None
        self._query = None


@dataclass(frozen=True)
class ShareReceipt:
    """The answer to a share upload."""

    aggregator_index: int
    round_id: int
    client_id: str
    duplicate: bool


@dataclass(frozen=True)
class RoundKeys:
    """What an aggregator needs to open, commit and check certificates in a run.

    Attributes:
        private_key: Its HPKE private key.
        sign: Signs a message with its Ed25519 key.
        peers: Every aggregator's Ed25519 public key by index (its own included), as its
            operator pinned them.
    """

    private_key: PrivateKey
    sign: Callable[[bytes], bytes]
    peers: Mapping[int, bytes]


@dataclass(frozen=True)
class _Checked:
    joint_seed: bytes
    projections: FieldArray


@dataclass(frozen=True, eq=False)
class OpenedShare:
    """A received share, opened and checked, not yet taken into a round's sum.

    Attributes:
        client_id: Its sender.
        round_id: Its round.
        payload: The contribution share's bytes (kept in the archive).
        checked: Its Fiat-Shamir seed and wraparound projections.
        measurement: Its measurement share (added to the sum).
    """

    client_id: str
    round_id: int
    payload: bytes
    checked: _Checked
    measurement: FieldArray

    def __repr__(self) -> str:  # never print share values
        return f"OpenedShare(client_id={self.client_id!r}, round_id={self.round_id})"


def open_contribution(
    envelope: bytes,
    *,
    run_id: str,
    round_id: int,
    index: int,
    client_id: str,
    layout: ContributionLayout,
    private_key: PrivateKey,
) -> OpenedShare:
    """Open and check a sealed share without touching any state (the costly part of a
    receipt, which the edge runs outside its lock).

    Raises:
        DecryptionError: the envelope is tampered, truncated, replayed or misrouted.
        WireFormatError: the opened share is malformed.
        UpdateRejectedError: the share does not match its public part, or is for
            another aggregator or sharing.
    """
    context = ShareContext(
        run_id=run_id, round_id=round_id, client_id=client_id, aggregator_index=index
    )
    payload = open_sealed(envelope, private_key, context=context)
    checked, measurement = _check(
        payload, run_id=run_id, round_id=round_id, index=index, client_id=client_id, layout=layout
    )
    return OpenedShare(client_id, round_id, payload, checked, measurement)


def _check(
    payload: bytes,
    *,
    run_id: str,
    round_id: int,
    index: int,
    client_id: str,
    layout: ContributionLayout,
) -> tuple[_Checked, FieldArray]:
    share = ContributionShare.from_bytes(payload)
    if share.index != index:
        raise UpdateRejectedError(
            f"The share is for aggregator {share.index}, not aggregator {index}."
        )
    config = layout.config
    prepared = prepare_share(
        share,
        params=layout.bounds,
        threshold=config.threshold,
        num_shares=config.num_aggregators,
        binding=contribution_binding(run_id, round_id, client_id),
    )
    checked = _Checked(joint_seed=prepared.joint_seed, projections=prepared.projections)
    return checked, prepared.measurement_share


class AggregatorRound:
    """Aggregator ``index``'s state for one round of one run (see the module docstring).

    Args:
        run_id: The run (bound into every envelope and proof).
        round_id: The round (likewise).
        index: This aggregator's share index, 1..m.
        layout: The contributions' encoding and proof parameters.
        keys: Its keys and its peers' signing keys.
        archive: Where individual shares wait until the round is aggregated.
        min_participants: The fewest clients this aggregator ever sums over (its
            operator's setting; a sum over one client would be that client's share).
    """

    def __init__(
        self,
        *,
        run_id: str,
        round_id: int,
        index: int,
        layout: ContributionLayout,
        keys: RoundKeys,
        archive: ShareArchive,
        min_participants: int = 1,
    ) -> None:
        self._run_id = run_id
        self._round_id = round_id
        self._index = index
        self._layout = layout
        self._keys = keys
        self._archive = archive
        self._min_participants = min_participants
        self._sum = np.zeros(layout.measurement_length, dtype=np.uint64)
        self._checked: dict[str, _Checked] = {}
        self._answered: frozenset[str] | None = None
        self._query: bytes | None = None
        self._sealed = False

    # ----------------------------------------------------------------- queries
    @property
    def round_id(self) -> int:
        """The round this state sums."""
        return self._round_id

    @property
    def clients(self) -> frozenset[str]:
        """Clients whose shares are in the sum."""
        return frozenset(self._checked)

    @property
    def max_participants(self) -> int:
        """The most clients this aggregator sums (the encoding's limit)."""
        return self._layout.max_summands()

    # ---------------------------------------------------------------- commands
    def restore(self) -> None:
        """Take back what the archive holds (after a restart): every stored share is
        checked and summed again; a recorded query and commitment are kept. Call it on a
        fresh state only.

        Raises:
            ProtocolError: if a stored share does not belong to this aggregator and round.
            StorageError: if a stored share is damaged.
        """
        assert not self._checked, "restore() rebuilds a fresh state only"
        for client_id, payload in self._archive.items():
            try:
                self._add(client_id, *self._check_stored(client_id, payload))
            except WireFormatError as exc:
                raise StorageError(
                    f"The stored share of {client_id!r} in round {self._round_id} is damaged "
                    f"({exc}); remove the spool folder to start the round's shares afresh."
                ) from exc
            except UpdateRejectedError as exc:
                raise ProtocolError(
                    f"The stored share of {client_id!r} in round {self._round_id} does not "
                    f"belong to aggregator {self._index} ({exc}); the spool holds another's "
                    "state."
                ) from exc
        self._query = self._archive.recorded_query()
        answered = self._archive.recorded_answer()
        if answered is not None:
            self._answered = answered
            self._sealed = True

    def open(self, client_id: str, envelope: bytes) -> OpenedShare:
        """Open and check one client's sealed share for this round; changes nothing.

        Raises:
            As :func:`open_contribution`.
        """
        return open_contribution(
            envelope,
            run_id=self._run_id,
            round_id=self._round_id,
            index=self._index,
            client_id=client_id,
            layout=self._layout,
            private_key=self._keys.private_key,
        )

    def take(self, opened: OpenedShare) -> ShareReceipt:
        """Store and add a share :meth:`open` accepted. A second upload from the same
        client is acknowledged and ignored.

        Raises:
            RoundMismatchError: the round's list is already fixed.
            ProtocolError: the share was opened for another round.
        """
        if opened.round_id != self._round_id:
            raise ProtocolError(f"The share was opened for round {opened.round_id}.")
        if self._sealed:
            raise RoundMismatchError(
                f"Round {self._round_id} was already closed by aggregator {self._index}."
            )
        client_id = opened.client_id
        if client_id in self._checked:
            return ShareReceipt(self._index, self._round_id, client_id, duplicate=True)
        self._archive.put(client_id, opened.payload)
        self._add(client_id, opened.checked, opened.measurement)
        return ShareReceipt(self._index, self._round_id, client_id, duplicate=False)

    def receive(self, client_id: str, envelope: bytes) -> ShareReceipt:
        """Open, check and add one client's sealed share (:meth:`open`, then
        :meth:`take`). Any rejection leaves the state exactly as it was.

        Raises:
            As :meth:`open` and :meth:`take`.
        """
        if client_id in self._checked and not self._sealed:
            return ShareReceipt(self._index, self._round_id, client_id, duplicate=True)
        return self.take(self.open(client_id, envelope))

    def verify(self, clients: Iterable[str], query_seed: bytes) -> dict[str, VerifierShare]:
        """This aggregator's answer to ``query_seed`` for each of ``clients``.

        Raises:
            ProtocolError: if another query seed was answered this round, or a client's
                share never reached this aggregator.
        """
        wanted = sorted(set(clients))
        if self._query is not None and self._query != query_seed:
            raise ProtocolError(
                f"Aggregator {self._index} already answered another query for round "
                f"{self._round_id}; answering a second would reveal parts of the updates."
            )
        missing = [c for c in wanted if c not in self._checked]
        if missing:
            raise ProtocolError(
                f"Aggregator {self._index} holds no share from {len(missing)} of the clients "
                f"to verify (for example {missing[0]!r})."
            )
        if self._query is None:
            self._archive.record_query(query_seed)  # before any answer can leave
            self._query = query_seed
        bounds, config = self._layout.bounds, self._layout.config
        answers = {}
        for client_id in wanted:
            checked = self._checked[client_id]
            prepared = restore_prepared(
                ContributionShare.from_bytes(self._archive.get(client_id)),
                params=bounds,
                threshold=config.threshold,
                num_shares=config.num_aggregators,
                joint_seed=checked.joint_seed,
                projections=checked.projections,
            )
            answers[client_id] = verifier_share(prepared, query_seed=query_seed, params=bounds)
        return answers

    def commit(self, participants: Iterable[str]) -> bytes:
        """Commit to ``participants`` as this round's one list: the signature of the
        commitment (recorded durably before it leaves). Committing again to the same
        list returns the same signature.

        Raises:
            ProtocolError: for another list than one committed to before, or a list
                shorter than this aggregator's minimum or longer than the encoding's
                maximum.
        """
        wanted = self._bind(frozenset(participants))
        return self._keys.sign(Commitment.of(self._run_id, self._round_id, wanted).message())

    def aggregate(self, participants: Iterable[str], certificate: CommitmentCertificate) -> Share:
        """The sum of exactly ``participants``' shares, against a certificate that a
        quorum of the run's aggregators (its config's ``quorum``) committed to that list.

        Raises:
            ProtocolError: without a valid certificate for this very list, for another
                list than the one committed to, or a participant whose share never
                reached this aggregator.
        """
        wanted = frozenset(participants)
        expected = Commitment.of(self._run_id, self._round_id, wanted)
        if certificate.commitment != expected:
            raise ProtocolError(
                "The certificate commits to another run, round or participant list than the "
                "one asked for."
            )
        config = self._layout.config
        certificate.verify(
            signing_keys=self._keys.peers,
            num_aggregators=config.num_aggregators,
            quorum=config.quorum,
        )
        missing = wanted - set(self._checked)
        if missing:
            raise ProtocolError(
                f"Aggregator {self._index} holds no share from {len(missing)} of the "
                f"participants (for example {sorted(missing)[0]!r}); choose aggregators "
                "that hold every participant."
            )
        self._bind(wanted)
        total = self._sum.copy()
        bounds = self._layout.bounds
        for client_id in sorted(set(self._checked) - wanted):
            total -= measurement_share(  # it is part of the raw sum
                ContributionShare.from_bytes(self._archive.get(client_id)),
                params=bounds,
                threshold=config.threshold,
                num_shares=config.num_aggregators,
            )
        np.remainder(total, MERSENNE_31.p, out=total)
        return Share(index=self._index, values=total)

    def discard(self) -> None:
        """Forget the round's shares."""
        self._archive.clear()
        self._checked.clear()
        self._sum = np.zeros(self._layout.measurement_length, dtype=np.uint64)

    # ----------------------------------------------------------------- private
    def _bind(self, wanted: frozenset[str]) -> frozenset[str]:
        """Make ``wanted`` this round's one list (durably), or refuse."""
        if self._answered is not None and wanted != self._answered:
            raise ProtocolError(
                f"Aggregator {self._index} already committed round {self._round_id} to "
                "another participant list; a second list would reveal the difference."
            )
        if len(wanted) < self._min_participants:
            raise ProtocolError(
                f"Aggregator {self._index} sums over at least {self._min_participants} "
                f"clients; the coordinator asked for {len(wanted)}."
            )
        if len(wanted) > self.max_participants:
            raise ProtocolError(
                f"Aggregator {self._index} sums over at most {self.max_participants} "
                f"clients (more could wrap the field); the coordinator asked for {len(wanted)}."
            )
        if self._answered is None:
            self._archive.record_answer(wanted)  # before a signature or sum can leave
        self._answered = wanted
        self._sealed = True
        return wanted

    def _check_stored(self, client_id: str, payload: bytes) -> tuple[_Checked, FieldArray]:
        return _check(
            payload,
            run_id=self._run_id,
            round_id=self._round_id,
            index=self._index,
            client_id=client_id,
            layout=self._layout,
        )

    def _add(self, client_id: str, checked: _Checked, measurement: FieldArray) -> None:
        # Unreduced: each element is below 2**31, so 2**33 of them fit in a uint64.
        self._sum += measurement
        self._checked[client_id] = checked
