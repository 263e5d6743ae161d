"""One participant list per round across all aggregators, whatever t and m are.

Each aggregator answers one participant list per round. That alone does not stop a
coordinator that holds ``m >= 2t`` aggregators from asking two disjoint groups of t for
two different lists, whose difference is one client's update. So an aggregator releases
its aggregate share of a round only against a **certificate**: signatures over the same
list from a quorum of q of the run's m aggregators, each of which signs at most one list
per round (its commitment, recorded durably before the signature leaves).

Two quorums of q share at least ``2q - m`` aggregators. Against a coordinator that
colludes with up to t - 1 aggregators (who sign whatever it asks), two lists can both be
certified only if every shared signer colludes; so ``2q - m >= t`` leaves at least one
honest aggregator in every intersection, which signs one list only, and at most one
list per round can ever have a certificate. The smallest such quorum,
``ceil((m + t) / 2)`` (:func:`default_quorum`), is the default; a plain majority is not
enough (at m = 3, t = 2 two majorities share one aggregator, which may be the
colluding one). The price: releasing a round needs q live aggregators, not t (all
three at m = 3, t = 2; three of four at m = 4, t = 2). See quorum systems in Malkhi
and Reiter, "Byzantine quorum systems" (1998), and the check in
:class:`~veilfl.secagg.config.SecureAggregationConfig`.

The aggregators enforce it themselves: they check the certificate against the signing
keys their operators pinned and the quorum of the run, never trusting the coordinator
for either. The signed statement binds the run, the round and a digest of the sorted
list.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from veilfl.crypto.keys import verify_aggregator_signature
from veilfl.errors import ProtocolError, WireFormatError

__all__ = [
    "Commitment",
    "CommitmentCertificate",
    "certificates_can_split",
    "default_quorum",
    "participants_digest",
]

_DOMAIN = b"veilfl-participant-list-commitment-v1\x00"


def default_quorum(*, num_aggregators: int, threshold: int) -> int:
    """The fewest signatures a certificate may need so that the coordinator and t - 1
    colluding aggregators cannot certify two lists of one round: ``ceil((m + t) / 2)``.

    Args:
        num_aggregators: m.
        threshold: t.
    """
    return (num_aggregators + threshold + 1) // 2


def certificates_can_split(*, quorum: int, num_aggregators: int, threshold: int) -> bool:
    """Whether two certificates of ``quorum`` signers can share fewer than t signers:
    then the coordinator and t - 1 colluding aggregators can certify two different
    lists of one round (``2q - m < t``), and their sums' difference is one client's
    update.

    Args:
        quorum: q, the signatures a certificate needs.
        num_aggregators: m.
        threshold: t.
    """
    return 2 * quorum - num_aggregators < threshold


def participants_digest(participants: Collection[str]) -> bytes:
    """SHA-256 over the sorted client ids, one per line (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(set(participants))).encode()).digest()


@dataclass(frozen=True)
class Commitment:
    """An aggregator's word that ``round_id`` of ``run_id`` sums exactly the clients whose
    digest is ``digest`` (and no other list).

    Attributes:
        run_id: The run.
        round_id: The round (or buffer).
        digest: :func:`participants_digest` of the list.
    """

    run_id: str
    round_id: int
    digest: bytes

    @classmethod
    def of(cls, run_id: str, round_id: int, participants: Collection[str]) -> Commitment:
        """The commitment to ``participants``."""
        return cls(run_id, round_id, participants_digest(participants))

    def message(self) -> bytes:
        """The bytes an aggregator signs."""
        return (
            _DOMAIN
            + self.run_id.encode()
            + b"\x00"
            + self.round_id.to_bytes(8, "big")
            + self.digest
        )


@dataclass(frozen=True)
class CommitmentCertificate:
    """Signatures of several aggregators over one :class:`Commitment`.

    Attributes:
        commitment: What they signed.
        signatures: Aggregator index to its Ed25519 signature.
    """

    commitment: Commitment
    signatures: Mapping[int, bytes]

    def verify(
        self, *, signing_keys: Mapping[int, bytes], num_aggregators: int, quorum: int
    ) -> None:
        """Check that ``quorum`` of the run's aggregators signed this very commitment.

        Args:
            signing_keys: Each aggregator's Ed25519 public key, as its operator pinned it.
            num_aggregators: m.
            quorum: q, the signatures needed (the run's
                :attr:`~veilfl.secagg.config.SecureAggregationConfig.quorum`).

        Raises:
            ProtocolError: naming how many valid signatures there are and how many are
                needed.
        """
        valid = sorted(
            j
            for j, signature in self.signatures.items()
            if j in signing_keys
            and verify_aggregator_signature(signing_keys[j], self.commitment.message(), signature)
        )
        if len(valid) < quorum:
            raise ProtocolError(
                f"The participant list of round {self.commitment.round_id} carries "
                f"{len(valid)} valid aggregator commitments (from {valid}); {quorum} of the "
                f"{num_aggregators} aggregators must have committed to it before any sum is "
                "released."
            )

    def to_json(self, participants: Collection[str] | None = None) -> dict[str, Any]:
        """A JSON-ready dict (signatures in standard base64)."""
        return {
            "round_id": self.commitment.round_id,
            "digest": self.commitment.digest.hex(),
            "signatures": {
                str(j): base64.b64encode(s).decode() for j, s in sorted(self.signatures.items())
            },
        }

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, run_id: str, participants: Collection[str]
    ) -> CommitmentCertificate:
        """Parse :meth:`to_json` output for ``participants`` of ``run_id``.

        Raises:
            WireFormatError: if it is malformed or its digest is not that of the list.
                The round id must be a JSON integer in [0, 2^64) (what
                :meth:`Commitment.message` can sign): a float such as ``1e999``, which
                JSON decodes to infinity, is refused here rather than overflowing later.
        """
        try:
            round_id = data["round_id"]
            if isinstance(round_id, bool) or not isinstance(round_id, int):
                raise WireFormatError(
                    f"The certificate's round_id must be a whole number; got a "
                    f"{type(round_id).__name__}."
                )
            if not 0 <= round_id < 2**64:
                raise WireFormatError("The certificate's round_id is outside [0, 2^64).")
            commitment = Commitment.of(run_id, round_id, participants)
            if bytes.fromhex(str(data["digest"])) != commitment.digest:
                raise WireFormatError(
                    "The certificate is for another participant list than the one asked for."
                )
            signatures = {
                int(j): base64.b64decode(str(s), validate=True)
                for j, s in dict(data["signatures"]).items()
            }
        except (KeyError, TypeError, ValueError, OverflowError, binascii.Error) as exc:
            raise WireFormatError(f"The commitment certificate does not parse: {exc}.") from exc
        return cls(commitment=commitment, signatures=signatures)
