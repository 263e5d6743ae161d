"""An aggregator's policy, as its operator set it and signed with its key.

The fewest distinct admitted clients an aggregator sums over is the aggregator
operator's decision, not the coordinator's. The aggregator publishes it signed with its
Ed25519 key, so that the coordinator can refuse, at start-up, a run whose clients per
round (or buffer size) is below it, and a client can check, against the fingerprint it
pinned, that every aggregator will sum it with at least as many others as the client's
own policy demands (:mod:`veilfl.client.policy`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from veilfl.crypto.keys import verify_aggregator_signature
from veilfl.errors import WireFormatError

__all__ = ["AggregatorPolicy"]

_DOMAIN = b"veilfl-aggregator-policy-v1\x00"


@dataclass(frozen=True)
class AggregatorPolicy:
    """What aggregator ``index`` (with ``fingerprint``) promises.

    Attributes:
        index: Its share index.
        fingerprint: Its key fingerprint.
        min_participants: The fewest clients it ever sums over.
        signature: Its Ed25519 signature of the above.
    """

    index: int
    fingerprint: str
    min_participants: int
    signature: bytes = b""

    def statement(self) -> bytes:
        """The bytes the aggregator signs."""
        return _DOMAIN + f"{self.index}\x00{self.fingerprint}\x00{self.min_participants}".encode()

    def verified_by(self, signing_public: bytes) -> bool:
        """Whether the signature is the aggregator's (``signing_public``) own."""
        return verify_aggregator_signature(signing_public, self.statement(), self.signature)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "index": self.index,
            "fingerprint": self.fingerprint,
            "min_participants": self.min_participants,
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AggregatorPolicy:
        """Parse :meth:`to_json` output.

        Raises:
            WireFormatError: if it is malformed.
        """
        try:
            return cls(
                index=int(data["index"]),
                fingerprint=str(data["fingerprint"]),
                min_participants=int(data["min_participants"]),
                signature=base64.b64decode(str(data["signature"]), validate=True),
            )
        except (KeyError, TypeError, ValueError, OverflowError, binascii.Error) as exc:
            # OverflowError: int() of a JSON number too large for a float (1e999 -> inf).
            raise WireFormatError(f"The aggregator's policy does not parse: {exc}.") from exc
