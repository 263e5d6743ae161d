"""Partitioners: disjoint, complete, deterministic for a seed, and skewed as configured."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError, DataError
from veilfl.ml.partition import (
    PartitionScheme,
    partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)

SCHEMES: tuple[PartitionScheme, ...] = ("iid", "dirichlet", "shards")
Labels = npt.NDArray[np.int64]
Parts = list[npt.NDArray[np.int64]]


def _labels(count: int, seed: int, classes: int = 10) -> Labels:
    return np.random.default_rng(seed).integers(0, classes, size=count, dtype=np.int64)


def _assert_disjoint_and_complete(parts: Parts, count: int) -> None:
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(count)), "an example is missing or repeated"
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)


def _mean_label_entropy(labels: Labels, parts: Parts) -> float:
    entropies = []
    for part in parts:
        counts = np.bincount(labels[part], minlength=10).astype(float)
        p = counts[counts > 0] / counts.sum()
        entropies.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(entropies))


# --- IID ---------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(count=st.integers(1, 3000), clients=st.integers(1, 50), seed=st.integers(0, 2**32))
def test_iid_is_disjoint_complete_and_balanced(count: int, clients: int, seed: int) -> None:
    if clients > count:
        with pytest.raises(ConfigurationError, match="fewer clients"):
            partition_iid(count, clients, seed=seed)
        return

    parts = partition_iid(count, clients, seed=seed)

    assert len(parts) == clients
    _assert_disjoint_and_complete(parts, count)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_parts_are_not_contiguous_blocks() -> None:
    parts = partition_iid(1000, 4, seed=0)
    assert all(part.max() - part.min() > 900 for part in parts)


# --- Dirichlet ----------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    count=st.integers(200, 3000),
    clients=st.integers(1, 20),
    # Below about 0.5 a 20-client split with a minimum of 5 can legitimately fail all
    # 100 draws; that case has its own test below.
    alpha=st.floats(0.5, 100.0),
    minimum=st.integers(0, 5),
    seed=st.integers(0, 2**32),
)
def test_dirichlet_is_disjoint_complete_and_meets_the_minimum(
    count: int, clients: int, alpha: float, minimum: int, seed: int
) -> None:
    labels = _labels(count, seed)

    parts = partition_dirichlet(
        labels, clients, alpha=alpha, seed=seed, min_examples_per_client=minimum
    )

    assert len(parts) == clients
    _assert_disjoint_and_complete(parts, count)
    assert all(len(p) >= minimum for p in parts)


def test_an_unreachable_dirichlet_minimum_is_an_error_that_says_what_to_change() -> None:
    labels = _labels(300, seed=3)

    with pytest.raises(DataError, match="raise alpha, use fewer clients"):
        partition_dirichlet(labels, 20, alpha=0.01, seed=3, min_examples_per_client=5)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_smaller_dirichlet_alpha_gives_stronger_label_skew(seed: int) -> None:
    labels = _labels(10_000, seed=seed)

    skewed = partition_dirichlet(labels, 20, alpha=0.1, seed=seed)
    mild = partition_dirichlet(labels, 20, alpha=10.0, seed=seed)

    # Ten equally likely labels: an IID client's entropy is close to ln 10 = 2.30.
    assert _mean_label_entropy(labels, skewed) < 1.3
    assert _mean_label_entropy(labels, mild) > 2.0


def test_dirichlet_gives_up_with_a_data_error_when_the_minimum_is_unlikely() -> None:
    labels = _labels(1000, seed=0)
    with pytest.raises(DataError, match="raise alpha"):
        partition_dirichlet(
            labels, 40, alpha=0.01, seed=0, min_examples_per_client=20, max_attempts=3
        )


def test_dirichlet_refuses_bad_settings() -> None:
    labels = _labels(100, seed=0)
    for alpha in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ConfigurationError, match="alpha must be a positive number"):
            partition_dirichlet(labels, 2, alpha=alpha, seed=0)
    with pytest.raises(ConfigurationError, match="lower min_examples_per_client"):
        partition_dirichlet(labels, 10, alpha=1.0, seed=0, min_examples_per_client=11)
    with pytest.raises(ConfigurationError, match="max_attempts"):
        partition_dirichlet(labels, 10, alpha=1.0, seed=0, max_attempts=0)
    with pytest.raises(DataError, match="1-D array of integers"):
        partition_dirichlet(labels.reshape(10, 10), 2, alpha=1.0, seed=0)
    with pytest.raises(DataError, match="1-D array of integers"):
        partition_dirichlet(labels.astype(np.float64), 2, alpha=1.0, seed=0)  # type: ignore[arg-type]


# --- shards -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1000, 6000),
    clients=st.integers(1, 60),
    per_client=st.integers(1, 4),
    seed=st.integers(0, 2**32),
)
def test_shards_are_complete_and_spread_the_remainder(
    count: int, clients: int, per_client: int, seed: int
) -> None:
    labels = _labels(count, seed)

    parts = partition_shards(labels, clients, seed=seed, shards_per_client=per_client)

    _assert_disjoint_and_complete(parts, count)
    shard = count // (clients * per_client)  # every shard holds `shard` or `shard + 1`
    assert all(shard * per_client <= len(p) <= (shard + 1) * per_client for p in parts)
    # Each client's examples, in label-sorted order, are at most `per_client` runs.
    position = np.empty(count, dtype=np.int64)
    position[np.argsort(labels, kind="stable")] = np.arange(count)
    for part in parts:
        runs = 1 + int(np.count_nonzero(np.diff(np.sort(position[part])) != 1))
        assert runs <= per_client
    # A shard no longer than the smallest class spans at most two labels.
    if shard + 1 <= np.bincount(labels).min():
        assert all(len(np.unique(labels[p])) <= 2 * per_client for p in parts)


def test_mcmahan_split_is_200_shards_of_300_two_per_client() -> None:
    labels = np.repeat(np.arange(10, dtype=np.int64), 6000)

    parts = partition_shards(labels, 100, seed=0)

    assert [len(p) for p in parts] == [600] * 100
    distinct = [len(np.unique(labels[p])) for p in parts]
    assert max(distinct) <= 2 and np.mean(distinct) > 1.5


def test_shards_refuse_bad_settings() -> None:
    labels = _labels(100, seed=0)
    with pytest.raises(ConfigurationError, match="shards_per_client must be at least 1"):
        partition_shards(labels, 2, seed=0, shards_per_client=0)
    with pytest.raises(ConfigurationError, match="200 non-empty shards"):
        partition_shards(labels, 100, seed=0, shards_per_client=2)
    with pytest.raises(ConfigurationError, match="at least one client"):
        partition_shards(labels, 0, seed=0)


# --- every scheme ---------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    scheme=st.sampled_from(SCHEMES),
    seed=st.integers(0, 2**32),
    clients=st.integers(5, 20),  # enough shards that two seeds deal them out alike rarely
)
def test_same_seed_same_split_other_seed_other_split(
    scheme: PartitionScheme, seed: int, clients: int
) -> None:
    labels = _labels(2000, seed=7)

    first = partition(scheme, labels, clients, seed=seed)
    again = partition(scheme, labels, clients, seed=seed)
    other = partition(scheme, labels, clients, seed=seed + 1)

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_the_dispatcher_calls_the_named_partitioner() -> None:
    labels = _labels(1000, seed=1)
    expected = {
        "iid": partition_iid(1000, 7, seed=3),
        "dirichlet": partition_dirichlet(labels, 7, alpha=0.3, seed=3),
        "shards": partition_shards(labels, 7, seed=3, shards_per_client=3),
    }
    for scheme in SCHEMES:
        parts = partition(scheme, labels, 7, seed=3, alpha=0.3, shards_per_client=3)
        assert all(np.array_equal(a, b) for a, b in zip(parts, expected[scheme], strict=True))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_client_counts_are_checked(scheme: PartitionScheme) -> None:
    with pytest.raises(ConfigurationError, match="at least one client"):
        partition(scheme, _labels(10, 0), 0, seed=0)
    with pytest.raises(ConfigurationError, match="fewer clients"):
        partition(scheme, _labels(10, 0), 11, seed=0, shards_per_client=1)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="Unknown partition scheme 'random'"):
        partition("random", _labels(10, 0), 2, seed=0)  # type: ignore[arg-type]
