"""Ed25519 identities of clients and of the coordinator.

A client's id is derived from its public key (the first 128 bits of its SHA-256, in
hex), so an id cannot be claimed without the matching private key, and the same key
always has the same id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from veilfl.errors import AuthenticationError

__all__ = [
    "PUBLIC_KEY_BYTES",
    "SIGNATURE_BYTES",
    "Identity",
    "client_id_for",
    "decode_public_key",
    "encode_public_key",
    "verify_signature",
]

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_PUBLIC_KEY_TEXT = re.compile(r"[A-Za-z0-9_-]{43}")


def client_id_for(public_key: bytes) -> str:
    """The client id that belongs to an Ed25519 public key."""
    return hashlib.sha256(b"veilfl-client-id\x00" + public_key).hexdigest()[:32]


def encode_public_key(public_key: bytes) -> str:
    """A public key as URL-safe base64 without padding (how it travels and is listed)."""
    return base64.urlsafe_b64encode(public_key).rstrip(b"=").decode()


def decode_public_key(text: str) -> bytes:
    """Parse :func:`encode_public_key` output strictly (only its canonical spelling).

    Raises:
        AuthenticationError: if it is not a 32-byte key in that spelling.
    """
    candidate = text.strip()
    if not _PUBLIC_KEY_TEXT.fullmatch(candidate):
        raise AuthenticationError(
            f"An Ed25519 public key is {PUBLIC_KEY_BYTES} bytes in URL-safe base64 without "
            "padding (43 characters), as `veilfl identity` prints it."
        )
    try:
        raw = base64.urlsafe_b64decode(candidate + "=")
    except (binascii.Error, ValueError):
        raise AuthenticationError("The public key is not URL-safe base64.") from None
    if len(raw) != PUBLIC_KEY_BYTES or encode_public_key(raw) != candidate:
        raise AuthenticationError("The public key is not in its canonical spelling.")
    return raw


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class Identity:
    """An Ed25519 key pair. ``repr`` never shows the private key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.client_id: str = client_id_for(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh key pair from the operating system's CSPRNG."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Identity:
        """Load a 32-byte raw private key.

        Raises:
            AuthenticationError: if the bytes are not an Ed25519 private key.
        """
        try:
            return cls(Ed25519PrivateKey.from_private_bytes(raw))
        except ValueError:
            raise AuthenticationError("The bytes are not an Ed25519 private key.") from None

    @property
    def private_bytes(self) -> bytes:
        """The raw private key (for writing the 0600 key file only)."""
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @property
    def public_key_text(self) -> str:
        """The public key as listed in allow-lists and published in run descriptions."""
        return encode_public_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The Ed25519 signature of ``message``."""
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"Identity(client_id={self.client_id!r})"
