"""Compiled kernels for the hot loops of verified bounds, with exact numpy fallbacks.

Four loops over d dominate a verified contribution: the κ wraparound projections
(:mod:`veilfl.crypto.wraparound`), centring field elements for the FLP's float64 matrix
products (:mod:`veilfl.crypto.flp`), the rejection step of seed expansion
(:mod:`veilfl.crypto.csprng`) and dealing 2-of-m shares
(:mod:`veilfl.crypto.seeded_shares`). numpy does each as several passes over d with a
temporary per step; numba compiles each into one pass.

Every kernel has a numpy twin that computes the same integers, bit for bit (both are
exact integer arithmetic; ``tests/crypto/test_kernels.py`` compares them on random
inputs). The compiled path runs when numba is installed and ``VEILFL_JIT`` is not ``0``;
set ``VEILFL_JIT=0`` to run the numpy twins. The first call of a kernel compiles it
(about a second) and numba caches the machine code next to this file.

No kernel sees a secret it does not already get as an argument, keeps state or draws
randomness.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "JIT_AVAILABLE",
    "centred_floats",
    "jit_enabled",
    "line_shares",
    "project_words",
    "uniform_below",
]

JIT_AVAILABLE = importlib.util.find_spec("numba") is not None
"""Whether numba is installed (the compiled kernels can run). numba itself is imported
on a kernel's first compiled call: importing it costs about 0.4 s, which a process that
never proves or verifies (the CLI's other commands) should not pay."""

_CHECKS_PER_WORD = 8  # a 16-bit word holds 8 (a, b) bit pairs: z = a - b
_BYTE_BINS_BELOW = 1 << 18  # numpy twin: bin by byte below this length, by word above


def jit_enabled() -> bool:
    """Whether the compiled kernels run: numba is installed and ``VEILFL_JIT`` is not 0."""
    return JIT_AVAILABLE and os.environ.get("VEILFL_JIT", "1") != "0"


def _compiled(flag: bool | None) -> bool:
    return jit_enabled() if flag is None else flag and JIT_AVAILABLE


class _Kernel:
    """A function compiled by numba on its first call (numba imported then)."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function
        self._compiled: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        if self._compiled is None:
            numba = importlib.import_module("numba")
            self._compiled = numba.njit(cache=True, nogil=True, boundscheck=False)(self._function)
        return self._compiled(*args)


# --------------------------------------------------------------- projections
def _bin_bytes(words: Any, values: Any, bins: Any) -> None:
    """bins[2u + 0, v] += values[i] where the low byte of words[u, i] is v, and
    bins[2u + 1, v] likewise for the high byte (one pass over d for every row)."""
    rows, length = words.shape
    for i in range(length):
        value = values[i]
        for u in range(rows):
            word = words[u, i]
            bins[2 * u, word & 255] += value
            bins[2 * u + 1, word >> 8] += value


_bin_bytes_jit = _Kernel(_bin_bytes)


@functools.cache
def _byte_sign_rows(dtype: str) -> npt.NDArray[Any]:
    """Column u holds z = a - b of the u-th check a byte carries: bits 2u (a), 2u+1 (b)."""
    v = np.arange(256, dtype=np.int64)[:, np.newaxis]
    u = np.arange(_CHECKS_PER_WORD // 2, dtype=np.int64)[np.newaxis, :]
    signs = ((v >> (2 * u)) & 1) - ((v >> (2 * u + 1)) & 1)
    out = signs.astype(dtype)
    out.flags.writeable = False
    return out


@functools.cache
def _word_sign_rows() -> npt.NDArray[np.float64]:
    """Row u holds z = a - b of check u for each 16-bit word: bits 2u (a) and 2u+1 (b)."""
    words = np.arange(1 << 16, dtype=np.int64)[np.newaxis, :]
    u = np.arange(_CHECKS_PER_WORD, dtype=np.int64)[:, np.newaxis]
    rows = (((words >> (2 * u)) & 1) - ((words >> (2 * u + 1)) & 1)).astype(np.float64)
    rows.flags.writeable = False
    return rows


def project_words(
    words: npt.NDArray[np.uint16],
    values: npt.NDArray[np.int64] | npt.NDArray[np.float64],
    *,
    compiled: bool | None = None,
) -> npt.NDArray[np.int64]:
    """The exact integers <z, values> for the 8 checks each row of 16-bit words carries.

    Check 8r + u of row r has z_i = a - b for bits a = 2u and b = 2u + 1 of
    ``words[r, i]``.

    Args:
        words: Shape (rows, d).
        values: d integers (int64, or integer-valued float64) with Σ|values| < 2**53.
        compiled: Force the compiled (True) or numpy (False) path; None picks.

    Returns:
        8 · rows projections, in check order.
    """
    rows, length = words.shape
    if _compiled(compiled):
        # Bins in the values' type: every bin and partial sum is at most Σ|values|.
        bins = np.zeros((2 * rows, 256), dtype=values.dtype)
        _bin_bytes_jit(words, values, bins)
        exact: npt.NDArray[np.int64] = (bins @ _byte_sign_rows(bins.dtype.str)).astype(np.int64)
        return exact.ravel()
    floats = np.asarray(values, dtype=np.float64)
    out = np.empty((rows, _CHECKS_PER_WORD), dtype=np.float64)
    for r in range(rows):
        if length < _BYTE_BINS_BELOW:  # two passes into 256 bins each (L1-resident)
            byte = words[r].view(np.uint8)  # little-endian: low byte first (checks 0-3)
            for half, lane in enumerate((byte[0::2], byte[1::2])):
                sums = np.bincount(lane, weights=floats, minlength=256)
                out[r, 4 * half : 4 * half + 4] = sums @ _byte_sign_rows("<f8")
        else:  # one pass into 65,536 bins
            sums = np.bincount(words[r], weights=floats, minlength=1 << 16)
            out[r] = _word_sign_rows() @ sums
    return out.astype(np.int64).ravel()


# ------------------------------------------------------------------ centring
def _centre(values: Any, modulus: int, out: Any) -> None:
    half = (modulus - 1) // 2
    for i in range(values.shape[0]):
        v = np.int64(values[i])  # below 2**31
        out[i] = np.float64(v - modulus if v > half else v)


_centre_jit = _Kernel(_centre)


def centred_floats(
    values: npt.NDArray[np.uint64],
    modulus: int,
    *,
    out: npt.NDArray[np.float64] | None = None,
    compiled: bool | None = None,
) -> npt.NDArray[np.float64]:
    """Reduced field elements as floats in (-p/2, p/2), written into ``out`` if given.

    Args:
        values: A 1-d array of elements in [0, p).
        modulus: p.
        out: A 1-d float64 array as long as ``values`` (a view into a larger one, say).
        compiled: Force the compiled (True) or numpy (False) path; None picks.
    """
    values = np.asarray(values, dtype=np.uint64).ravel()
    target = np.empty(values.shape, dtype=np.float64) if out is None else out
    if _compiled(compiled):
        _centre_jit(values, modulus, target)
        return target
    target[...] = values
    np.subtract(target, modulus, out=target, where=target > (modulus - 1) // 2)
    return target


# ------------------------------------------------------------ seed expansion
def _below(draw: Any, mask: int, modulus: int, out: Any) -> int:
    rejected = 0
    for i in range(draw.shape[0]):
        v = draw[i] & mask
        out[i] = v
        if v >= modulus:
            rejected += 1
    return rejected


_below_jit = _Kernel(_below)


def uniform_below(
    draw: npt.NDArray[np.uint32], *, mask: int, modulus: int, compiled: bool | None = None
) -> tuple[npt.NDArray[np.uint64], int]:
    """``draw & mask`` widened to uint64, and how many of those are >= ``modulus``.

    The caller keeps the values below the modulus (rejection sampling); for 2**31 - 1
    none is rejected except with probability 2**-31 each.
    """
    if _compiled(compiled):
        out = np.empty(draw.shape, dtype=np.uint64)
        rejected = _below_jit(draw, mask, modulus, out)
        return out, int(rejected)
    masked = draw & np.uint32(mask)
    return masked.astype(np.uint64), int(np.count_nonzero(masked >= np.uint32(modulus)))


# ------------------------------------------------------------------- dealing
def _line(first: Any, second: Any, modulus: int, out: Any) -> None:
    """out[k] = f(k + 2) for the line f with f(0) = first, f(1) = second (mod p)."""
    shares, length = out.shape
    p = np.uint64(modulus)  # keep every operation in uint64 (numba mixes to float)
    for i in range(length):
        slope = second[i] + p - first[i]
        if slope >= p:
            slope -= p
        value = second[i]
        for k in range(shares):
            value += slope
            if value >= p:
                value -= p
            out[k, i] = value


_line_jit = _Kernel(_line)


def line_shares(
    secret: npt.NDArray[np.uint64],
    seeded: npt.NDArray[np.uint64],
    count: int,
    *,
    modulus: int,
    compiled: bool | None = None,
) -> list[npt.NDArray[np.uint64]]:
    """f(2), ..., f(count + 1) for the line through (0, secret) and (1, seeded), mod p.

    The 2-of-m dealing of :class:`~veilfl.crypto.seeded_shares.SeededSharing`: additions
    only, for reduced inputs.
    """
    if _compiled(compiled):
        out = np.empty((count, secret.size), dtype=np.uint64)
        _line_jit(secret, seeded, modulus, out)
        return list(out)
    p = np.uint64(modulus)
    slope = seeded + (p - secret)  # below 2p
    np.minimum(slope, slope - p, out=slope)  # slope - p wraps around when slope < p
    shares, previous = [], seeded
    for _ in range(count):
        value = previous + slope
        np.minimum(value, value - p, out=value)  # value - p wraps when value < p
        shares.append(value)
        previous = value
    return shares
