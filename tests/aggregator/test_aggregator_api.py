"""``run_aggregator``: the public entry point refuses unsafe or impossible settings in
one line (serving is covered by examples/secure_federation.py and the CLI tests)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from veilfl.aggregator.api import run_aggregator
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ConfigurationError, TransportError
from veilfl.tls import ServerCertificate


async def test_an_aggregator_without_tls_or_insecure_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="insecure=True") as raised:
        await run_aggregator(
            index=1,
            key=generate_keypair(),
            coordinator_url="https://127.0.0.1:1",
            peer_fingerprints=None,
            trust_coordinator_peer_keys=True,
        )

    assert "\n" not in str(raised.value)


async def test_a_plaintext_coordinator_url_needs_insecure(tmp_path: Path) -> None:
    certificate = ServerCertificate(cert_file=tmp_path / "a.pem", key_file=tmp_path / "a.key")

    with pytest.raises(ConfigurationError, match="insecure"):
        await run_aggregator(
            index=1,
            key=generate_keypair(),
            coordinator_url="http://127.0.0.1:1",
            peer_fingerprints=None,
            trust_coordinator_peer_keys=True,
            certificate=certificate,
        )


async def test_a_taken_port_is_a_transport_error_not_an_exit() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
            await run_aggregator(
                index=1,
                key=generate_keypair(),
                coordinator_url="http://127.0.0.1:1",
                peer_fingerprints=None,
                trust_coordinator_peer_keys=True,
                insecure=True,
                port=port,
            )
