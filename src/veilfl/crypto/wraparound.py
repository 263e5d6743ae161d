"""PINE's wraparound checks: random {-1, 0, 1} projections that catch a wrapped norm.

A squared norm computed in GF(q) is only the integer norm modulo q: a vector whose
integer norm N = Σ x_i^2 (centred representatives) is huge can have N mod q in range.
PINE (Rothblum, Omri, Chen, Talwar 2023, "PINE: Efficient Norm-Bound Verification for
Secret-Shared Vectors", arXiv 2311.10237; draft-chen-cfrg-vdaf-pine) adds checks: for
random z with independent entries -1, 0, +1 (probabilities 1/4, 1/2, 1/4), the client
proves that <z, x> mod q lies in [-b, b]. An honest x (N <= B^2) passes every check
unless <z, x> exceeds b, which happens with probability at most 2 exp(-(b+1)^2 / B^2):
each z_i x_i is symmetric and sub-Gaussian with variance proxy x_i^2 / 2 (its moment
generating function is cosh^2(λ x_i / 2) <= exp(λ^2 x_i^2 / 4)), so Hoeffding's bound
applies.

Soundness (our Lemma W; the constants differ from PINE's, see below). Let q be an odd
prime, 1 <= b with 4b <= q, and x in Z_q^d with integer norm N >= q. Then one check
passes with probability at most ``max(1/2, E(q, b))``, where, with T = floor(q / 4b)
and K_T(y) = sin^2(π T y / q) / sin^2(π y / q) the Fejér kernel,

    E(q, b) = [T + 2 Σ_{t=1}^{T-1} (T - t) exp(-π^2 t^2 / q)] / K_T(b).

Proof. (A) If some centred |x_j| > 2b, fix every other z_i; the three candidates s,
s + x_j, s - x_j differ pairwise by ±x_j, which is outside [-2b, 2b] modulo q, so s and
s ± x_j are never in [-b, b] together: the check passes with probability at most
max(P(z_j = 0), P(z_j != 0)) = 1/2. (B) Otherwise every |x_j| <= 2b. K_T is
non-negative, its Fourier coefficients are T - |t| for |t| < T, and it decreases on
[0, q / 2T] (tan(Tu) >= T tan(u) there), so 1[|y| <= b] <= K_T(y) / K_T(b) and

    P(pass) <= E[K_T(<z, x>)] / K_T(b) = Σ_{|t|<T} (T - |t|) φ(t) / K_T(b),

where φ(t) = E[exp(2πi t <z, x> / q)] = Π_j cos^2(π t x_j / q) >= 0. For |t| < T,
|t x_j / q| < 1/2, and cos(u) <= exp(-u^2 / 2) on |u| <= π/2, so
φ(t) <= exp(-π^2 t^2 N / q^2) <= exp(-π^2 t^2 / q). ∎

The 1/2 is tight: x = ((q+1)/2) (1, 1, 1, 1) has field norm 1 and passes exactly when
z_1 + ... + z_4 is even. E grows like 2.8 b / sqrt(q): at q = 2**31 - 1, E(q, b) <= 1/2
for b up to about 9,800, so with α ~ 7 (honest failure below 2**-64) the norm bound B
is about 1,390. PINE's reference code accepts q >= max(b^2 / 4000, 2600 b, 2 r) (its
Lemma 3.3) together with q > 3 B^2 + 2, which at q = 2**31 - 1 would allow B = 26,754
and b = 2**18; there a vector of 2,148 coordinates equal to 1,000 (N = q + 516,353,
field norm in range, integer norm 1.73 B) passes each check with probability
1 - 10**-15: b must stay well below sqrt(q), which those conditions do not enforce.

Projections are computed without a loop over checks: one uniform 16-bit word per
coordinate and pass carries (a, b) bit pairs for eight checks (z = a - b). The values
are summed into bins by each byte of the word (each byte holds four checks; 256 bins
stay in the L1 cache), and the projections are dot products of the bins with fixed
{-1, 0, 1} rows (:func:`veilfl.crypto.kernels.project_words`, compiled, one pass over
d for several passes of words; its numpy twin uses ``np.bincount``). Every partial sum
is an integer below Σ|x_i| < 2**53, so the arithmetic is exact in int64 and float64.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from veilfl.crypto.kernels import project_words
from veilfl.errors import ConfigurationError

__all__ = [
    "EXACT_SUM_LIMIT",
    "WraparoundChecks",
    "check_pass_bound",
    "honest_failure_bound",
    "smallest_honest_bound",
]

EXACT_SUM_LIMIT = 2**53
"""Σ|values| must stay below this for projections to be exact in float64."""

_DOMAIN = b"veilfl/wraparound/v1"
_EXPLICIT_BELOW = 1 << 10  # shorter vectors: build z explicitly
_CHECKS_PER_PASS = 8  # a 16-bit word holds 8 (a, b) bit pairs
_KEYSTREAM_BYTES = 1 << 24  # draw at most this much keystream at once (several passes)
_SAFETY = 1 + 1e-9  # covers float rounding in check_pass_bound's sums (each term > 0)


def check_pass_bound(*, modulus: int, bound: int) -> float:
    """An upper bound on P(one check passes) for x with integer norm N >= modulus.

    This is ``max(1/2, E(q, b))`` of Lemma W (module docstring), rounded up.

    Args:
        modulus: The prime q.
        bound: b, the check accepts <z, x> mod q in [-b, b].

    Raises:
        ConfigurationError: unless 1 <= b and 4b <= q.
    """
    q, b = modulus, bound
    if not 1 <= b <= q // 4:
        raise ConfigurationError(f"Lemma W needs 1 <= b <= q / 4; got b = {b}, q = {q}.")
    T = q // (4 * b)
    # Σ_{t=1}^{T-1} (T - t) exp(-π² t² / q), summed to where the terms vanish, plus a
    # geometric bound on the rest: for t >= t0, t² >= t·t0.
    t0 = min(T, 1 + math.ceil(12 * math.sqrt(q)))
    t = np.arange(1, t0, dtype=np.float64)
    head = float(np.sum((T - t) * np.exp(-(math.pi**2) * t * t / q)))
    ratio = math.exp(-(math.pi**2) * t0 / q)
    tail = 0.0 if t0 >= T else T * math.exp(-(math.pi**2) * t0 * t0 / q) / (1 - ratio)
    kernel_at_b = (math.sin(math.pi * T * b / q) / math.sin(math.pi * b / q)) ** 2
    return max(0.5, (T + 2 * (head + tail)) / kernel_at_b * _SAFETY)


def honest_failure_bound(*, norm_bound: int, bound: int) -> float:
    """P(|<z, x>| > b) <= 2 exp(-(b + 1)^2 / B^2) for every integer x with ||x|| <= B."""
    return min(1.0, 2 * math.exp(-((bound + 1) ** 2) / norm_bound**2))


def smallest_honest_bound(*, norm_bound: int, checks: int, failure: float) -> int:
    """The smallest b with ``checks · honest_failure_bound(B, b) <= failure``."""
    if norm_bound < 1 or checks < 1 or not 0 < failure < 1:
        raise ConfigurationError("Need B >= 1, at least one check and 0 < failure < 1.")
    bound = math.ceil(norm_bound * math.sqrt(math.log(2 * checks / failure))) - 1
    while checks * honest_failure_bound(norm_bound=norm_bound, bound=bound) > failure:
        bound += 1
    while bound > 0 and checks * honest_failure_bound(norm_bound=norm_bound, bound=bound - 1) <= (
        failure
    ):
        bound -= 1
    return bound


@functools.lru_cache(maxsize=4)
def _zeros(size: int) -> bytes:
    """``size`` zero bytes, the plaintext of the keystream (immutable, so shared)."""
    return bytes(size)


_scratch = threading.local()


def _keystream_buffer(size: int) -> npt.NDArray[np.uint8]:
    """This thread's keystream buffer of at least ``size`` bytes, reused from call to call
    (a fresh 16 MB array costs thousands of page faults each time). Valid until the
    thread's next :class:`_Words` that asks for one."""
    buffer: npt.NDArray[np.uint8] | None = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = np.empty(size, dtype=np.uint8)
        _scratch.buffer = buffer
    return buffer


