"""Aggregators on loopback for the demo, the end-to-end tests and the load test:
free ports, key pairs and the command line that starts each aggregator."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from veilfl.cli.keys_cmd import key_paths
from veilfl.crypto.keys import generate_keypair
from veilfl.keyfiles import read_public_key, write_keypair

__all__ = ["LocalAggregator", "free_port", "local_aggregators", "server_aggregator_flags"]


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    keys_dir: Path, *, count: int, coordinator_url: str, extra: list[str] | None = None
) -> list[LocalAggregator]:
    """Plan ``count`` aggregators: make missing key pairs in ``keys_dir``, pick ports.

    Args:
        keys_dir: Folder for ``aggregator-J.key`` / ``aggregator-J.pub``.
        count: m.
        coordinator_url: Where each aggregator learns the run.
        extra: More options for every aggregator command (``--log-level`` ...).
    """
    planned = []
    for index in range(1, count + 1):
        private, public = key_paths(keys_dir, index)
        if not private.exists():
            write_keypair(generate_keypair(), private, public)
        port = free_port()
        planned.append(
            LocalAggregator(
                index=index,
                url=f"http://127.0.0.1:{port}",
                private_key=private,
                public_key=public,
                fingerprint=read_public_key(public).fingerprint,
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
                    *(extra or []),
                ],
            )
        )
    return planned


def server_aggregator_flags(aggregators: list[LocalAggregator]) -> list[str]:
    """The coordinator's ``--aggregator URL,PUBLIC_KEY_FILE`` options, in index order."""
    return [flag for a in aggregators for flag in ("--aggregator", f"{a.url},{a.public_key}")]
