"""Seeded Shamir sharing: any t shares rebuild the secret, t - 1 are uniform, seeds bind."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.seeded_shares import SeededShare, SeededSharing, expand_seed
from veilfl.crypto.shamir import ShamirScheme, Share
from veilfl.errors import ConfigurationError, CryptoError

P = MERSENNE_31.modulus
DOMAIN = b"test"


@st.composite
def sharings(draw: st.DrawFn) -> SeededSharing:
    m = draw(st.integers(1, 7), label="m")
    t = draw(st.integers(1, m), label="t")
    return SeededSharing(threshold=t, num_shares=m, domain=DOMAIN)


def evaluate_one_by_one(points: list[tuple[int, int]], at: int) -> int:
    """Slow Lagrange interpolation of one coordinate, the oracle."""
    total = 0
    for j, (x_j, y_j) in enumerate(points):
        term = y_j
        for k, (x_k, _) in enumerate(points):
            if k != j:
                term = term * (at - x_k) * pow(x_j - x_k, -1, P) % P
        total += term
    return total % P


@settings(max_examples=80, deadline=None)
@given(sharing=sharings(), secret=st.lists(st.integers(0, P - 1), min_size=1, max_size=12))
def test_every_t_subset_reconstructs_and_all_shares_lie_on_one_polynomial(
    sharing: SeededSharing, secret: list[int]
) -> None:
    # Arrange
    vector = np.array(secret, dtype=np.uint64)
    # Act
    shares = sharing.split(vector, rng=CsprngStream())
    values = {s.index: sharing.expand(s, len(secret)) for s in shares}
    # Assert: seeds exactly for 1..t-1, and the polynomial through (0, s) and the
    # seeded points passes through every full share (checked one coordinate at a time).
    assert [s.seed is not None for s in shares] == [
        i < sharing.threshold for i in range(1, sharing.num_shares + 1)
    ]
    scheme = ShamirScheme(threshold=sharing.threshold, num_shares=sharing.num_shares)
    for subset in itertools.combinations(sorted(values), sharing.threshold):
        rebuilt = scheme.reconstruct([Share(index=j, values=values[j]) for j in subset])
        np.testing.assert_array_equal(rebuilt, vector)
    basis = [0, *range(1, sharing.threshold)]
    for j in range(sharing.threshold, sharing.num_shares + 1):
        for c in range(len(secret)):
            points = [(0, secret[c])] + [(i, int(values[i][c])) for i in basis[1:]]
            assert int(values[j][c]) == evaluate_one_by_one(points, j)


@settings(max_examples=40, deadline=None)
@given(sharing=sharings(), length=st.integers(1, 30), cut=st.integers(0, 30))
def test_dealing_in_slices_equals_dealing_at_once(
    sharing: SeededSharing, length: int, cut: int
) -> None:
    # Arrange
    rng = CsprngStream()
    secret = rng.uniform_field(MERSENNE_31, length)
    seeded = [rng.uniform_field(MERSENNE_31, length) for _ in range(sharing.threshold - 1)]
    cut = min(cut, length)
    # Act
    whole = sharing.deal(secret, seeded)
    left = sharing.deal(secret[:cut], [s[:cut] for s in seeded])
    right = sharing.deal(secret[cut:], [s[cut:] for s in seeded])
    # Assert
    for w, a, b in zip(whole, left, right, strict=True):
        np.testing.assert_array_equal(w, np.concatenate([a, b]))


def test_any_t_minus_1_shares_are_uniform_whatever_the_secret() -> None:
    # Arrange: a 3-of-4 sharing of an all-zero secret; parties {3, 4} (both derived)
    # and {1, 3} (seed and derived) must each look uniform.
    sharing = SeededSharing(threshold=3, num_shares=4, domain=DOMAIN)
    shares = sharing.split(np.zeros(20_000, dtype=np.uint64), rng=CsprngStream(key=bytes(32)))
    values = {s.index: sharing.expand(s, 20_000) for s in shares}
    for pair in ((3, 4), (1, 3)):
        # Act: the top 4 bits of each value, and of the pair's sum, are uniform.
        for sample in (values[pair[0]], (values[pair[0]] + values[pair[1]]) % P):
            counts = np.bincount((sample >> np.uint64(27)).astype(np.int64), minlength=16)
            # Assert
            assert stats.chisquare(counts).pvalue > 1e-4


def test_seed_expansion_binds_index_and_domain_and_is_deterministic() -> None:
    seed = bytes(range(32))
    a = expand_seed(seed, index=1, length=64, domain=b"a")
    assert np.array_equal(a, expand_seed(seed, index=1, length=64, domain=b"a"))
    assert not np.array_equal(a, expand_seed(seed, index=2, length=64, domain=b"a"))
    assert not np.array_equal(a, expand_seed(seed, index=1, length=64, domain=b"b"))
    assert int(a.max()) < P


def test_malformed_shares_and_schemes_are_refused() -> None:
    sharing = SeededSharing(threshold=2, num_shares=3, domain=DOMAIN)
    with pytest.raises(CryptoError, match="either a seed or values"):
        SeededShare(index=1)
    with pytest.raises(CryptoError, match="must hold full values"):
        sharing.expand(SeededShare(index=2, seed=bytes(32)), 4)
    with pytest.raises(CryptoError, match="must hold a seed"):
        sharing.expand(SeededShare(index=1, values=np.zeros(4, dtype=np.uint64)), 4)
    with pytest.raises(CryptoError, match="values; 5 were expected"):
        sharing.expand(SeededShare(index=2, values=np.zeros(4, dtype=np.uint64)), 5)
    with pytest.raises(CryptoError, match="32 bytes"):
        expand_seed(b"short", index=1, length=4, domain=DOMAIN)
    with pytest.raises(ConfigurationError):
        SeededSharing(threshold=3, num_shares=2, domain=DOMAIN)
    assert repr(SeededShare(index=1, seed=bytes(32))) == "SeededShare(index=1, seed)"
    assert repr(SeededShare(index=2, values=np.arange(3, dtype=np.uint64))) == (
        "SeededShare(index=2, values[3])"
    )
