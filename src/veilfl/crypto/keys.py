"""Aggregator key pairs: generation, raw (de)serialisation and fingerprints. No file I/O.

Keys are plain bytes here; :mod:`veilfl.keyfiles` writes them to files (the private
one with mode 0600, refusing to read one that others can read).

Raw formats (``cryptography`` has no PEM/PKCS#8 form for the hybrid key, so both KEMs
use raw bytes):

* ``x25519``: the 32-byte raw private key (RFC 7748); the public key is 32 bytes.
* ``mlkem768-x25519``: the 64-byte ML-KEM-768 seed (FIPS 203 ``d || z``) followed by
  the 32-byte X25519 private key; the public key is the ML-KEM-768 encapsulation key
  (1,184 bytes) followed by the X25519 public key (32 bytes).

A fingerprint is the first 32 hex digits (128 bits) of SHA-256 over the KEM name, a
zero byte and the public key bytes: short enough to compare by eye or paste into a
configuration, long enough (a second-preimage search costs about 2**128 hashes) that
no one can make another key with the same fingerprint. Binding the KEM name means the
same bytes read as the other KEM get a different fingerprint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from veilfl.crypto.envelope import KemChoice, PrivateKey, PublicKey
from veilfl.errors import ConfigurationError

__all__ = [
    "FINGERPRINT_HEX_DIGITS",
    "AggregatorKeyPair",
    "fingerprint",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "public_key_bytes",
]

FINGERPRINT_HEX_DIGITS = 32
"""Hex digits in a fingerprint: 128 bits of SHA-256."""

_X25519_LENGTH = 32
_MLKEM_SEED_LENGTH = 64
_MLKEM_PUBLIC_LENGTH = 1184


@dataclass(frozen=True)
class AggregatorKeyPair:
    """An aggregator's HPKE key pair.

    Build one with :func:`generate_keypair` or :func:`load_private_key`. Its ``repr``
    shows the fingerprint, never the private key.

    Attributes:
        kem: The KEM the key is for.
        private_key: The private key object, for :func:`~veilfl.crypto.envelope.open_sealed`.
        private_bytes: The raw private key (see the module docstring); keep it secret.
    """

    kem: KemChoice
    private_key: PrivateKey
    private_bytes: bytes

    def __repr__(self) -> str:  # never print key material
        return f"AggregatorKeyPair(kem={self.kem!r}, fingerprint={self.fingerprint!r})"

    @property
    def public_key(self) -> PublicKey:
        """The public key, for :func:`~veilfl.crypto.envelope.seal`."""
        return self.private_key.public_key()

    @property
    def public_bytes(self) -> bytes:
        """The raw public key."""
        return public_key_bytes(self.kem, self.private_bytes)

    @property
    def fingerprint(self) -> str:
        """The public key's fingerprint."""
        return fingerprint(self.kem, self.public_bytes)


def _check_kem(kem: str) -> KemChoice:
    if kem == "x25519":
        return "x25519"
    if kem == "mlkem768-x25519":
        return "mlkem768-x25519"
    raise ConfigurationError(f"Unknown KEM {kem!r}; use 'x25519' or 'mlkem768-x25519'.")


def generate_keypair(kem: KemChoice = "x25519") -> AggregatorKeyPair:
    """A fresh key pair, from the OS CSPRNG (through OpenSSL).

    Raises:
        ConfigurationError: for an unknown KEM.
    """
    kem = _check_kem(kem)
    raw_x = x25519.X25519PrivateKey.generate().private_bytes_raw()
    if kem == "x25519":
        return load_private_key(kem, raw_x)
    seed = mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
    return load_private_key(kem, seed + raw_x)


def load_private_key(kem: KemChoice, data: bytes) -> AggregatorKeyPair:
    """Rebuild a key pair from its raw private bytes.

    Raises:
        ConfigurationError: if the bytes do not form a key of that KEM (the message
            never contains them).
    """
    kem = _check_kem(kem)
    invalid = ConfigurationError(
        f"The private key is not a valid {kem} key; regenerate it with `veilfl keys`."
    )
    try:
        if kem == "x25519":
            if len(data) != _X25519_LENGTH:
                raise invalid
            key: PrivateKey = x25519.X25519PrivateKey.from_private_bytes(data)
        else:
            if len(data) != _MLKEM_SEED_LENGTH + _X25519_LENGTH:
                raise invalid
            key = hpke.MLKEM768X25519PrivateKey(
                mlkem.MLKEM768PrivateKey.from_seed_bytes(data[:_MLKEM_SEED_LENGTH]),
                x25519.X25519PrivateKey.from_private_bytes(data[_MLKEM_SEED_LENGTH:]),
            )
    except (ValueError, TypeError):
        raise invalid from None
    return AggregatorKeyPair(kem=kem, private_key=key, private_bytes=bytes(data))


def public_key_bytes(kem: KemChoice, private_bytes: bytes) -> bytes:
    """The raw public key that belongs to the raw private key ``private_bytes``.

    Raises:
        ConfigurationError: if the private bytes are not a key of that KEM.
    """
    kem = _check_kem(kem)
    private_key = load_private_key(kem, private_bytes).private_key
    if isinstance(private_key, x25519.X25519PrivateKey):
        return private_key.public_key().public_bytes_raw()
    # The hybrid key object has no serialisation: rebuild the parts from the raw bytes.
    seed, raw_x = private_bytes[:_MLKEM_SEED_LENGTH], private_bytes[_MLKEM_SEED_LENGTH:]
    ml_public = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
    x_public = x25519.X25519PrivateKey.from_private_bytes(raw_x).public_key().public_bytes_raw()
    return ml_public + x_public


def load_public_key(kem: KemChoice, data: bytes) -> PublicKey:
    """A public key from its raw bytes.

    Raises:
        ConfigurationError: if the bytes are not a public key of that KEM.
    """
    kem = _check_kem(kem)
    expected = _X25519_LENGTH if kem == "x25519" else _MLKEM_PUBLIC_LENGTH + _X25519_LENGTH
    invalid = ConfigurationError(
        f"The public key is not a valid {kem} key ({expected} bytes expected, got "
        f"{len(data)}); check the aggregator's public key file."
    )
    if len(data) != expected:
        raise invalid
    try:
        if kem == "x25519":
            return x25519.X25519PublicKey.from_public_bytes(data)
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(data[:_MLKEM_PUBLIC_LENGTH]),
            x25519.X25519PublicKey.from_public_bytes(data[_MLKEM_PUBLIC_LENGTH:]),
        )
    except (ValueError, TypeError):
        raise invalid from None


def fingerprint(kem: KemChoice, public_bytes: bytes) -> str:
    """The first 32 hex digits of SHA-256(kem name || 0x00 || public key bytes).

    Raises:
        ConfigurationError: for an unknown KEM.
    """
    kem = _check_kem(kem)
    digest = hashlib.sha256(kem.encode("ascii") + b"\x00" + bytes(public_bytes)).hexdigest()
    return digest[:FINGERPRINT_HEX_DIGITS]
