"""Aggregator key pairs: generation, raw (de)serialisation and fingerprints. No file I/O.

Keys are plain bytes here; :mod:`veilfl.keyfiles` writes them to files (the private
one with mode 0600, refusing to read one that others can read).

Raw formats (``cryptography`` has no PEM/PKCS#8 form for the hybrid key, so both KEMs
use raw bytes):

* ``x25519``: the 32-byte raw private key (RFC 7748); the public key is 32 bytes.
* ``mlkem768-x25519``: the 64-byte ML-KEM-768 seed (FIPS 203 ``d || z``) followed by
  the 32-byte X25519 private key; the public key is the ML-KEM-768 encapsulation key
  (1,184 bytes) followed by the X25519 public key (32 bytes).

An aggregator also holds an Ed25519 **signing key**, with which it signs its
commitment to a round's participant list and its policy (the fewest and most clients it
sums over); other aggregators and clients check those signatures.

A fingerprint is the first 32 hex digits (128 bits) of SHA-256 over the KEM name, a
zero byte, the HPKE public key, a zero byte and the Ed25519 public key: short enough to
compare by eye or paste into a configuration, long enough (a second-preimage search
costs about 2**128 hashes) that no one can make another key with the same fingerprint.
Pinning a fingerprint pins both keys. Binding the KEM name means the same bytes read as
the other KEM get a different fingerprint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from veilfl.crypto.envelope import KemChoice, PrivateKey, PublicKey
from veilfl.errors import ConfigurationError

__all__ = [
    "FINGERPRINT_HEX_DIGITS",
    "SIGNING_KEY_BYTES",
    "AggregatorKeyPair",
    "fingerprint",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "load_signing_key",
    "public_key_bytes",
    "verify_aggregator_signature",
]

FINGERPRINT_HEX_DIGITS = 32
"""Hex digits in a fingerprint: 128 bits of SHA-256."""

SIGNING_KEY_BYTES = 32
"""Bytes in an aggregator's raw Ed25519 key (private seed or public key)."""

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
        signing_key: The aggregator's Ed25519 signing key; keep it secret.
    """

    kem: KemChoice
    private_key: PrivateKey
    private_bytes: bytes
    signing_key: ed25519.Ed25519PrivateKey

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
    def signing_private_bytes(self) -> bytes:
        """The raw Ed25519 private key (32 bytes); keep it secret."""
        return self.signing_key.private_bytes_raw()

    @property
    def signing_public_bytes(self) -> bytes:
        """The raw Ed25519 public key (32 bytes)."""
        return self.signing_key.public_key().public_bytes_raw()

    @property
    def fingerprint(self) -> str:
        """The fingerprint of both public keys."""
        return fingerprint(self.kem, self.public_bytes, self.signing_public_bytes)

    def sign(self, message: bytes) -> bytes:
        """This aggregator's Ed25519 signature of ``message``."""
        return self.signing_key.sign(message)


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
    signing = ed25519.Ed25519PrivateKey.generate().private_bytes_raw()
    if kem == "x25519":
        return load_private_key(kem, raw_x, signing=signing)
    seed = mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
    return load_private_key(kem, seed + raw_x, signing=signing)


def _hpke_private_key(kem: KemChoice, data: bytes) -> PrivateKey:
    """The HPKE private key object of raw private bytes.

    Raises:
        ConfigurationError: if the bytes do not form a key of that KEM (the message
            never contains them).
    """
    invalid = ConfigurationError(
        f"The private key is not a valid {kem} key; regenerate it with `veilfl keys`."
    )
    try:
        if kem == "x25519":
            if len(data) != _X25519_LENGTH:
                raise invalid
            return x25519.X25519PrivateKey.from_private_bytes(data)
        if len(data) != _MLKEM_SEED_LENGTH + _X25519_LENGTH:
            raise invalid
        return hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(data[:_MLKEM_SEED_LENGTH]),
            x25519.X25519PrivateKey.from_private_bytes(data[_MLKEM_SEED_LENGTH:]),
        )
    except (ValueError, TypeError):
        raise invalid from None


def load_private_key(kem: KemChoice, data: bytes, *, signing: bytes) -> AggregatorKeyPair:
    """Rebuild a key pair from its raw private bytes and its raw Ed25519 signing key.

    Raises:
        ConfigurationError: if the bytes do not form a key of that KEM, or the signing
            key is not 32 bytes (the message never contains them).
    """
    kem = _check_kem(kem)
    key = _hpke_private_key(kem, data)
    if len(signing) != SIGNING_KEY_BYTES:
        raise ConfigurationError(
            "The aggregator's signing key is not a 32-byte Ed25519 key; regenerate the key "
            "with `veilfl keys`."
        )
    return AggregatorKeyPair(
        kem=kem,
        private_key=key,
        private_bytes=bytes(data),
        signing_key=ed25519.Ed25519PrivateKey.from_private_bytes(signing),
    )


def public_key_bytes(kem: KemChoice, private_bytes: bytes) -> bytes:
    """The raw public key that belongs to the raw private key ``private_bytes``.

    Raises:
        ConfigurationError: if the private bytes are not a key of that KEM.
    """
    kem = _check_kem(kem)
    private_key = _hpke_private_key(kem, private_bytes)
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


def load_signing_key(data: bytes) -> ed25519.Ed25519PublicKey:
    """An aggregator's Ed25519 public key from its raw 32 bytes.

    Raises:
        ConfigurationError: if the bytes are not such a key.
    """
    if len(data) != SIGNING_KEY_BYTES:
        raise ConfigurationError(
            f"An aggregator's signing key is {SIGNING_KEY_BYTES} bytes; got {len(data)}."
        )
    return ed25519.Ed25519PublicKey.from_public_bytes(bytes(data))


def verify_aggregator_signature(signing_public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the aggregator's Ed25519 signature of ``message``."""
    try:
        load_signing_key(signing_public).verify(signature, message)
    except (InvalidSignature, ConfigurationError, ValueError):
        return False
    return True


def fingerprint(kem: KemChoice, public_bytes: bytes, signing_public: bytes) -> str:
    """The first 32 hex digits of SHA-256(kem || 0x00 || HPKE public key || 0x00 ||
    Ed25519 public key).

    Raises:
        ConfigurationError: for an unknown KEM.
    """
    kem = _check_kem(kem)
    digest = hashlib.sha256(
        kem.encode("ascii") + b"\x00" + bytes(public_bytes) + b"\x00" + bytes(signing_public)
    ).hexdigest()
    return digest[:FINGERPRINT_HEX_DIGITS]
