"""Round admissions: the coordinator's signed word that a client is in a round.

When the coordinator hands a client a round (or a buffer), it signs an admission that
binds run, round, client id and the client's public key. The client shows it to each
aggregator with its share; an aggregator accepts a share only with an admission for
that very round, signed by the coordinator, from the client the admission names
(checked with the admitted key). So only enrolled clients sampled into the open round
can reach the aggregators, and nobody can open a later round on an aggregator.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from veilfl.auth.identity import (
    PUBLIC_KEY_BYTES,
    Identity,
    decode_public_key,
    encode_public_key,
    verify_signature,
)
from veilfl.errors import AuthenticationError, ForbiddenError

__all__ = ["ADMISSION_HEADER", "RoundAdmission", "issue_admission", "verify_admission"]

ADMISSION_HEADER = "X-Veilfl-Admission"
_MAX_CHARS = 1024


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class RoundAdmission:
    """Client ``client_id`` (key ``client_key``) is in round ``round_id`` of ``run_id``."""

    run_id: str
    round_id: int
    client_id: str
    client_key: bytes

    def payload(self) -> bytes:
        """The signed bytes (canonical JSON)."""
        return json.dumps(
            {
                "v": 1,
                "run": self.run_id,
                "round": self.round_id,
                "client": self.client_id,
                "key": encode_public_key(self.client_key),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()


def issue_admission(coordinator: Identity, admission: RoundAdmission) -> str:
    """The admission as a compact token: ``<payload b64url>.<signature b64url>``."""
    payload = admission.payload()
    return f"{_b64(payload)}.{_b64(coordinator.sign(b'veilfl-admission-v1' + payload))}"


def verify_admission(
    token: str | None, coordinator_key: bytes, *, run_id: str, round_id: int
) -> RoundAdmission:
    """Check an admission token for round ``round_id`` of ``run_id``.

    Raises:
        AuthenticationError: missing, malformed or not signed by the coordinator.
        ForbiddenError: signed, but for another run or round.
    """
    if not token:
        raise AuthenticationError(
            f"A share needs the coordinator's admission for the round ({ADMISSION_HEADER})."
        )
    if len(token) > _MAX_CHARS or token.count(".") != 1:
        raise AuthenticationError("The admission token is malformed.")
    payload_text, signature_text = token.split(".")
    try:
        payload = _unb64(payload_text)
        signature = _unb64(signature_text)
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise ValueError
        admission = RoundAdmission(
            run_id=str(data["run"]),
            round_id=int(data["round"]),
            client_id=str(data["client"]),
            client_key=decode_public_key(str(data["key"])),
        )
        if data.get("v") != 1 or not isinstance(data["round"], int):
            raise ValueError
    except (binascii.Error, ValueError, KeyError, TypeError, AuthenticationError):
        raise AuthenticationError("The admission token is malformed.") from None
    if len(coordinator_key) != PUBLIC_KEY_BYTES or not verify_signature(
        coordinator_key, b"veilfl-admission-v1" + payload, signature
    ):
        raise AuthenticationError("The admission is not signed by this run's coordinator.")
    if admission.run_id != run_id or admission.round_id != round_id:
        raise ForbiddenError(
            f"The admission is for round {admission.round_id} of run {admission.run_id}, not "
            f"round {round_id} of run {run_id}."
        )
    return admission