class _Words:
    """The public coins of one seed: AES-256-CTR keystream, one 16-bit word per coordinate
    and pass, pass after pass. The seed is public (a Fiat-Shamir output), so this is an
    extendable-output function, not a secret stream."""

    def __init__(
        self, seed: bytes, dimension: int, passes_per_draw: int = 1, *, reuse: bool = False
    ) -> None:
        key = hashlib.sha256(_DOMAIN + seed).digest()
        self._encryptor = Cipher(algorithms.AES256(key), modes.CTR(bytes(16))).encryptor()
        size = 2 * dimension * passes_per_draw
        self._zeros = _zeros(size)
        # Every byte is written before it is read; ``reuse`` takes the thread's buffer.
        self._buffer = (
            _keystream_buffer(size + 16) if reuse else np.empty(size + 16, dtype=np.uint8)
        )
        self._dimension = dimension
        self._passes_per_draw = passes_per_draw

    def next_pass(self) -> npt.NDArray[np.uint16]:
        """The next pass's words (valid until the next call)."""
        words: npt.NDArray[np.uint16] = self.next_passes(1)[0]
        return words

    def next_passes(self, count: int) -> npt.NDArray[np.uint16]:
        """The next ``count`` passes' words, shape (count, d), valid until the next call:
        pass after pass of the keystream, whatever the count."""
        if not 1 <= count <= self._passes_per_draw:
            raise ConfigurationError(f"Draw 1 to {self._passes_per_draw} passes at once.")
        size = 2 * self._dimension * count
        self._encryptor.update_into(memoryview(self._zeros)[:size], self._buffer.data)
        words: npt.NDArray[np.uint16] = self._buffer[:size].view("<u2")
        return words.reshape(count, self._dimension)


