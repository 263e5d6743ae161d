"""An aggregator across rounds: one :class:`AggregatorRound` per round, old ones dropped.

Pure and synchronous; the HTTP aggregator service and the simulators drive it. Memory
stays O(model size) per open round: a round's state is dropped as soon as a later round
starts (the coordinator only starts round r + 1 after it is done with r).

Under distributed DP the node also holds the run's one noise state
(:class:`~veilfl.secagg.tree_noise.TreeNoiseAggregator`; ``"fresh"`` or ``"tree"``): it
deals its noise for a round (:meth:`AggregatorNode.deal_noise`, sealed and signed per
recipient, :mod:`veilfl.secagg.noise_envelope`) and releases its aggregate share only
with the noise added (:meth:`AggregatorNode.aggregate` with the deals addressed to it).
Under DP-FedAvg each round is released at the step equal to its round id (round ids
are never reused, an abandoned round's included, so no block of noise ever covers two
sums). Under DP-FTRL (``"tree"`` schedule) and banded matrix factorisation
(``"toeplitz"``) the steps are consecutive released rounds that the coordinator
names; the noise state releases each step over one aggregate and one round only. The
state is
saved (``save_noise``, durably) before any deal or noised share leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from veilfl.crypto.envelope import PublicKey
from veilfl.crypto.keys import AggregatorKeyPair
from veilfl.crypto.shamir import Share
from veilfl.errors import ConfigurationError, ProtocolError, RoundMismatchError
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
from veilfl.secagg.noise_envelope import open_deal, seal_deal
from veilfl.secagg.tree_noise import TreeNoiseAggregator

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
        noise: The run's noise state under distributed DP (this aggregator's index),
            or None: then no noise is dealt and sums are released as they are.
        save_noise: Stores the noise state's bytes durably (called before any deal or
            noised share leaves); required with ``noise``.
        peer_public_keys: Every aggregator's HPKE public key by index (deals are
            sealed to them); required with ``noise``.
        allow_split_certificates: This aggregator's operator accepts a run whose
            certificate quorum lets two lists of a round be certified by the coordinator
            and t - 1 colluding aggregators (``2q - m < t``). Off, such a run is refused,
            whatever the run's own setting says: the quorum comes from the
            coordinator's description, the consent to its risk from the operator.

    Raises:
        ConfigurationError: for a run whose quorum lets certificates split, unless
            ``allow_split_certificates``.
        ProtocolError: for keys that do not fit (see above).
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
        noise: TreeNoiseAggregator | None = None,
        save_noise: Callable[[bytes], None] | None = None,
        peer_public_keys: Mapping[int, PublicKey] | None = None,
        allow_split_certificates: bool = False,
    ) -> None:
        config = layout.config
        if config.certificates_can_split and not allow_split_certificates:
            raise ConfigurationError(
                f"The run certifies a participant list with {config.quorum} of "
                f"{config.num_aggregators} aggregators at threshold {config.threshold}, so the "
                "coordinator and colluding aggregators could certify two lists of a round; "
                f"aggregator {index} refuses it unless its operator passes "
                "--allow-split-certificates."
            )
        if noise is not None and (
            save_noise is None or peer_public_keys is None or noise.index != index
        ):
            raise ProtocolError(
                "An aggregator that deals noise needs its own noise state, a place to save "
                "it and every aggregator's public key."
            )
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
        self._noise = noise
        self._save_noise = save_noise
        self._peer_public_keys = dict(peer_public_keys or {})

    @property
    def open_rounds(self) -> dict[int, frozenset[str]]:
        """Each round held, with the clients summed so far."""
        return {r: state.clients for r, state in self._rounds.items()}

    @property
    def layout(self) -> ContributionLayout:
        """The run's contribution encoding."""
        return self._layout

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
        sum, but its word counts towards the quorum)."""
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

    @property
    def deals_noise(self) -> bool:
        """Whether this aggregator adds dealt noise to every sum it releases."""
        return self._noise is not None

    def deal_noise(self, round_id: int, step: int) -> dict[int, bytes]:
        """This aggregator's noise for ``round_id``, one sealed, signed deal per other
        aggregator (by recipient index). The same request again returns the same
        deals (re-sealed); the noise state is saved before they are returned.

        Raises:
            ProtocolError: if this aggregator deals no noise, for a step other than the
                round id (fresh schedule), or for a block already past.
            RoundMismatchError: for a round older than one already started.
        """
        noise = self._require_noise(round_id, step)
        deals = noise.deal(step)
        self._persist_noise(noise)
        return {
            deal.recipient: seal_deal(
                deal,
                run_id=self._run_id,
                step=step,
                public_key=self._peer_public_keys[deal.recipient],
                sign=self._keys.sign,
            )
            for deal in deals
        }

    def aggregate(
        self,
        round_id: int,
        participants: Iterable[str],
        certificate: CommitmentCertificate,
        *,
        noise_step: int | None = None,
        deals: Iterable[bytes] = (),
    ) -> Share:
        """The certified aggregate share (see :meth:`AggregatorRound.aggregate`); with
        dealt noise, its share of the sum plus every dealer's noise for ``noise_step``
        (``deals``: the sealed deals addressed to this aggregator).

        Raises:
            ProtocolError: as :meth:`AggregatorRound.aggregate`; with dealt noise also
                without a step, for a forged, replayed or re-addressed deal, a missing
                dealer, or a round or step already released otherwise.
        """
        state = self._round(round_id)
        if self._noise is None:
            if noise_step is not None:
                raise ProtocolError(
                    f"Aggregator {self.index} deals no noise in this run; the coordinator "
                    "asked for a noised sum."
                )
            return state.aggregate(participants, certificate)
        if noise_step is None:
            raise ProtocolError(
                f"Aggregator {self.index} releases sums of this run only with the dealt "
                "noise added; the coordinator asked for a sum without a noise step."
            )
        noise = self._require_noise(round_id, noise_step)
        for sealed in deals:
            noise.receive(
                open_deal(
                    sealed,
                    run_id=self._run_id,
                    step=noise_step,
                    recipient=self.index,
                    private_key=self._keys.private_key,
                    signing_keys=self._keys.peers,
                    config=noise.config,
                )
            )
        self._persist_noise(noise)
        share = state.aggregate(participants, certificate)
        noised = noise.release(noise_step, share.values, round_id=round_id)
        self._persist_noise(noise)  # before the noised share leaves
        return noised

    def _require_noise(self, round_id: int, step: int) -> TreeNoiseAggregator:
        self._require_current_or_later(round_id)
        if self._noise is None:
            raise ProtocolError(f"Aggregator {self.index} deals no noise in this run.")
        if self._noise.config.schedule == "fresh" and step != round_id:
            raise ProtocolError(
                f"Round {round_id} is released at noise step {round_id}, not {step}: each "
                "round has its own block of noise."
            )
        return self._noise

    def _persist_noise(self, noise: TreeNoiseAggregator) -> None:
        assert self._save_noise is not None
        self._save_noise(noise.to_bytes())

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
