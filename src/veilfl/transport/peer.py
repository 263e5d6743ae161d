"""One HTTP peer (coordinator or aggregator) with retries and backoff."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from veilfl.errors import TransportError

__all__ = ["Peer", "RetryPolicy", "certificate_rejected", "error_message", "raise_for_status"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up on a peer.

    Attributes:
        max_attempts: Attempts per request (network errors, 5xx and 429 are retried).
        initial_backoff_s: First wait; doubles each attempt, with jitter.
        max_backoff_s: Longest single wait.
        timeout_s: Per-request timeout.
    """

    max_attempts: int = 12
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    timeout_s: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based), with jitter."""
        base = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)  # jitter only; not a secret


class Peer:
    """Requests to one base URL, retried on network errors, 5xx and 429."""

    def __init__(self, http: httpx.AsyncClient, retry: RetryPolicy) -> None:
        self._http = http
        self._retry = retry

    @property
    def base_url(self) -> str:
        """The peer's base URL."""
        return str(self._http.base_url)

    async def request(
        self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs: Any
    ) -> httpx.Response:
        """Send a request; return the first answer that is expected or a non-429 4xx.

        Raises:
            TransportError: when every attempt failed.
        """
        last_problem = "no attempt was made"
        for attempt in range(1, self._retry.max_attempts + 1):
            response: httpx.Response | None = None
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if certificate_rejected(exc):
                    raise TransportError(
                        f"{self.base_url} presented a TLS certificate that does not verify "
                        f"against the trusted CA ({exc}); nothing was sent. Check --ca-cert, "
                        "and that the server's certificate names this host."
                    ) from exc
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in expect or (
                    400 <= response.status_code < 500 and response.status_code != 429
                ):
                    return response
                last_problem = f"HTTP {response.status_code}: {response.text[:200]}"
            if attempt == self._retry.max_attempts:
                break
            wait = self._retry.backoff(attempt)
            if response is not None and response.status_code == 429:
                wait = max(wait, _retry_after(response))
            logger.warning(
                "%s %s%s failed (%s); retrying in %.1f s (attempt %d of %d)",
                method,
                self.base_url,
                path,
                last_problem,
                wait,
                attempt,
                self._retry.max_attempts,
            )
            await asyncio.sleep(wait)
        raise TransportError(
            f"{self.base_url} did not answer {method} {path} after "
            f"{self._retry.max_attempts} attempts ({last_problem}). Check that it is running "
            "and reachable."
        )


def certificate_rejected(exc: httpx.TransportError) -> bool:
    """Whether the TLS handshake failed because the server's certificate did not verify
    (retrying cannot help; failing at once is the safe answer)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _retry_after(response: httpx.Response) -> float:
    """Seconds a 429 answer asks to wait (0 if it does not say)."""
    try:
        return min(60.0, max(0.0, float(response.headers.get("Retry-After", "0"))))
    except ValueError:
        return 0.0


def error_message(response: httpx.Response) -> str:
    """The ``message`` of a veilfl JSON error, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, Mapping):
        return str(body.get("message", body))
    return str(body)


def raise_for_status(response: httpx.Response, action: str, *, expected: int = 200) -> None:
    """Raise :class:`TransportError` unless the answer has the expected status."""
    if response.status_code != expected:
        raise TransportError(
            f"The peer refused to {action} (HTTP {response.status_code}): {error_message(response)}"
        )
