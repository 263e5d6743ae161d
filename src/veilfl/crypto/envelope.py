"""Shares on the wire: a compact binary share format, sealed with HPKE (RFC 9180).

Share format, little-endian (:func:`encode_share`, :func:`decode_share`)::

    magic b"VFS" | version b"1" | index: u8 | length: u32 | values: length x u32

Values are field elements, below p < 2**31, so four bytes each suffice.

Each encoded share is sealed to its aggregator's public key with HPKE in base mode
(RFC 9180 §5.1.1): DHKEM(X25519, HKDF-SHA256), or the ML-KEM-768 + X25519 hybrid KEM
(X-Wing style, as ``cryptography`` exposes it), with HKDF-SHA256 and AES-128-GCM. The
HPKE ``info`` is :meth:`ShareContext.info`, a canonical, length-prefixed encoding of
(run, round, client, aggregator) under the domain tag ``veilfl/share/v1``; it enters
the HPKE key schedule, so an envelope opens only in exactly the context it was sealed
for. Replayed into another run or round, claimed by another client, or delivered to
another aggregator (wrong key or wrong index), it fails authentication.

Threat model: the network and the coordinator that relays envelopes are untrusted for
confidentiality and integrity; the aggregators' public keys are authentic (checked by
fingerprint). HPKE base mode does not authenticate the sender: the coordinator's
client authentication does that. Replay within the same context is not detected here;
an aggregator accepts one share per client per round.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519

from veilfl.crypto.field import PrimeField
from veilfl.crypto.shamir import MAX_SHARES, Share
from veilfl.errors import ConfigurationError, CryptoError, DecryptionError, WireFormatError

__all__ = [
    "CONTEXT_DOMAIN",
    "SHARE_FORMAT_VERSION",
    "KemChoice",
    "PrivateKey",
    "PublicKey",
    "ShareContext",
    "decode_share",
    "encode_share",
    "open_sealed",
    "seal",
    "suite_for",
]

KemChoice = Literal["x25519", "mlkem768-x25519"]
"""The HPKE KEMs veilfl supports: classical X25519, or post-quantum hybrid ML-KEM-768 + X25519."""

PublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
PrivateKey = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey

CONTEXT_DOMAIN = b"veilfl/share/v1"
"""The domain tag that starts every HPKE ``info`` veilfl uses for shares."""

SHARE_FORMAT_VERSION = 1
"""The version of the binary share format that :func:`encode_share` writes."""

_MAGIC = b"VFS"
_HEADER = struct.Struct("<3scBI")  # magic, version (one ASCII digit), index, length
_VERSION = str(SHARE_FORMAT_VERSION).encode()
_LENGTH_PREFIX = struct.Struct("<I")
_MAX_UINT32 = 2**32 - 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ShareContext:
    """What an envelope is bound to.

    Attributes:
        run_id: The run.
        round_id: The round (or asynchronous buffer), >= 0.
        client_id: The client whose share it is.
        aggregator_index: The aggregator it is for: its share index, 1..16.

    Raises:
        ConfigurationError: if a field has the wrong type or is out of range.
    """

    run_id: str
    round_id: int
    client_id: str
    aggregator_index: int

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not isinstance(self.client_id, str):
            raise ConfigurationError("A share context's run and client ids must be strings.")
        if not _is_int(self.round_id) or self.round_id < 0:
            raise ConfigurationError(
                f"A share context's round must be a non-negative integer; got {self.round_id!r}."
            )
        if not _is_int(self.aggregator_index) or not 1 <= self.aggregator_index <= MAX_SHARES:
            raise ConfigurationError(
                f"A share context's aggregator index must be in 1..{MAX_SHARES}; got "
                f"{self.aggregator_index!r}."
            )

    def info(self) -> bytes:
        """The HPKE ``info``: the domain tag, then each field as a u32 length and its bytes.

        Strings are UTF-8 (lone surrogates kept with ``surrogatepass``, so every ``str``
        encodes and distinct strings give distinct bytes); integers are their decimal
        ASCII digits. Length prefixes make the encoding injective: no two contexts
        share an ``info``.
        """
        parts = (
            self.run_id.encode("utf-8", "surrogatepass"),
            str(self.round_id).encode("ascii"),
            self.client_id.encode("utf-8", "surrogatepass"),
            str(self.aggregator_index).encode("ascii"),
        )
        return CONTEXT_DOMAIN + b"".join(_LENGTH_PREFIX.pack(len(p)) + p for p in parts)


def suite_for(public_or_private_key: PublicKey | PrivateKey) -> hpke.Suite:
    """The HPKE suite for a key's KEM, with HKDF-SHA256 and AES-128-GCM."""
    hybrid = isinstance(
        public_or_private_key, hpke.MLKEM768X25519PublicKey | hpke.MLKEM768X25519PrivateKey
    )
    kem = hpke.KEM.MLKEM768_X25519 if hybrid else hpke.KEM.X25519
    return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def seal(plaintext: bytes, public_key: PublicKey, *, context: ShareContext) -> bytes:
    """Encrypt ``plaintext`` to ``public_key`` with HPKE, bound to ``context``.

    Args:
        plaintext: The bytes to seal (an :func:`encode_share` output).
        public_key: The receiving aggregator's public key.
        context: What the envelope is for; :func:`open_sealed` must name the same.

    Returns:
        The HPKE encapsulated key followed by the AEAD ciphertext.

    Raises:
        CryptoError: if the public key is unusable (for example a low-order X25519 point).
    """
    try:
        return suite_for(public_key).encrypt(plaintext, public_key, info=context.info())
    except ValueError:
        raise CryptoError(
            f"Cannot seal a share to aggregator {context.aggregator_index}: its public key "
            "is invalid. Check the key file and its fingerprint."
        ) from None


