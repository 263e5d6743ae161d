"""Signed HTTP requests: what is signed, and the ``X-Veilfl-Signature`` header.

Every state-changing request carries one header::

    X-Veilfl-Signature: v1;client=<id>;ts=<unix ms>;nonce=<32 hex>;round=<n or ->;sig=<b64url>

The signature is Ed25519 over a message that binds the audience (which server, which
run), the method, the path with its query, the SHA-256 of the body, the client id, the
round the request acts on, the timestamp and the nonce. Changing any of them, or
sending the request to another server or run, breaks the signature; the verifier
(:mod:`veilfl.auth.request_verifier`) rejects old timestamps and repeated nonces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass

from veilfl.auth.identity import SIGNATURE_BYTES, Identity
from veilfl.errors import AuthenticationError

__all__ = [
    "COORDINATOR_SIGNER",
    "MAX_CLIENT_ID_LENGTH",
    "SIGNATURE_HEADER",
    "RequestSignature",
    "SignedRequest",
    "aggregator_audience",
    "body_digest",
    "coordinator_audience",
    "format_signature",
    "parse_signature",
    "sign_request",
]

SIGNATURE_HEADER = "X-Veilfl-Signature"
COORDINATOR_SIGNER = "coordinator"
"""The signer id of requests the coordinator itself sends (to the aggregators)."""
_VERSION = "v1"
_MAX_HEADER_CHARS = 512
MAX_CLIENT_ID_LENGTH = 64
"""The longest client id a signature may name (ASCII letters, digits, ``_.-``)."""
_CLIENT_ID = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_CLIENT_ID_LENGTH}}}")
_NONCE = re.compile(r"[0-9a-f]{32}")
_DIGITS = re.compile(r"0|[1-9][0-9]{0,15}")
_FIELDS = ("client", "ts", "nonce", "round", "sig")


def coordinator_audience(run_id: str) -> str:
    """The audience of requests to the coordinator of ``run_id``."""
    return f"coordinator/{run_id}"


def aggregator_audience(index: int, run_id: str) -> str:
    """The audience of requests to aggregator ``index`` of ``run_id``."""
    return f"aggregator-{index}/{run_id}"


def body_digest(body: bytes) -> str:
    """The SHA-256 of a request body, in hex, as signatures cover it."""
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class SignedRequest:
    """The parts of a request that its signature covers.

    Attributes:
        audience: The server and run it is meant for, e.g. ``coordinator/<run id>``.
        method: HTTP method, upper case.
        path: Path with query string, as sent.
        body_sha256: :func:`body_digest` of the raw body.
        round_id: The round the request acts on, or None.
    """

    audience: str
    method: str
    path: str
    body_sha256: str
    round_id: int | None

    @classmethod
    def of(
        cls, audience: str, method: str, path: str, body: bytes, round_id: int | None
    ) -> SignedRequest:
        """The request with ``body`` hashed here (servers hash large bodies off the
        event loop and build the request directly)."""
        return cls(audience, method, path, body_digest(body), round_id)

    def message(self, client_id: str, timestamp_ms: int, nonce: str) -> bytes:
        """The exact bytes that are signed."""
        parts = (
            "veilfl-request-v1",
            self.audience,
            self.method.upper(),
            self.path,
            self.body_sha256,
            client_id,
            "-" if self.round_id is None else str(self.round_id),
            str(timestamp_ms),
            nonce,
        )
        return "\n".join(parts).encode()


@dataclass(frozen=True)
class RequestSignature:
    """A parsed ``X-Veilfl-Signature`` header."""

    client_id: str
    timestamp_ms: int
    nonce: str
    round_id: int | None
    signature: bytes


def _unpadded_b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def format_signature(signature: RequestSignature) -> str:
    """The header value for ``signature``."""
    round_text = "-" if signature.round_id is None else str(signature.round_id)
    sig = _unpadded_b64(signature.signature)
    return (
        f"{_VERSION};client={signature.client_id};ts={signature.timestamp_ms};"
        f"nonce={signature.nonce};round={round_text};sig={sig}"
    )


def parse_signature(header: str) -> RequestSignature:
    """Parse an ``X-Veilfl-Signature`` header value strictly.

    Raises:
        AuthenticationError: naming what is malformed (never anything else).
    """
    if len(header) > _MAX_HEADER_CHARS:
        raise AuthenticationError(f"The {SIGNATURE_HEADER} header is too long.")
    version, _, rest = header.partition(";")
    if version != _VERSION:
        raise AuthenticationError(
            f"The {SIGNATURE_HEADER} header must start with {_VERSION!r}; upgrade the client."
        )
    fields: dict[str, str] = {}
    for item in rest.split(";"):
        name, sep, value = item.partition("=")
        if not sep or name not in _FIELDS or name in fields:
            raise AuthenticationError(
                f"The {SIGNATURE_HEADER} header has a malformed, unknown or repeated field."
            )
        fields[name] = value
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        raise AuthenticationError(f"The {SIGNATURE_HEADER} header lacks {', '.join(missing)}.")
    if not _CLIENT_ID.fullmatch(fields["client"]):
        raise AuthenticationError("The signature's client id is malformed.")
    if not _DIGITS.fullmatch(fields["ts"]):
        raise AuthenticationError("The signature's timestamp is not a whole number of ms.")
    if not _NONCE.fullmatch(fields["nonce"]):
        raise AuthenticationError("The signature's nonce must be 32 lower-case hex digits.")
    round_text = fields["round"]
    if round_text != "-" and not _DIGITS.fullmatch(round_text):
        raise AuthenticationError("The signature's round must be a number or '-'.")
    sig_text = fields["sig"]
    try:
        if not re.fullmatch(r"[A-Za-z0-9_-]{86}", sig_text):
            raise ValueError
        signature = base64.urlsafe_b64decode(sig_text + "==")
    except (binascii.Error, ValueError):
        raise AuthenticationError("The signature is not 64 bytes of URL-safe base64.") from None
    if len(signature) != SIGNATURE_BYTES or _unpadded_b64(signature) != sig_text:
        raise AuthenticationError("The signature is not 64 bytes of URL-safe base64.")
    return RequestSignature(
        client_id=fields["client"],
        timestamp_ms=int(fields["ts"]),
        nonce=fields["nonce"],
        round_id=None if round_text == "-" else int(round_text),
        signature=signature,
    )


def sign_request(
    identity: Identity, request: SignedRequest, *, now_s: float, client_id: str | None = None
) -> str:
    """The ``X-Veilfl-Signature`` header value for ``request``, signed now.

    Args:
        identity: The signer.
        request: What to sign.
        now_s: The current Unix time in seconds.
        client_id: The id to sign as (default: the identity's own client id).
    """
    signer = client_id or identity.client_id
    timestamp_ms = int(now_s * 1000)
    nonce = secrets.token_hex(16)
    signature = identity.sign(request.message(signer, timestamp_ms, nonce))
    return format_signature(
        RequestSignature(
            client_id=signer,
            timestamp_ms=timestamp_ms,
            nonce=nonce,
            round_id=request.round_id,
            signature=signature,
        )
    )
