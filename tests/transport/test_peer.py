"""An ``http://`` URL pointed at a TLS server fails at once, saying to use ``https://``."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from veilfl.aggregator.service import fetch_run
from veilfl.errors import ConfigurationError, TransportError
from veilfl.tls import issue_server_certificate, make_certificate_authority
from veilfl.transport.peer import Peer, RetryPolicy

pytestmark = pytest.mark.timeout(60)
QUICK = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.01, timeout_s=5.0)


@pytest.fixture
async def tls_port(tmp_path: Path) -> AsyncIterator[int]:
    """A TLS server on loopback that hangs up on whatever it is sent."""
    authority = make_certificate_authority(tmp_path)
    issue_server_certificate(authority, tmp_path, "server", ["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=context)
    async with server:
        yield int(server.sockets[0].getsockname()[1])


async def test_a_client_told_http_for_a_tls_server_is_told_to_use_https_at_once(
    tls_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{tls_port}") as http:
        with pytest.raises(ConfigurationError) as refused:
            await Peer(http, QUICK).request("GET", "/v1/run")
    assert f"use https://127.0.0.1:{tls_port}" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]  # no retries


async def test_an_aggregator_told_http_for_a_tls_coordinator_is_told_to_use_https(
    tls_port: int,
) -> None:
    with pytest.raises(ConfigurationError, match=f"https://127.0.0.1:{tls_port}"):
        await fetch_run(f"http://127.0.0.1:{tls_port}", wait_s=30.0)


async def test_a_plaintext_server_that_hangs_up_is_retried_as_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        with pytest.raises(TransportError, match="after 4 attempts"):
            await Peer(http, QUICK).request("GET", "/v1/run")
