"""Keys on disk: private files with mode 0600, public files to share.

Aggregator private key file (JSON)::  {"kem": "x25519", "private_key": "<base64>"}
Aggregator public key file (JSON)::   {"kem": "x25519", "public_key": "<base64>",
                                       "fingerprint": "<hex>"}
Identity file (JSON, clients and the coordinator)::
                                      {"kind": "ed25519", "private_key": "<base64>"}

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

from veilfl.auth.identity import Identity, decode_public_key, encode_public_key
from veilfl.crypto.envelope import KemChoice, PublicKey
from veilfl.crypto.keys import (
    AggregatorKeyPair,
    fingerprint,
    load_private_key,
    load_public_key,
    load_signing_key,
)
from veilfl.errors import AuthenticationError, ConfigurationError

__all__ = [
    "PublicKeyFile",
    "load_or_create_identity",
    "read_allowed_keys",
    "read_identity",
    "read_private_key",
    "read_public_key",
    "read_tokens",
    "require_private_mode",
    "write_identity",
    "write_keypair",
    "write_private_file",
    "write_tokens",
]


def write_keypair(keypair: AggregatorKeyPair, private_path: Path, public_path: Path) -> None:
    """Write the private key (mode 0600, never overwriting) and the public key.

    Raises:
        ConfigurationError: if the private key file already exists.
    """
    write_private_file(
        private_path,
        json.dumps(
            {
                "kem": keypair.kem,
                "private_key": base64.b64encode(keypair.private_bytes).decode(),
                "signing_key": base64.b64encode(keypair.signing_private_bytes).decode(),
            }
        ).encode(),
    )
    public_path.write_text(
        json.dumps(
            PublicKeyFile(
                keypair.kem, keypair.public_bytes, keypair.signing_public_bytes
            ).to_json(),
            indent=2,
        )
    )


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600, write ``data`` and fsync; never overwrite.

    Raises:
        ConfigurationError: if the file already exists.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(
            f"{path} already exists; remove it first, or choose another."
        ) from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def require_private_mode(path: Path) -> None:
    """Refuse a secret file that group or others can read (with a ``chmod`` hint).

    Raises:
        ConfigurationError: if it is missing or readable by others.
    """
    if not path.exists():
        raise ConfigurationError(f"The secret file {path} does not exist.")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigurationError(
            f"The secret file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`."
        )


def write_identity(identity: Identity, path: Path) -> None:
    """Write an Ed25519 identity to ``path`` (mode 0600, never overwriting).

    Raises:
        ConfigurationError: if the file already exists.
    """
    write_private_file(
        path,
        json.dumps(
            {"kind": "ed25519", "private_key": base64.b64encode(identity.private_bytes).decode()}
        ).encode(),
    )


def read_identity(path: Path) -> Identity:
    """Load an identity file, refusing one that others can read.

    Raises:
        ConfigurationError: saying what is wrong (never echoing key material).
    """
    require_private_mode(path)
    data = _read_json(path, required="kind")
    try:
        if data["kind"] != "ed25519":
            raise ValueError
        return Identity.from_private_bytes(base64.b64decode(data["private_key"], validate=True))
    except (KeyError, binascii.Error, TypeError, ValueError, AuthenticationError):
        raise ConfigurationError(f"{path} holds no valid Ed25519 identity.") from None


def load_or_create_identity(path: Path) -> Identity:
    """The identity in ``path``, made there first if the file does not exist."""
    if not path.exists():
        write_identity(Identity.generate(), path)
    return read_identity(path)


def _read_json(path: Path, *, required: str = "kem") -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"The key file {path} does not exist.") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"The key file {path} cannot be read: {type(exc).__name__}."
        ) from None
    if not isinstance(data, dict) or required not in data:
        raise ConfigurationError(f"{path} is not a veilfl key file.")
    return data


def read_private_key(path: Path) -> AggregatorKeyPair:
    """Load a private key file, refusing one that others can read.

    Raises:
        ConfigurationError: saying what is wrong (never echoing key material).
    """
    require_private_mode(path)
    data = _read_json(path)
    try:
        raw = base64.b64decode(data["private_key"], validate=True)
    except (KeyError, binascii.Error, TypeError):
        raise ConfigurationError(f"{path} holds no valid private key.") from None
    try:
        signing = base64.b64decode(data["signing_key"], validate=True)
    except KeyError:
        raise ConfigurationError(
            f"{path} holds no signing key (it was made by an older veilfl); make new keys "
            "with `veilfl keys` and give their fingerprints to the clients and aggregators."
        ) from None
    except (binascii.Error, TypeError):
        raise ConfigurationError(f"{path} holds no valid signing key.") from None
    return load_private_key(data["kem"], raw, signing=signing)


class PublicKeyFile:
    """An aggregator's public keys (HPKE and Ed25519), as read from its public key file."""

    def __init__(self, kem: KemChoice, public_bytes: bytes, signing_public: bytes) -> None:
        self.kem = kem
        self.public_bytes = public_bytes
        self.signing_public = signing_public
        self.key: PublicKey = load_public_key(kem, public_bytes)
        load_signing_key(signing_public)  # raises ConfigurationError if malformed
        self.fingerprint = fingerprint(kem, public_bytes, signing_public)

    def to_json(self) -> dict[str, str]:
        """What the coordinator publishes about these keys."""
        return {
            "kem": self.kem,
            "public_key": base64.b64encode(self.public_bytes).decode(),
            "signing_key": encode_public_key(self.signing_public),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublicKeyFile:
        """Parse :meth:`to_json` output (the fingerprint is recomputed, not trusted).

        Raises:
            ConfigurationError: if it is malformed.
        """
        try:
            return cls(
                data["kem"],
                base64.b64decode(data["public_key"], validate=True),
                decode_public_key(str(data["signing_key"])),
            )
        except KeyError as exc:
            raise ConfigurationError(
                f"The public key file has no {exc}; make new keys with `veilfl keys`."
            ) from None
        except (binascii.Error, TypeError, AuthenticationError):
            raise ConfigurationError("The published public key is malformed.") from None


def read_public_key(path: Path) -> PublicKeyFile:
    """Load a public key file."""
    return PublicKeyFile.from_json(_read_json(path))


def _lines(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(
            f"The {what} file {path} cannot be read: {exc.strerror}."
        ) from None
    return [
        line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()
    ]


def write_tokens(tokens: list[str], path: Path) -> None:
    """Write one-time enrollment tokens, one per line (mode 0600, never overwriting).

    Raises:
        ConfigurationError: if the file already exists.
    """
    write_private_file(path, "".join(f"{token}\n" for token in tokens).encode())


def read_tokens(path: Path) -> list[str]:
    """The tokens in a token file (one per line; ``#`` starts a comment).

    Raises:
        ConfigurationError: if others can read it, or it holds no token.
    """
    require_private_mode(path)
    tokens = _lines(path, "enrollment token")
    if not tokens:
        raise ConfigurationError(f"The token file {path} holds no token.")
    return tokens


def read_allowed_keys(path: Path) -> list[bytes]:
    """The client public keys in an allow-list file (one per line, as ``veilfl identity``
    prints them; ``#`` starts a comment).

    Raises:
        ConfigurationError: naming the first line that is not a public key.
    """
    keys = []
    for number, line in enumerate(_lines(path, "allowed clients"), start=1):
        try:
            keys.append(decode_public_key(line.split()[0]))
        except AuthenticationError as exc:
            raise ConfigurationError(f"{path}, entry {number}: {exc}") from None
    if not keys:
        raise ConfigurationError(f"The allow-list {path} holds no public key.")
    return keys
