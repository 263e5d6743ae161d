"""Shamir sharing: round trips from any t shares, oracles, and no leakage below t."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31, PrimeField
from veilfl.crypto.shamir import (
    MAX_SHARES,
    ShamirScheme,
    Share,
    add_shares,
    lagrange_coefficients_at_zero,
    sum_shares,
)
from veilfl.errors import ConfigurationError, CryptoError, ReconstructionError

FIELD = MERSENNE_31
P = FIELD.modulus
ALPHA = 1e-4


@st.composite
def schemes(draw: st.DrawFn) -> ShamirScheme:
    m = draw(st.integers(1, MAX_SHARES), label="m")
    t = draw(st.integers(1, m), label="t")
    return ShamirScheme(threshold=t, num_shares=m, field=FIELD)


def interpolate_one_by_one(points: list[tuple[int, int]], at: int, p: int) -> int:
    """The slow, obviously correct Lagrange interpolation of one coordinate."""
    total = 0
    for j, (x_j, y_j) in enumerate(points):
        term = y_j
        for k, (x_k, _) in enumerate(points):
            if k != j:
                term = term * (at - x_k) * pow(x_j - x_k, -1, p) % p
        total += term
    return total % p


@settings(max_examples=200, deadline=None)
@given(
    scheme=schemes(),
    data=st.data(),
    clients=st.integers(1, 6),
    length=st.integers(1, 40),
)
def test_split_sum_reconstruct_round_trips_from_any_t_subset(
    scheme: ShamirScheme, data: st.DataObject, clients: int, length: int
) -> None:
    # Arrange: several clients' signed integer vectors, mapped into the field and shared.
    vectors = data.draw(
        hnp.arrays(np.int64, (clients, length), elements=st.integers(-(10**6), 10**6))
    )
    rng = CsprngStream()
    per_client = [scheme.split((v % P).astype(np.uint64), rng=rng) for v in vectors]
    # Each aggregator j sums the shares it holds.
    aggregates = [
        sum_shares([shares[j] for shares in per_client], FIELD) for j in range(scheme.num_shares)
    ]
    subset = data.draw(
        st.permutations(range(scheme.num_shares)).map(lambda order: order[: scheme.threshold]),
        label="subset",
    )
    # Act
    field_sum = scheme.reconstruct([aggregates[j] for j in subset]).astype(np.int64)
    # Assert: the field sum is the integer sum, centred.
    centred = np.where(field_sum > P // 2, field_sum - P, field_sum)
    np.testing.assert_array_equal(centred, vectors.sum(axis=0))


@settings(max_examples=200, deadline=None)
@given(
    scheme=schemes(),
    secret=hnp.arrays(np.uint64, st.integers(0, 12), elements=st.integers(0, P - 1)),
)
def test_every_share_lies_on_one_polynomial_whose_value_at_zero_is_the_secret(
    scheme: ShamirScheme, secret: np.ndarray
) -> None:
    # Arrange / Act
    shares = scheme.split(secret, rng=CsprngStream())
    # Assert: shares 1..m in order, and per coordinate (slow oracle) the polynomial
    # through the first t shares passes through every other share and the secret.
    assert [s.index for s in shares] == list(range(1, scheme.num_shares + 1))
    basis = shares[: scheme.threshold]
    for coordinate in range(len(secret)):
        points = [(s.index, int(s.values[coordinate])) for s in basis]
        assert interpolate_one_by_one(points, 0, P) == int(secret[coordinate])
        for other in shares[scheme.threshold :]:
            predicted = interpolate_one_by_one(points, other.index, P)
            assert predicted == int(other.values[coordinate])


@settings(max_examples=200, deadline=None)
@given(scheme=schemes(), data=st.data())
def test_vectorised_reconstruction_matches_the_one_by_one_oracle(
    scheme: ShamirScheme, data: st.DataObject
) -> None:
    # Arrange: arbitrary share values (not necessarily from split) at distinct points.
    size = data.draw(st.integers(scheme.threshold, scheme.num_shares), label="size")
    indices = data.draw(st.permutations(range(1, scheme.num_shares + 1)))[:size]
    length = data.draw(st.integers(0, 8), label="length")
    values = [
        data.draw(hnp.arrays(np.uint64, length, elements=st.integers(0, P - 1))) for _ in indices
    ]
    shares = [Share(index=i, values=v) for i, v in zip(indices, values, strict=True)]
    # Act
    secret = scheme.reconstruct(shares)
    # Assert: exactly the first t shares are used.
    used = shares[: scheme.threshold]
    expected = [
        interpolate_one_by_one([(s.index, int(s.values[c])) for s in used], 0, P)
        for c in range(length)
    ]
    assert secret.tolist() == expected


@pytest.mark.parametrize(("t", "m"), [(2, 3), (3, 5), (5, 16)])
def test_t_minus_one_shares_of_different_secrets_are_indistinguishable(t: int, m: int) -> None:
    # Arrange: two very different secrets over many coordinates. A fixed key makes the
    # statistical test deterministic (never flaky); the stream is tested separately.
    scheme = ShamirScheme(threshold=t, num_shares=m, field=FIELD)
    rng = CsprngStream(key=bytes([t, m]) * 16)
    length = 50_000
    secret_a = np.zeros(length, dtype=np.uint64)
    secret_b = np.full(length, (P - 1) // 2, dtype=np.uint64)
    # Act: the t - 1 shares a coalition below the threshold would see (the last ones,
    # so that index m, the farthest from the secret's point 0, is included).
    seen_a = [s.values for s in scheme.split(secret_a, rng=rng)[m - t + 1 :]]
    seen_b = [s.values for s in scheme.split(secret_b, rng=rng)[m - t + 1 :]]
    flat_a, flat_b = np.concatenate(seen_a), np.concatenate(seen_b)
    # Assert: each looks uniform on [0, p), and the two look alike.
    assert stats.kstest(flat_a / P, "uniform").pvalue > ALPHA
    assert stats.kstest(flat_b / P, "uniform").pvalue > ALPHA
    assert stats.ks_2samp(flat_a, flat_b).pvalue > ALPHA
    bins = 64
    counts_a = np.bincount((flat_a * bins // P).astype(np.int64), minlength=bins)
    counts_b = np.bincount((flat_b * bins // P).astype(np.int64), minlength=bins)
    assert stats.chisquare(counts_a).pvalue > ALPHA
    assert stats.chisquare(counts_b).pvalue > ALPHA
    assert stats.chi2_contingency(np.stack([counts_a, counts_b])).pvalue > ALPHA
    if t >= 3:  # two shares seen together are jointly uniform, too
        grid = 8
        joint = (seen_a[0] * grid // P) * grid + seen_a[1] * grid // P
        assert stats.chisquare(np.bincount(joint.astype(np.int64), minlength=grid**2)).pvalue > (
            ALPHA
        )


def test_the_leakage_test_would_detect_a_leaky_sharing() -> None:
    # Arrange: a broken "sharing" that masks the secret with a small random number.
    rng = CsprngStream(key=bytes(range(32)))
    mask = rng.uniform_field(FIELD, 50_000) % np.uint64(2**20)
    leaky_a = mask % FIELD.p
    leaky_b = (mask + np.uint64((P - 1) // 2)) % FIELD.p
    # Act / Assert
    assert stats.ks_2samp(leaky_a, leaky_b).pvalue < ALPHA
    assert stats.kstest(leaky_a / P, "uniform").pvalue < ALPHA


def test_fewer_than_t_repeated_or_mismatched_shares_do_not_reconstruct() -> None:
    # Arrange
    scheme = ShamirScheme(threshold=3, num_shares=5, field=FIELD)
    shares = scheme.split(np.arange(5, dtype=np.uint64), rng=CsprngStream())
    short = Share(index=4, values=shares[3].values[:4])
    # Act / Assert
    with pytest.raises(ReconstructionError, match="needs 3 shares; got 2"):
        scheme.reconstruct(shares[:2])
    with pytest.raises(ReconstructionError, match="distinct party"):
        scheme.reconstruct([shares[0], shares[0], shares[1]])
    with pytest.raises(ReconstructionError, match="different lengths"):
        scheme.reconstruct([shares[0], shares[1], short])
    with pytest.raises(ReconstructionError, match=r"must lie in 1\.\.3"):
        ShamirScheme(threshold=2, num_shares=3, field=FIELD).reconstruct(shares[2:4])


def test_verification_detects_a_corrupt_extra_share() -> None:
    # Arrange
    scheme = ShamirScheme(threshold=2, num_shares=4, field=FIELD)
    secret = np.arange(100, dtype=np.uint64)
    shares = scheme.split(secret, rng=CsprngStream())
    corrupt = Share(index=4, values=FIELD.add(shares[3].values, np.ones(100, dtype=np.uint64)))
    # Act / Assert
    assert scheme.reconstruct(shares, verify=True).tolist() == secret.tolist()
    assert scheme.reconstruct([*shares[:3], corrupt]).tolist() == secret.tolist()  # ignored
    with pytest.raises(ReconstructionError, match="Share 4 disagrees"):
        scheme.reconstruct([*shares[:3], corrupt], verify=True)


def test_adding_shares_of_two_secrets_gives_shares_of_their_sum() -> None:
    # Arrange
    scheme = ShamirScheme(threshold=2, num_shares=3, field=FIELD)
    rng = CsprngStream()
    a = rng.uniform_field(FIELD, 1000)
    b = rng.uniform_field(FIELD, 1000)
    shares_a, shares_b = scheme.split(a, rng=rng), scheme.split(b, rng=rng)
    # Act
    pairwise = [add_shares(x, y, FIELD) for x, y in zip(shares_a, shares_b, strict=True)]
    summed = [sum_shares([x, y]) for x, y in zip(shares_a, shares_b, strict=True)]
    # Assert
    assert scheme.reconstruct(pairwise[1:]).tolist() == FIELD.add(a, b).tolist()
    assert all(
        x.values.tolist() == y.values.tolist() for x, y in zip(pairwise, summed, strict=True)
    )
    with pytest.raises(ReconstructionError, match="same party"):
        add_shares(shares_a[0], shares_b[1])
    with pytest.raises(ReconstructionError, match="same length"):
        sum_shares([shares_a[0], Share(index=1, values=a[:10])])
    with pytest.raises(ReconstructionError, match="no shares"):
        sum_shares([])


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_lagrange_coefficients_interpolate_every_polynomial_of_lower_degree(size: int) -> None:
    # Interpolating x**k (k < size) at zero gives 0, except for the constant 1.
    for points in itertools.islice(itertools.combinations(range(1, MAX_SHARES + 1), size), 50):
        weights = lagrange_coefficients_at_zero(list(points), FIELD)
        for degree in range(size):
            value = sum(w * pow(x, degree, P) for w, x in zip(weights, points, strict=True)) % P
            assert value == (1 if degree == 0 else 0)


@pytest.mark.parametrize("indices", [[1, 1], [0, 2], [3, 3 + P]])
def test_lagrange_coefficients_need_distinct_non_zero_points(indices: list[int]) -> None:
    with pytest.raises(ReconstructionError):
        lagrange_coefficients_at_zero(indices, FIELD)


@pytest.mark.parametrize(("t", "m"), [(0, 3), (4, 3), (2, 17), (1, 0), (True, 2)])
def test_impossible_thresholds_are_refused(t: int, m: int) -> None:
    with pytest.raises(ConfigurationError, match="1 <= threshold <= shares <= 16"):
        ShamirScheme(threshold=t, num_shares=m, field=FIELD)


def test_secrets_outside_the_field_or_not_vectors_are_refused() -> None:
    scheme = ShamirScheme(threshold=2, num_shares=3, field=PrimeField(101))
    with pytest.raises(CryptoError, match="outside the field"):
        scheme.split(np.array([101], dtype=np.uint64), rng=CsprngStream())
    with pytest.raises(CryptoError, match="1-D"):
        scheme.split(np.zeros((2, 2), dtype=np.uint64), rng=CsprngStream())


@pytest.mark.parametrize("index", [0, MAX_SHARES + 1, -1, True])
def test_share_indices_outside_1_to_16_are_refused(index: int) -> None:
    with pytest.raises(ReconstructionError, match=r"1\.\.16"):
        Share(index=index, values=np.zeros(1, dtype=np.uint64))


def test_a_share_never_prints_its_values() -> None:
    share = Share(index=2, values=np.array([123_456_789], dtype=np.uint64))
    assert "123456789" not in repr(share) and "length=1" in repr(share)