@dataclass(frozen=True)
class WraparoundChecks:
    """κ wraparound checks on vectors of length d, drawn from a 32-byte public seed.

    Attributes:
        count: κ, the number of checks.
        dimension: d, the length of the projected vectors.

    Raises:
        ConfigurationError: unless both are at least 1.
    """

    count: int
    dimension: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.dimension < 1:
            raise ConfigurationError("Wraparound checks need at least one check and coordinate.")

    @property
    def passes(self) -> int:
        """16-bit words drawn per coordinate."""
        return -(-self.count // _CHECKS_PER_PASS)

    def vectors(self, seed: bytes) -> npt.NDArray[np.int8]:
        """The κ x d matrix of z entries, explicitly (for oracles and small vectors)."""
        words = _Words(seed, self.dimension)
        z = np.empty((self.passes * _CHECKS_PER_PASS, self.dimension), dtype=np.int8)
        for pass_index in range(self.passes):
            w = words.next_pass().astype(np.int64)
            for u in range(_CHECKS_PER_PASS):
                z[pass_index * _CHECKS_PER_PASS + u] = ((w >> (2 * u)) & 1) - (
                    (w >> (2 * u + 1)) & 1
                )
        return z[: self.count]

    def project(self, seed: bytes, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """The exact integers <z_h, values> for h = 1..κ.

        Args:
            seed: The public seed the checks are drawn from.
            values: d integer-valued floats with d · max|values| < 2**53 (centred
                field elements below 2**30 qualify for d < 2**23).

        Raises:
            ConfigurationError: if ``values`` has the wrong length or is too large for
                exact float64 sums.
        """
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.shape != (self.dimension,):
            raise ConfigurationError(
                f"Wraparound checks project vectors of length {self.dimension}; got "
                f"shape {values.shape}."
            )
        # Σ|values| <= d · max|values|: bounded without a temporary the size of d.
        largest = max(abs(float(values.max())), abs(float(values.min()))) if values.size else 0.0
        if not largest * self.dimension < EXACT_SUM_LIMIT:
            raise ConfigurationError("The values are too large for exact float64 projections.")
        if self.dimension < _EXPLICIT_BELOW:  # exact in int64: |<z, v>| <= Σ|v| < 2^53
            exact: npt.NDArray[np.int64] = self.vectors(seed).astype(np.int64) @ values.astype(
                np.int64
            )
            return exact
        per_draw = min(self.passes, max(1, _KEYSTREAM_BYTES // (2 * self.dimension)))
        words = _Words(seed, self.dimension, per_draw, reuse=True)
        out = []
        for start in range(0, self.passes, per_draw):
            out.append(project_words(words.next_passes(min(per_draw, self.passes - start)), values))
        return np.concatenate(out)[: self.count]
