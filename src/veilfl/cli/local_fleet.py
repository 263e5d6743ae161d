"""Processes on loopback for the demo, the end-to-end tests and the load test: free
ports, a local CA with server certificates, enrollment tokens, aggregator key pairs
and the command line that starts each aggregator."""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from veilfl.auth.enrollment import generate_tokens
from veilfl.cli.keys_cmd import key_paths
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.keyfiles import read_public_key, read_tokens, write_keypair, write_tokens
from veilfl.tls import (
    issue_server_certificate,
    load_certificate_authority,
    make_certificate_authority,
)

__all__ = [
    "LOOPBACK_HOSTS",
    "LocalAggregator",
    "LocalTrust",
    "client_pin_flags",
    "free_port",
    "local_aggregators",
    "local_trust",
    "port_is_free",
    "server_aggregator_flags",
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a TCP port on loopback can be listened on now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class LocalTrust:
    """TLS and enrollment material for processes on loopback.

    Attributes:
        folder: Where the CA, the certificates and the token file are.
        ca_file: The CA certificate every process trusts.
        tokens_file: One-time enrollment tokens (0600), for the coordinator.
        tokens: The same tokens, one per client.
    """

    folder: Path
    ca_file: Path
    tokens_file: Path
    tokens: tuple[str, ...]

    def server_flags(self, name: str) -> list[str]:
        """``--tls-cert/--tls-key/--ca-cert`` for the server whose certificate is ``name``."""
        return [
            "--tls-cert",
            str(self.folder / f"{name}.pem"),
            "--tls-key",
            str(self.folder / f"{name}.key"),
            "--ca-cert",
            str(self.ca_file),
        ]

    def coordinator_flags(self) -> list[str]:
        """The coordinator's TLS options and its token file."""
        return [
            *self.server_flags("coordinator"),
            "--enrollment-tokens",
            str(self.tokens_file),
        ]


def local_trust(folder: Path, *, aggregators: int, clients: int) -> LocalTrust:
    """A CA with certificates for the coordinator and ``aggregators`` aggregators on
    loopback, and one enrollment token per client; what ``folder`` already holds is
    reused (so a demo run folder can be resumed)."""
    authority = (
        load_certificate_authority(folder)
        if (folder / "ca.pem").exists()
        else make_certificate_authority(folder)
    )
    for name in ["coordinator", *(f"aggregator-{i}" for i in range(1, aggregators + 1))]:
        if not (folder / f"{name}.pem").exists():
            issue_server_certificate(authority, folder, name, LOOPBACK_HOSTS)
    tokens_file = folder / "tokens.txt"
    if not tokens_file.exists():
        write_tokens(generate_tokens(clients), tokens_file)
    return LocalTrust(
        folder=folder,
        ca_file=folder / "ca.pem",
        tokens_file=tokens_file,
        tokens=tuple(read_tokens(tokens_file)),
    )


@dataclass(frozen=True)
class LocalAggregator:
    """One aggregator to run on loopback.

    Attributes:
        index: Share index, 1..m.
        url: Where it will listen.
        private_key: Its private key file (0600).
        public_key: Its public key file.
        fingerprint: Its key's fingerprint, for clients to pin.
        command: The command line that starts it.
    """

    index: int
    url: str
    private_key: Path
    public_key: Path
    fingerprint: str
    command: list[str]


def local_aggregators(
    keys_dir: Path,
    *,
    count: int,
    coordinator_url: str,
    trust: LocalTrust | None,
    spool_dir: Path | None = None,
    extra: list[str] | None = None,
    ports: Sequence[int] | None = None,
) -> list[LocalAggregator]:
    """Plan ``count`` aggregators: make missing key pairs in ``keys_dir``, pick ports.
    Each aggregator pins its peers (``--peer-fingerprint``, every aggregator's in
    index order).

    Args:
        keys_dir: Folder for ``aggregator-J.key`` / ``aggregator-J.pub``.
        count: m.
        coordinator_url: Where each aggregator learns the run.
        trust: Certificates to serve HTTPS with (None: plaintext HTTP, ``--insecure``).
        spool_dir: Where aggregator J spools its shares (``aggregator-J`` inside), so a
            restarted aggregator takes its round back (None: temporary folders).
        extra: More options for every aggregator command (``--log-level`` ...).
        ports: The port of each aggregator, in index order (a resumed run keeps the
            ones it was started with); None: free ports.

    Raises:
        ConfigurationError: if one of ``ports`` is in use now.
    """
    if ports is not None:
        for index, port in enumerate(ports, start=1):
            if not port_is_free(port):
                raise ConfigurationError(
                    f"Aggregator {index}'s port {port}, which the run was started with, is "
                    "in use; free it to resume the run, or use a new --run-dir."
                )
    keys = []
    for index in range(1, count + 1):
        private, public = key_paths(keys_dir, index)
        if not private.exists():
            write_keypair(generate_keypair(), private, public)
        keys.append((private, public, read_public_key(public).fingerprint))
    peers = [flag for _, _, fp in keys for flag in ("--peer-fingerprint", fp)]
    planned = []
    for index, (private, public, fingerprint) in enumerate(keys, start=1):
        port = free_port() if ports is None else ports[index - 1]
        planned.append(
            LocalAggregator(
                index=index,
                url=f"{'http' if trust is None else 'https'}://127.0.0.1:{port}",
                private_key=private,
                public_key=public,
                fingerprint=fingerprint,
                command=[
                    sys.executable,
                    "-m",
                    "veilfl",
                    "aggregator",
                    "--index",
                    str(index),
                    "--key",
                    str(private),
                    "--coordinator",
                    coordinator_url,
                    "--port",
                    str(port),
                    *peers,
                    *(
                        ["--insecure"]
                        if trust is None
                        else trust.server_flags(f"aggregator-{index}")
                    ),
                    *(
                        []
                        if spool_dir is None
                        else ["--spool", str(spool_dir / f"aggregator-{index}")]
                    ),
                    *(extra or []),
                ],
            )
        )
    return planned


def server_aggregator_flags(aggregators: list[LocalAggregator]) -> list[str]:
    """The coordinator's ``--aggregator URL,PUBLIC_KEY_FILE`` options, in index order."""
    return [flag for a in aggregators for flag in ("--aggregator", f"{a.url},{a.public_key}")]


def client_pin_flags(aggregators: list[LocalAggregator]) -> list[str]:
    """A client's ``--aggregator-fingerprint FP`` options pinning these aggregators, in
    index order (what an operator hands each client out of band)."""
    return [flag for a in aggregators for flag in ("--aggregator-fingerprint", a.fingerprint)]
