"""One HTTP peer (coordinator or aggregator) with retries and backoff.

An ``http://`` URL pointed at a TLS server fails on its first attempt, in one line
that says to use ``https://`` (:func:`tls_spoken_instead`), instead of being retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from veilfl.errors import ConfigurationError, TransportError

__all__ = [
    "Peer",
    "RetryPolicy",
    "certificate_rejected",
    "error_message",
    "raise_for_status",
    "tls_spoken_instead",
]

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
            ConfigurationError: if the URL is ``http://`` and the server speaks TLS.
        """
        last_problem = "no attempt was made"
        for attempt in range(1, self._retry.max_attempts + 1):
            response, problem = await self._attempt(method, path, expect, kwargs)
            if problem is None:
                assert response is not None
                return response
            last_problem = problem
            if attempt == self._retry.max_attempts:
                break
            wait = self._wait_before(attempt, response)
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

    async def wait_for(
        self,
        method: str,
        path: str,
        *,
        wait_s: float,
        expect: tuple[int, ...] = (200,),
        longer: str = "wait longer",
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> httpx.Response:
        """:meth:`request`, retried for ``wait_s`` seconds rather than a number of
        attempts: for a first contact with a server that may not be up yet. Waits grow
        as in :meth:`request` (up to ``max_backoff_s``); the log says when the wait
        starts and then every 30 s. ``longer`` ends the error message: how to wait
        longer.

        Raises:
            TransportError: if no attempt succeeded within ``wait_s``.
            ConfigurationError: if the URL is ``http://`` and the server speaks TLS.
        """
        started = said = clock()
        attempt = 0
        while True:
            attempt += 1
            response, problem = await self._attempt(method, path, expect, kwargs)
            if problem is None:
                assert response is not None
                if attempt > 1:
                    logger.info("%s answered after %.0f s", self.base_url, clock() - started)
                return response
            now = clock()
            left = wait_s - (now - started)
            if left <= 0:
                raise TransportError(
                    f"{self.base_url} did not answer {method} {path} within {wait_s:.0f} s "
                    f"({problem}). Check that it is running and reachable, or {longer}."
                )
            if attempt == 1:
                logger.info(
                    "waiting for %s to answer (up to %.0f s): %s", self.base_url, wait_s, problem
                )
            elif now - said >= 30.0:
                logger.info(
                    "still waiting for %s (%.0f s of %.0f s): %s",
                    self.base_url,
                    now - started,
                    wait_s,
                    problem,
                )
                said = now
            await asyncio.sleep(min(left, self._wait_before(attempt, response)))

    async def _attempt(
        self, method: str, path: str, expect: tuple[int, ...], kwargs: dict[str, Any]
    ) -> tuple[httpx.Response | None, str | None]:
        """One try: the answer, and what went wrong (None: an answer to return)."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            if certificate_rejected(exc):
                raise TransportError(
                    f"{self.base_url} presented a TLS certificate that does not verify "
                    f"against the trusted CA ({exc}); nothing was sent. Check --ca-cert, "
                    "and that the server's certificate names this host."
                ) from exc
            hint = await tls_spoken_instead(self._http.base_url, exc)
            if hint is not None:
                raise ConfigurationError(hint) from exc
            return None, f"{type(exc).__name__}: {exc}"
        if response.status_code in expect or (
            400 <= response.status_code < 500 and response.status_code != 429
        ):
            return response, None
        return response, f"HTTP {response.status_code}: {response.text[:200]}"

    def _wait_before(self, attempt: int, response: httpx.Response | None) -> float:
        wait = self._retry.backoff(attempt)
        if response is not None and response.status_code == 429:
            wait = max(wait, _retry_after(response))
        return wait


def certificate_rejected(exc: httpx.TransportError) -> bool:
    """Whether the TLS handshake failed because the server's certificate did not verify
    (retrying cannot help; failing at once is the safe answer)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


async def tls_spoken_instead(
    url: httpx.URL | str, exc: httpx.TransportError, *, timeout_s: float = 5.0
) -> str | None:
    """If ``url`` is ``http://`` and its server hung up because it speaks TLS, the
    one-line message that says so; else None.

    A plaintext request to a TLS server ends in a dropped connection, which would be
    retried as a network failure. This probe opens one TLS handshake to the same
    host and port and sends nothing over it; the server's certificate is not
    checked, because the answer only words an error (nothing is trusted on it).
    """
    url = httpx.URL(str(url))
    if url.scheme != "http" or not isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return None
    host, port = url.host, url.port or 80
    probe = ssl.create_default_context()
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # see above: the handshake is the whole question
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=probe), timeout=timeout_s
        )
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    netloc = url.netloc.decode("ascii")
    netloc = netloc if url.port else f"{netloc}:80"
    return (
        f"{netloc} speaks TLS, but its URL is plaintext http://; use https://{netloc} "
        "(with --ca-cert, without --insecure)."
    )


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
