"""Signing every request a client sends (an ``httpx.Auth``).

Each attempt is signed afresh (new timestamp and nonce), so retries are never refused
as replays. The round a request acts on is passed as the request extension
:data:`ROUND_EXTENSION`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import httpx

from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import SIGNATURE_HEADER, SignedRequest, sign_request

__all__ = ["ROUND_EXTENSION", "SigningAuth", "for_round"]

ROUND_EXTENSION = "veilfl_round"


def for_round(round_id: int) -> dict[str, object]:
    """Request extensions that make the signature cover ``round_id``."""
    return {ROUND_EXTENSION: round_id}


class SigningAuth(httpx.Auth):
    """Adds ``X-Veilfl-Signature`` to every request, addressed to ``audience``.

    Args:
        identity: The signing key.
        audience: The server and run, e.g. ``coordinator/<run id>``.
        signer_id: The id to sign as (default: the identity's client id).
        clock: Unix time in seconds.
    """

    requires_request_body = True

    def __init__(
        self,
        identity: Identity,
        audience: str,
        *,
        signer_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._identity = identity
        self._audience = audience
        self._signer_id = signer_id
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign ``request`` (method, path and query, body, round, time, nonce)."""
        round_id = request.extensions.get(ROUND_EXTENSION)
        signed = SignedRequest.of(
            audience=self._audience,
            method=request.method,
            path=request.url.raw_path.decode("latin-1"),
            body=request.content,
            round_id=None if round_id is None else int(round_id),
        )
        request.headers[SIGNATURE_HEADER] = sign_request(
            self._identity, signed, now_s=self._clock(), client_id=self._signer_id
        )
        yield request
