"""One participant list per round across all aggregators, whatever t and m are.

Each aggregator answers one participant list per round. That alone does not stop a
coordinator that holds ``m >= 2t`` aggregators from asking two disjoint groups of t for
two different lists, whose difference is one client's update. So an aggregator releases
its aggregate share of a round only against a **certificate**: signatures over the same
list from a majority (more than m/2) of the run's aggregators, each of which signs at
most one list per round (its commitment, recorded durably before the signature leaves).
Two majorities of m always share an aggregator, so at most one list per round can ever
have a certificate, and only that list's sum is ever released: enforced by the
aggregators themselves, who check the certificate against the signing keys their
operators pinned, never trusting the coordinator for it.

The signed statement binds the run, the round and a digest of the sorted list.
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

__all__ = ["Commitment", "CommitmentCertificate", "participants_digest", "quorum"]

_DOMAIN = b"veilfl-participant-list-commitment-v1\x00"


def quorum(num_aggregators: int) -> int:
    """The signatures a certificate needs: a strict majority of the aggregators."""
    return num_aggregators // 2 + 1


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

    def verify(self, *, signing_keys: Mapping[int, bytes], num_aggregators: int) -> None:
        """Check that a majority of the run's aggregators signed this very commitment.

        Args:
            signing_keys: Each aggregator's Ed25519 public key, as its operator pinned it.
            num_aggregators: m.

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
        needed = quorum(num_aggregators)
        if len(valid) < needed:
            raise ProtocolError(
                f"The participant list of round {self.commitment.round_id} carries "
                f"{len(valid)} valid aggregator commitments (from {valid}); {needed} of the "
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
