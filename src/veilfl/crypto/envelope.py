"""Shares on the wire: a compact binary share format, sealed with HPKE (RFC 9180).

Share format (little-endian)::

    magic b"VFS1" | index: u8 | length: u32 | values: length x u32

Each share is sealed to its aggregator's public key with HPKE base mode
(DHKEM(X25519, HKDF-SHA256), or the ML-KEM-768 + X25519 hybrid; HKDF-SHA256;
AES-128-GCM). The HPKE ``info`` is a canonical, length-prefixed encoding of
(run, round, client, aggregator) under a domain tag, so the envelope opens only for
that aggregator, in that round of that run, as that client's share: a replayed or
misrouted envelope fails authentication and is rejected.
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
from veilfl.crypto.shamir import Share
from veilfl.errors import DecryptionError, WireFormatError

__all__ = [
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
PublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
PrivateKey = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey

_DOMAIN = b"veilfl/share/v1"
_MAGIC = b"VFS1"
_HEADER = struct.Struct("<4sBI")


@dataclass(frozen=True)
class ShareContext:
    """What an envelope is bound to.

    Attributes:
        run_id: The run.
        round_id: The round (or asynchronous buffer).
        client_id: The client whose share it is.
        aggregator_index: The aggregator it is for (its share index).
    """

    run_id: str
    round_id: int
    client_id: str
    aggregator_index: int

    def info(self) -> bytes:
        """The HPKE ``info``: domain tag, then each field length-prefixed."""
        parts = [
            self.run_id.encode(),
            str(self.round_id).encode(),
            self.client_id.encode(),
            str(self.aggregator_index).encode(),
        ]
        return _DOMAIN + b"".join(struct.pack("<I", len(p)) + p for p in parts)


def suite_for(public_or_private_key: object) -> hpke.Suite:
    """The HPKE suite matching a key's KEM."""
    hybrid = isinstance(
        public_or_private_key, hpke.MLKEM768X25519PublicKey | hpke.MLKEM768X25519PrivateKey
    )
    kem = hpke.KEM.MLKEM768_X25519 if hybrid else hpke.KEM.X25519
    return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def seal(plaintext: bytes, public_key: PublicKey, *, context: ShareContext) -> bytes:
    """Encrypt ``plaintext`` to ``public_key``, bound to ``context``."""
    return suite_for(public_key).encrypt(plaintext, public_key, info=context.info())


def open_sealed(ciphertext: bytes, private_key: PrivateKey, *, context: ShareContext) -> bytes:
    """Decrypt an envelope made by :func:`seal` for exactly ``context``.

    Raises:
        DecryptionError: if the envelope is tampered with, truncated, meant for another
            context (round, client, aggregator, run) or another key.
    """
    try:
        return suite_for(private_key).decrypt(ciphertext, private_key, info=context.info())
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError(
            f"The share envelope from client {context.client_id!r} for round "
            f"{context.round_id} does not open for aggregator {context.aggregator_index}: it "
            "was tampered with, truncated, replayed from another round or sent to the wrong "
            "aggregator."
        ) from exc


def encode_share(share: Share) -> bytes:
    """The binary form of a share (values must be below 2**32)."""
    return (
        _HEADER.pack(_MAGIC, share.index, len(share.values)) + share.values.astype("<u4").tobytes()
    )


def decode_share(data: bytes, *, expected_length: int, field: PrimeField) -> Share:
    """Parse :func:`encode_share` output and check it.

    Raises:
        WireFormatError: naming what is malformed.
    """
    if len(data) < _HEADER.size:
        raise WireFormatError("The share is too short to hold its header.")
    magic, index, length = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise WireFormatError("The share does not start with the veilfl share tag.")
    if length != expected_length:
        raise WireFormatError(
            f"The share has {length} values, but this round's vectors have {expected_length}."
        )
    if len(data) != _HEADER.size + 4 * length:
        raise WireFormatError(
            f"The share's body is {len(data) - _HEADER.size} bytes; {4 * length} were expected."
        )
    if index < 1:
        raise WireFormatError("The share index must be at least 1.")
    values = np.frombuffer(data, dtype="<u4", offset=_HEADER.size).astype(np.uint64)
    if values.size and int(values.max()) >= field.modulus:
        raise WireFormatError("The share has values outside the field.")
    return Share(index=index, values=values)
