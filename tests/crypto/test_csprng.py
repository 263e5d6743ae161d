"""The AES-CTR CSPRNG: uniform output, fresh keys, and a key that never leaves.

The statistical tests use fixed keys, so they are deterministic (never flaky); the
quality of the stream does not depend on which key is used.
"""

from __future__ import annotations

import copy
import os
import pickle

import numpy as np
import pytest
from scipy import stats

from veilfl.crypto import csprng
from veilfl.crypto.csprng import KEY_LENGTH, CsprngStream
from veilfl.crypto.field import MERSENNE_31, PrimeField
from veilfl.errors import ConfigurationError, CryptoError

ALPHA = 1e-4


def fixed_stream(label: int) -> CsprngStream:
    return CsprngStream(key=bytes([label]) * KEY_LENGTH)


def test_bytes_are_uniform() -> None:
    # Arrange
    stream = fixed_stream(1)
    # Act
    data = np.frombuffer(stream.random_bytes(1_000_000), dtype=np.uint8)
    # Assert: chi-square of the 256 byte values against the uniform distribution.
    counts = np.bincount(data, minlength=256)
    assert stats.chisquare(counts).pvalue > ALPHA


def test_the_uniformity_test_would_catch_modulo_bias() -> None:
    # A classic mistake: bytes reduced modulo 200 favour the values below 56.
    biased = np.frombuffer(fixed_stream(2).random_bytes(1_000_000), dtype=np.uint8) % 200
    counts = np.bincount(biased, minlength=200)
    assert stats.chisquare(counts).pvalue < ALPHA


@pytest.mark.parametrize("modulus", [MERSENNE_31.modulus, 101, 65_537])
def test_field_elements_are_uniform_and_in_range(modulus: int) -> None:
    # Arrange: 101 and 65,537 reject about a fifth and half of their draws, so the
    # refill path runs; 2**31 - 1 almost never rejects.
    field = PrimeField(modulus)
    count = 500_000
    # Act
    draws = fixed_stream(3).uniform_field(field, count)
    # Assert
    assert draws.dtype == np.uint64 and draws.shape == (count,)
    assert int(draws.max()) < modulus
    if modulus > 10_000:  # KS needs a (nearly) continuous distribution
        assert stats.kstest(draws / modulus, "uniform").pvalue > ALPHA
    bins = min(modulus, 128)
    counts = np.bincount((draws * bins // modulus).astype(np.int64), minlength=bins)
    # Bin k holds the values v with floor(v * bins / p) == k; when p is not a multiple
    # of the bin count, the bins differ in width by one value.
    widths = np.diff([-(-k * modulus // bins) for k in range(bins + 1)])
    assert stats.chisquare(counts, f_exp=count * widths / modulus).pvalue > ALPHA


def test_every_value_of_a_small_field_is_equally_likely() -> None:
    draws = fixed_stream(4).uniform_field(PrimeField(101), 303_000)
    assert stats.chisquare(np.bincount(draws.astype(np.int64), minlength=101)).pvalue > ALPHA


def test_integers_and_unit_floats_are_uniform() -> None:
    # Arrange
    stream = fixed_stream(5)
    # Act
    words = stream.random_uint64(200_000)
    halves = stream.random_uint32(200_000)
    units = stream.uniform_unit(200_000)
    # Assert: every bit of the 64-bit words is set half the time, the 32-bit words and
    # the floats are uniform on their ranges.
    bits = (words[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    ones = bits.sum(axis=0).astype(np.int64)
    assert min(stats.binomtest(int(k), 200_000).pvalue for k in ones) > ALPHA / 64
    assert stats.kstest(halves / 2**32, "uniform").pvalue > ALPHA
    assert float(units.min()) >= 0.0 and float(units.max()) < 1.0
    assert stats.kstest(units, "uniform").pvalue > ALPHA


def test_fresh_streams_differ_and_a_key_fixes_its_stream() -> None:
    # Arrange
    key = bytes(range(KEY_LENGTH))
    # Act
    first, second = CsprngStream().random_bytes(64), CsprngStream().random_bytes(64)
    stream = CsprngStream(key=key)
    pieces = stream.random_bytes(10) + stream.random_bytes(54)
    # Assert
    assert first != second
    assert pieces == CsprngStream(key=key).random_bytes(64)  # one continuous stream


def test_the_key_never_leaves_the_stream() -> None:
    # Arrange
    key = bytes(range(100, 100 + KEY_LENGTH))
    stream = CsprngStream(key=key)
    # Act / Assert: not in its repr, not in any attribute, not picklable or copyable.
    assert key.hex() not in repr(stream) and "hidden" in repr(stream)
    assert all(value != key for value in vars(stream).values())
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(stream)
    with pytest.raises(TypeError):
        copy.deepcopy(stream)


def test_a_stream_refuses_to_run_in_another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrange: what a forked child would see.
    stream = CsprngStream()
    real_pid = os.getpid()
    monkeypatch.setattr(csprng.os, "getpid", lambda: real_pid + 1)  # type: ignore[attr-defined]
    # Act / Assert
    with pytest.raises(CryptoError, match="another process"):
        stream.random_bytes(16)


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_keys_of_the_wrong_length_are_refused(length: int) -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        CsprngStream(key=bytes(length))


def test_the_key_is_keyword_only_and_counts_are_checked() -> None:
    with pytest.raises(TypeError):
        CsprngStream(bytes(KEY_LENGTH))  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="negative"):
        CsprngStream().random_bytes(-1)
    assert CsprngStream().uniform_field(MERSENNE_31, 0).shape == (0,)