def open_sealed(ciphertext: bytes, private_key: PrivateKey, *, context: ShareContext) -> bytes:
    """Decrypt an envelope made by :func:`seal` for exactly ``context``.

    Raises:
        DecryptionError: if the envelope was tampered with or truncated, or was sealed
            for another context (run, round, client, aggregator) or another key.
    """
    try:
        return suite_for(private_key).decrypt(ciphertext, private_key, info=context.info())
    except (InvalidTag, ValueError):
        raise DecryptionError(
            f"The share envelope from client {context.client_id!r} for round "
            f"{context.round_id} does not open for aggregator {context.aggregator_index}: it "
            "was tampered with, truncated, replayed from another round or run, or sent to "
            "the wrong aggregator. Ask the client to upload it again."
        ) from None


def encode_share(share: Share) -> bytes:
    """The binary form of a share (see the module docstring).

    Raises:
        CryptoError: if a value does not fit in 32 bits (the share is not reduced).
    """
    values = np.asarray(share.values)
    if values.size and (int(values.max()) > _MAX_UINT32 or int(values.min()) < 0):
        raise CryptoError("A share's values must be reduced field elements before encoding.")
    header = _HEADER.pack(_MAGIC, _VERSION, share.index, values.size)
    return header + values.astype("<u4").tobytes()


def decode_share(data: bytes, *, expected_length: int, field: PrimeField) -> Share:
    """Parse and check :func:`encode_share` output.

    Args:
        data: The bytes (after :func:`open_sealed`, or read back from a spool).
        expected_length: The number of values this round's vectors have.
        field: The field whose elements the values must be.

    Raises:
        WireFormatError: naming what is malformed: header, version, index, length, or
            a value outside the field. Nothing else is raised for any input bytes.
    """
    if len(data) < _HEADER.size:
        raise WireFormatError("The share is too short to hold its header.")
    magic, version, index, length = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise WireFormatError("The data does not start with the veilfl share tag.")
    if version != _VERSION:
        raise WireFormatError(
            f"The share uses format version {version!r}; this veilfl reads version "
            f"{SHARE_FORMAT_VERSION}. Use the same veilfl version on every node."
        )
    if not 1 <= index <= MAX_SHARES:
        raise WireFormatError(f"The share index must be in 1..{MAX_SHARES}; got {index}.")
    if length != expected_length:
        raise WireFormatError(
            f"The share has {length} values, but this round's vectors have {expected_length}."
        )
    if len(data) != _HEADER.size + 4 * length:
        raise WireFormatError(
            f"The share's body is {len(data) - _HEADER.size} bytes; {4 * length} were expected."
        )
    values = np.frombuffer(data, dtype="<u4", count=length, offset=_HEADER.size)
    if length and int(values.max()) >= field.modulus:
        raise WireFormatError("The share has values outside the field.")
    return Share(index=index, values=values.astype(np.uint64))
