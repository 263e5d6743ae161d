"""Aggregator keys on disk: private files with mode 0600, public files to share.

Private key file (JSON)::  {"kem": "x25519", "private_key": "<base64>"}
Public key file (JSON)::   {"kem": "x25519", "public_key": "<base64>", "fingerprint": "<hex>"}

A private key file readable by group or others is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from pathlib import Path
from typing import Any

from veilfl.crypto.envelope import KemChoice, PublicKey
from veilfl.crypto.keys import (
    AggregatorKeyPair,
    fingerprint,
    load_private_key,
    load_public_key,
)
from veilfl.errors import ConfigurationError

__all__ = [
    "PublicKeyFile",
    "read_private_key",
    "read_public_key",
    "write_keypair",
]


def write_keypair(keypair: AggregatorKeyPair, private_path: Path, public_path: Path) -> None:
    """Write the private key (mode 0600, never overwriting) and the public key.

    Raises:
        ConfigurationError: if the private key file already exists.
    """
    private_path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(
        {"kem": keypair.kem, "private_key": base64.b64encode(keypair.private_bytes).decode()}
    ).encode()
    try:
        descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(
            f"{private_path} already exists; remove it first to make a new key."
        ) from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    public_path.write_text(
        json.dumps(
            {
                "kem": keypair.kem,
                "public_key": base64.b64encode(keypair.public_bytes).decode(),
                "fingerprint": keypair.fingerprint,
            },
            indent=2,
        )
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"The key file {path} does not exist.") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"The key file {path} cannot be read: {type(exc).__name__}."
        ) from None
    if not isinstance(data, dict) or "kem" not in data:
        raise ConfigurationError(f"{path} is not a veilfl key file.")
    return data


def read_private_key(path: Path) -> AggregatorKeyPair:
    """Load a private key file, refusing one that others can read.

    Raises:
        ConfigurationError: saying what is wrong (never echoing key material).
    """
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0
    if mode & 0o077:
        raise ConfigurationError(
            f"The private key {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`."
        )
    data = _read_json(path)
    try:
        raw = base64.b64decode(data["private_key"], validate=True)
    except (KeyError, binascii.Error, TypeError):
        raise ConfigurationError(f"{path} holds no valid private key.") from None
    return load_private_key(data["kem"], raw)


class PublicKeyFile:
    """An aggregator's public key, as read from its public key file."""

    def __init__(self, kem: KemChoice, public_bytes: bytes) -> None:
        self.kem = kem
        self.public_bytes = public_bytes
        self.key: PublicKey = load_public_key(kem, public_bytes)
        self.fingerprint = fingerprint(kem, public_bytes)

    def to_json(self) -> dict[str, str]:
        """What the coordinator publishes about this key."""
        return {
            "kem": self.kem,
            "public_key": base64.b64encode(self.public_bytes).decode(),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublicKeyFile:
        """Parse :meth:`to_json` output.

        Raises:
            ConfigurationError: if it is malformed.
        """
        try:
            return cls(data["kem"], base64.b64decode(data["public_key"], validate=True))
        except (KeyError, binascii.Error, TypeError):
            raise ConfigurationError("The published public key is malformed.") from None


def read_public_key(path: Path) -> PublicKeyFile:
    """Load a public key file."""
    return PublicKeyFile.from_json(_read_json(path))
