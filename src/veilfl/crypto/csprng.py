"""A cryptographically secure random stream: AES-256 in counter mode.

Keyed from ``os.urandom(32)`` (or, for tests only, an explicit key), the stream is
the AES-CTR keystream, which is indistinguishable from uniform bytes to anyone
without the key. It is fast enough to draw the millions of field elements that
Shamir-sharing a large model needs. The key never leaves the object.
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from veilfl.crypto.field import FieldArray, PrimeField
from veilfl.errors import ConfigurationError

__all__ = ["CsprngStream"]


class CsprngStream:
    """Uniform random bytes, integers and field elements from AES-256-CTR.

    Args:
        key: 32 bytes; default ``os.urandom(32)``. Pass a key only in tests.
    """

    def __init__(self, key: bytes | None = None) -> None:
        key = os.urandom(32) if key is None else key
        if len(key) != 32:
            raise ConfigurationError("A CSPRNG key must be exactly 32 bytes.")
        self._encryptor = Cipher(algorithms.AES256(key), modes.CTR(bytes(16))).encryptor()

    def __repr__(self) -> str:
        return "CsprngStream(<key hidden>)"

    def random_bytes(self, count: int) -> bytes:
        """The next ``count`` bytes of the stream."""
        return self._encryptor.update(bytes(count))

    def random_uint32(self, count: int) -> npt.NDArray[np.uint32]:
        """``count`` uniform 32-bit integers."""
        size = 4 * count
        buffer = bytearray(size + 15)  # update_into wants room for one extra block
        written = self._encryptor.update_into(bytes(size), buffer)
        assert written == size
        return np.frombuffer(buffer, dtype="<u4", count=count)

    def random_uint64(self, count: int) -> npt.NDArray[np.uint64]:
        """``count`` uniform 64-bit integers."""
        return np.frombuffer(self.random_bytes(8 * count), dtype="<u8").astype(np.uint64)

    def uniform_field(self, field: PrimeField, count: int) -> FieldArray:
        """``count`` elements uniform in [0, p), by rejection sampling.

        Draws ``bit_length(p)``-bit values and rejects those >= p, so every element is
        exactly uniform (no modulo bias).
        """
        bits = field.modulus.bit_length()
        mask = np.uint32((1 << bits) - 1)
        draw = self.random_uint32(count)
        draw &= mask
        if not (draw >= np.uint32(field.modulus)).any():  # the common case for 2**31 - 1
            return draw.astype(np.uint64)
        out = np.empty(count, dtype=np.uint64)
        filled = 0
        while filled < count:
            wanted = count - filled
            draw = self.random_uint32(wanted + wanted // 8 + 16) & mask
            good = draw[draw < np.uint32(field.modulus)][:wanted]
            out[filled : filled + len(good)] = good
            filled += len(good)
        return out
