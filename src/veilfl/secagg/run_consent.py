"""An aggregator's signed consent to one run.

Before it takes any share of a run, an aggregator checks the run's description against
its operator's policy (its minimum cohort, its noise floor, its pinned peers) and then
signs the run id, which is the hash of the whole description
(:attr:`veilfl.protocol.run_spec.RunSpec.run_id`), together with the noise it will deal
in that run. A client accepts a secure run only when a quorum of the aggregators *it*
pinned signed the very run id it computed from the description it was served: the
coordinator alone can neither invent the aggregators' agreement nor show the
aggregators one run and the clients another (their ids would differ, and so would
every HPKE context, commitment and noise deal).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from veilfl.crypto.keys import AggregatorKeyPair, verify_aggregator_signature
from veilfl.errors import WireFormatError

__all__ = ["RunConsent", "sign_consent"]

_DOMAIN = b"veilfl-run-consent-v1\x00"


@dataclass(frozen=True)
class RunConsent:
    """Aggregator ``index`` (key ``fingerprint``) consents to serve run ``run_id``,
    dealing the noise ``noise`` describes.

    Attributes:
        index: Its share index.
        fingerprint: Its key fingerprint.
        run_id: The run id it consents to (the description's hash).
        noise: The noise it deals in this run, as a JSON object (None: it deals none).
        signature: Its Ed25519 signature of :meth:`statement`.
    """

    index: int
    fingerprint: str
    run_id: str
    noise: Mapping[str, Any] | None = None
    signature: bytes = b""

    def statement(self) -> bytes:
        """The bytes the aggregator signs."""
        noise = json.dumps(self.noise, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return _DOMAIN + "\x00".join(
            (str(self.index), self.fingerprint, self.run_id, noise)
        ).encode("utf-8")

    def verified_by(self, signing_public: bytes) -> bool:
        """Whether the signature is the aggregator's (``signing_public``) own."""
        return verify_aggregator_signature(signing_public, self.statement(), self.signature)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "index": self.index,
            "fingerprint": self.fingerprint,
            "run_id": self.run_id,
            "noise": None if self.noise is None else dict(self.noise),
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunConsent:
        """Parse :meth:`to_json` output.

        Raises:
            WireFormatError: if it is malformed.
        """
        try:
            noise = data.get("noise")
            if noise is not None and not isinstance(noise, dict):
                raise TypeError("noise must be an object or null")
            index = data["index"]
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError("index must be a whole number")
            return cls(
                index=index,
                fingerprint=str(data["fingerprint"]),
                run_id=str(data["run_id"]),
                noise=noise,
                signature=base64.b64decode(str(data["signature"]), validate=True),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise WireFormatError(f"An aggregator's run consent does not parse: {exc}.") from exc


def sign_consent(
    keypair: AggregatorKeyPair, *, index: int, run_id: str, noise: Mapping[str, Any] | None
) -> RunConsent:
    """Aggregator ``index``'s consent to ``run_id``, dealing ``noise``, signed with its key.
    The caller has checked the run against its operator's policy."""
    unsigned = RunConsent(index=index, fingerprint=keypair.fingerprint, run_id=run_id, noise=noise)
    return RunConsent(
        index=index,
        fingerprint=unsigned.fingerprint,
        run_id=run_id,
        noise=noise,
        signature=keypair.sign(unsigned.statement()),
    )
