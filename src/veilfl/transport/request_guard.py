"""Checking signed requests at an HTTP edge (coordinator and aggregators alike)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fastapi import Request

from veilfl.auth.rate_limit import RateLimit, RateLimiter
from veilfl.auth.request_verifier import RequestVerifier
from veilfl.auth.signed_request import SIGNATURE_HEADER, SignedRequest, body_digest

__all__ = ["RequestGuard", "request_path"]

_HASH_OFF_LOOP_BYTES = 1 << 20
"""Bodies larger than this are hashed in a worker thread, keeping the event loop free."""


def request_path(request: Request) -> str:
    """The path and query exactly as the client sent them (what it signed)."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query: bytes = request.scope.get("query_string", b"")
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


class RequestGuard:
    """Verifies each signed request and applies the per-client rate limit.

    Args:
        verifier: Signature, clock-window and replay checks for this server.
        rate_limit: Requests allowed per client (None: unlimited).
        clock: Unix time in seconds.
    """

    def __init__(
        self,
        verifier: RequestVerifier,
        *,
        rate_limit: RateLimit | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._limiter = None if rate_limit is None else RateLimiter(rate_limit)
        self._clock = clock

    @property
    def audience(self) -> str:
        """Who requests must be addressed to."""
        return self._verifier.audience

    async def check(
        self,
        request: Request,
        *,
        public_key_for: Callable[[str], bytes | None],
        round_id: int | None,
        body: bytes | None = None,
    ) -> str:
        """The verified client id of ``request`` (which is then rate-limited).

        Args:
            request: The request.
            public_key_for: The public key of a signer id (None: unknown).
            round_id: The round the request acts on.
            body: The body, when the caller read it already (with a size limit,
                :func:`~veilfl.transport.body_limit.read_limited_body`); else it is read.

        Raises:
            AuthenticationError: (or a subclass) saying what is wrong.
        """
        if body is None:
            body = await request.body()
        digest = (
            await asyncio.to_thread(body_digest, body)
            if len(body) > _HASH_OFF_LOOP_BYTES
            else body_digest(body)
        )
        signed = SignedRequest(
            audience=self._verifier.audience,
            method=request.method,
            path=request_path(request),
            body_sha256=digest,
            round_id=round_id,
        )
        now = self._clock()
        client_id = self._verifier.verify(
            signed,
            request.headers.get(SIGNATURE_HEADER),
            public_key_for=public_key_for,
            now_s=now,
        )
        if self._limiter is not None:
            self._limiter.acquire(client_id, now_s=now)
        return client_id
