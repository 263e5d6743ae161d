"""Checking signed requests: signature, clock window and replay.

A request is accepted once: the verifier remembers each (client, nonce) it accepted
until the request's timestamp leaves the clock window, and refuses timestamps outside
the window. Requests signed before the server started are refused too, so a replay
captured before a restart cannot be played back after it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from veilfl.auth.identity import verify_signature
from veilfl.auth.signed_request import SIGNATURE_HEADER, SignedRequest, parse_signature
from veilfl.errors import AuthenticationError, ForbiddenError, RateLimitedError

__all__ = ["RequestVerifier"]


class RequestVerifier:
    """Verifies ``X-Veilfl-Signature`` headers for one audience.

    Args:
        audience: This server and run, as clients sign it.
        max_skew_s: Largest difference between a request's timestamp and this clock.
        not_before_s: Refuse requests signed before this Unix time (server start).
        max_remembered: Most nonces held at once (about 280 bytes each); beyond it new
            requests get a 429 until old ones leave the clock window.
    """

    def __init__(
        self,
        *,
        audience: str,
        max_skew_s: float = 120.0,
        not_before_s: float | None = None,
        max_remembered: int = 250_000,
    ) -> None:
        self.audience = audience
        self._skew_ms = int(max_skew_s * 1000)
        self._not_before_ms = None if not_before_s is None else int(not_before_s * 1000)
        self._max_remembered = max_remembered
        self._seen: set[tuple[str, str]] = set()
        self._expiry: deque[tuple[int, tuple[str, str]]] = deque()

    def verify(
        self,
        request: SignedRequest,
        header: str | None,
        *,
        public_key_for: Callable[[str], bytes | None],
        now_s: float,
    ) -> str:
        """The id of the client that signed ``request``; the nonce is then spent.

        Args:
            request: What the server received (its audience must be this verifier's).
            header: The ``X-Veilfl-Signature`` value, or None if absent.
            public_key_for: The enrolled public key of a client id (None: unknown).
            now_s: The current Unix time in seconds.

        Raises:
            AuthenticationError: unsigned, malformed, unknown signer, bad signature,
                outside the clock window, or replayed.
            ForbiddenError: signed for another round than the request acts on.
            RateLimitedError: too many requests are remembered right now.
        """
        if header is None:
            raise AuthenticationError(
                f"This request must be signed: send the {SIGNATURE_HEADER} header made with "
                "your enrolled Ed25519 key (veilfl's client does this; see docs/security.md)."
            )
        signature = parse_signature(header)
        if signature.round_id != request.round_id:
            raise ForbiddenError(
                f"The signature is for round {signature.round_id}, but the request acts on "
                f"round {request.round_id}."
            )
        now_ms = int(now_s * 1000)
        self._forget_expired(now_ms)
        if abs(now_ms - signature.timestamp_ms) > self._skew_ms:
            raise AuthenticationError(
                f"The request was signed {abs(now_ms - signature.timestamp_ms) / 1000:.0f} s "
                f"away from this server's clock (at most {self._skew_ms / 1000:.0f} s allowed); "
                "check the client's clock and sign again."
            )
        if self._not_before_ms is not None and signature.timestamp_ms < self._not_before_ms:
            raise AuthenticationError(
                "The request was signed before this server started; sign it again."
            )
        public_key = public_key_for(signature.client_id)
        if public_key is None:
            raise AuthenticationError(
                f"Client {signature.client_id} is not enrolled here; enroll with "
                "POST /v1/clients first."
            )
        message = request.message(signature.client_id, signature.timestamp_ms, signature.nonce)
        if not verify_signature(public_key, message, signature.signature):
            raise AuthenticationError(
                f"The signature does not match client {signature.client_id}'s key for this "
                f"request to {self.audience}; sign the exact method, path, body and round sent."
            )
        seen = (signature.client_id, signature.nonce)
        if seen in self._seen:
            raise AuthenticationError("This request was already received once (a replay).")
        if len(self._seen) >= self._max_remembered:
            raise RateLimitedError(
                "The server is holding too many recent requests; retry shortly.", retry_after_s=1.0
            )
        self._seen.add(seen)
        self._expiry.append((signature.timestamp_ms + self._skew_ms, seen))
        return signature.client_id

    def _forget_expired(self, now_ms: int) -> None:
        while self._expiry and self._expiry[0][0] < now_ms:
            _, seen = self._expiry.popleft()
            self._seen.discard(seen)
