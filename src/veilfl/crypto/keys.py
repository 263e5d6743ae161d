"""Aggregator key pairs: generation, (de)serialisation and fingerprints. No file I/O.

Keys are plain bytes here; :mod:`veilfl.keystore` writes them to files with mode 0600.

* ``x25519``: 32-byte raw private and public keys.
* ``mlkem768-x25519``: the ML-KEM-768 64-byte seed followed by the X25519 private key;
  the public key is the ML-KEM-768 public key (1,184 bytes) followed by X25519's.

A fingerprint is the first 32 hex digits (128 bits) of SHA-256 over the KEM name and
the public key bytes: short enough to paste into a configuration, long enough that
no one can make a second key with the same fingerprint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import get_args

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from veilfl.crypto.envelope import KemChoice, PrivateKey, PublicKey
from veilfl.errors import ConfigurationError

__all__ = [
    "AggregatorKeyPair",
    "fingerprint",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "public_key_bytes",
]

_X25519_LENGTH = 32
_MLKEM_SEED_LENGTH = 64


@dataclass(frozen=True)
class AggregatorKeyPair:
    """An aggregator's HPKE key pair."""

    kem: KemChoice
    private_key: PrivateKey
    private_bytes: bytes

    def __repr__(self) -> str:  # never print key material
        return f"AggregatorKeyPair(kem={self.kem!r}, fingerprint={self.fingerprint!r})"

    @property
    def public_key(self) -> PublicKey:
        """The public key."""
        return self.private_key.public_key()

    @property
    def public_bytes(self) -> bytes:
        """The public key's bytes."""
        return public_key_bytes(self.kem, self.private_bytes)

    @property
    def fingerprint(self) -> str:
        """The public key's fingerprint."""
        return fingerprint(self.kem, self.public_bytes)


def _check_kem(kem: str) -> KemChoice:
    if kem not in get_args(KemChoice):
        raise ConfigurationError(f"Unknown KEM {kem!r}; use 'x25519' or 'mlkem768-x25519'.")
    return kem  # type: ignore[return-value]


def generate_keypair(kem: KemChoice = "x25519") -> AggregatorKeyPair:
    """A fresh key pair (from the OS CSPRNG, via ``cryptography``)."""
    kem = _check_kem(kem)
    x_key = x25519.X25519PrivateKey.generate()
    raw_x = x_key.private_bytes_raw()
    if kem == "x25519":
        return load_private_key(kem, raw_x)
    seed = mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
    return load_private_key(kem, seed + raw_x)


def load_private_key(kem: KemChoice, data: bytes) -> AggregatorKeyPair:
    """Rebuild a key pair from its private bytes.

    Raises:
        ConfigurationError: if the bytes do not form a key of that KEM.
    """
    kem = _check_kem(kem)
    try:
        if kem == "x25519":
            if len(data) != _X25519_LENGTH:
                raise ValueError("wrong length")
            key: PrivateKey = x25519.X25519PrivateKey.from_private_bytes(data)
        else:
            if len(data) != _MLKEM_SEED_LENGTH + _X25519_LENGTH:
                raise ValueError("wrong length")
            key = hpke.MLKEM768X25519PrivateKey(
                mlkem.MLKEM768PrivateKey.from_seed_bytes(data[:_MLKEM_SEED_LENGTH]),
                x25519.X25519PrivateKey.from_private_bytes(data[_MLKEM_SEED_LENGTH:]),
            )
    except ValueError:
        raise ConfigurationError(
            f"The private key is not a valid {kem} key; regenerate it with `veilfl keys`."
        ) from None
    return AggregatorKeyPair(kem=kem, private_key=key, private_bytes=bytes(data))


def public_key_bytes(kem: KemChoice, private_bytes: bytes) -> bytes:
    """The public key bytes that belong to ``private_bytes``."""
    if kem == "x25519":
        return (
            x25519.X25519PrivateKey.from_private_bytes(private_bytes)
            .public_key()
            .public_bytes_raw()
        )
    seed, raw_x = private_bytes[:_MLKEM_SEED_LENGTH], private_bytes[_MLKEM_SEED_LENGTH:]
    ml_public = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
    x_public = x25519.X25519PrivateKey.from_private_bytes(raw_x).public_key().public_bytes_raw()
    return ml_public + x_public


def load_public_key(kem: KemChoice, data: bytes) -> PublicKey:
    """A public key from its bytes.

    Raises:
        ConfigurationError: if the bytes are not a public key of that KEM.
    """
    kem = _check_kem(kem)
    try:
        if kem == "x25519":
            return x25519.X25519PublicKey.from_public_bytes(data)
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(data[:-_X25519_LENGTH]),
            x25519.X25519PublicKey.from_public_bytes(data[-_X25519_LENGTH:]),
        )
    except ValueError:
        raise ConfigurationError(f"The public key is not a valid {kem} key.") from None


def fingerprint(kem: KemChoice, public_bytes: bytes) -> str:
    """32 hex digits of SHA-256 over the KEM name and the public key."""
    return hashlib.sha256(kem.encode() + b"\x00" + public_bytes).hexdigest()[:32]
