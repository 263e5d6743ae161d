"""A cryptographically secure random stream: the AES-256-CTR keystream.

The stream is keyed from ``os.urandom(32)`` (or, in tests only, an explicit key) and
is the AES-256 keystream in counter mode: E_k(0), E_k(1), ... With a uniformly random
key it is indistinguishable from uniform bytes to anyone without the key, as long as
AES is a pseudorandom permutation and fewer than about 2**64 blocks are drawn (NIST SP
800-90A, CTR_DRBG, rests on the same argument). It draws the millions of field
elements that Shamir-sharing a large model needs at several GB/s, where calling
``os.urandom`` for each would be far slower.

Threat model: the key is generated inside the object, never stored in an attribute,
never returned and never printed (``repr`` hides it); only the cipher context holds
it. A stream must not be shared across ``fork()``: parent and child would draw the
same bytes, and two Shamir sharings with the same coefficients leak their secrets'
difference. A stream used in a process other than the one that made it refuses.
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from veilfl.crypto.field import FieldArray, PrimeField
from veilfl.crypto.kernels import uniform_below
from veilfl.errors import ConfigurationError, CryptoError

__all__ = ["KEY_LENGTH", "CsprngStream"]

KEY_LENGTH = 32
"""Bytes in a stream key (AES-256)."""

_BLOCK = 16
_DOUBLE_UNIT = 2.0**-53


class CsprngStream:
    """Uniform random bytes, integers, floats and field elements from AES-256-CTR.

    Args:
        key: 32 bytes; by default ``os.urandom(32)``. Pass a key only in tests, to make
            a statistical test deterministic: anyone who knows the key knows the stream.

    Raises:
        ConfigurationError: if ``key`` is not 32 bytes.
    """

    def __init__(self, *, key: bytes | None = None) -> None:
        if key is None:
            key = os.urandom(KEY_LENGTH)
        if len(key) != KEY_LENGTH:
            raise ConfigurationError(
                f"A CSPRNG key must be exactly {KEY_LENGTH} bytes; leave it out to use a "
                "fresh key from the operating system."
            )
        self._encryptor = Cipher(algorithms.AES256(key), modes.CTR(bytes(_BLOCK))).encryptor()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return "CsprngStream(<key hidden>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("A CsprngStream cannot be pickled or copied: its key never leaves it.")

    def _keystream(self, size: int) -> bytearray:
        """The next ``size`` bytes of keystream, in a writable buffer."""
        if size < 0:
            raise ConfigurationError(f"Cannot draw a negative number of random bytes ({size}).")
        if os.getpid() != self._pid:
            raise CryptoError(
                "This CSPRNG stream was created in another process (before a fork); create a "
                "new CsprngStream in each process so that no two draw the same bytes."
            )
        buffer = bytearray(size + _BLOCK - 1)  # update_into wants room for one more block
        written = self._encryptor.update_into(bytes(size), buffer)
        if written != size:  # CTR is a stream mode: this never happens
            raise CryptoError("The AES-CTR keystream returned fewer bytes than asked for.")
        del buffer[size:]
        return buffer

    def random_bytes(self, count: int) -> bytes:
        """The next ``count`` bytes of the stream."""
        return bytes(self._keystream(count))

    def random_uint32(self, count: int) -> npt.NDArray[np.uint32]:
        """``count`` independent uniform 32-bit integers."""
        return np.frombuffer(self._keystream(4 * count), dtype="<u4").astype(np.uint32, copy=False)

    def random_uint64(self, count: int) -> npt.NDArray[np.uint64]:
        """``count`` independent uniform 64-bit integers."""
        return np.frombuffer(self._keystream(8 * count), dtype="<u8").astype(np.uint64, copy=False)

    def uniform_unit(self, count: int) -> npt.NDArray[np.float64]:
        """``count`` independent floats uniform on the 2**53 multiples of 2**-53 in [0, 1)."""
        return (self.random_uint64(count) >> np.uint64(11)).astype(np.float64) * _DOUBLE_UNIT

    def uniform_field(self, field: PrimeField, count: int) -> FieldArray:
        """``count`` independent elements uniform in [0, p), by rejection sampling.

        Draws ``bit_length(p)``-bit integers (31 bits for 2**31 - 1) and keeps those
        below p, so every element is exactly uniform: there is no modulo bias. Only
        the refills of rejected positions loop; for 2**31 - 1 a draw is rejected with
        probability 2**-31, so a refill is rare.
        """
        modulus = field.modulus
        mask = (1 << modulus.bit_length()) - 1
        values, rejected = uniform_below(self.random_uint32(count), mask=mask, modulus=modulus)
        if not rejected:  # the common case for 2**31 - 1
            return values
        accepted = values[values < np.uint64(modulus)]
        while accepted.size < count:
            # Each draw is accepted with probability p / 2**bits > 1/2: ask for a little
            # more than the expected need so that one refill almost always suffices.
            missing = count - accepted.size
            refill, _ = uniform_below(
                self.random_uint32(2 * missing + 16), mask=mask, modulus=modulus
            )
            accepted = np.concatenate([accepted, refill[refill < np.uint64(modulus)][:missing]])
        return accepted
