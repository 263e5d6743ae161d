"""Partitioners: disjoint, complete, deterministic, and skewed as configured."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError
from veilfl.ml.partition import partition, partition_dirichlet, partition_iid, partition_shards


def _labels(count: int, seed: int, classes: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=count).astype(np.int64)


def _assert_disjoint(parts: list[np.ndarray]) -> np.ndarray:
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined), "a client got an example twice"
    return joined


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 3000), clients=st.integers(1, 50), seed=st.integers(0, 10**6))
def test_iid_is_disjoint_complete_and_balanced(count: int, clients: int, seed: int) -> None:
    if clients > count:
        with pytest.raises(ConfigurationError):
            partition_iid(count, clients, seed=seed)
        return
    parts = partition_iid(count, clients, seed=seed)
    joined = _assert_disjoint(parts)
    assert sorted(joined.tolist()) == list(range(count))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=25, deadline=None)
@given(
    count=st.integers(200, 3000),
    clients=st.integers(2, 20),
    alpha=st.floats(0.05, 100.0),
    seed=st.integers(0, 10**6),
)
def test_dirichlet_is_disjoint_and_complete(
    count: int, clients: int, alpha: float, seed: int
) -> None:
    labels = _labels(count, seed)
    parts = partition_dirichlet(labels, clients, alpha=alpha, seed=seed)
    joined = _assert_disjoint(parts)
    assert sorted(joined.tolist()) == list(range(count))
    assert all(len(p) >= 1 for p in parts)


def _mean_label_entropy(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    entropies = []
    for part in parts:
        counts = np.bincount(labels[part], minlength=10).astype(float)
        p = counts[counts > 0] / counts.sum()
        entropies.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(entropies))


def test_smaller_dirichlet_alpha_gives_stronger_label_skew() -> None:
    labels = _labels(20_000, seed=1)
    skewed = partition_dirichlet(labels, 20, alpha=0.1, seed=3)
    mild = partition_dirichlet(labels, 20, alpha=100.0, seed=3)
    assert _mean_label_entropy(labels, skewed) < _mean_label_entropy(labels, mild) - 0.5


@settings(max_examples=25, deadline=None)
@given(clients=st.integers(10, 60), per_client=st.integers(2, 4), seed=st.integers(0, 10**6))
def test_shards_give_each_client_at_most_its_shard_count_of_labels(
    clients: int, per_client: int, seed: int
) -> None:
    labels = np.sort(_labels(6000, seed))
    parts = partition_shards(labels, clients, seed=seed, shards_per_client=per_client)
    joined = _assert_disjoint(parts)
    shard_size = len(labels) // (clients * per_client)
    assert len(joined) == shard_size * clients * per_client  # only the remainder is dropped
    assert all(len(p) == shard_size * per_client for p in parts)
    # Shards (at most 300 examples) are shorter than a class (about 600), so each spans
    # at most two labels.
    assert all(len(np.unique(labels[p])) <= 2 * per_client for p in parts)


def test_mcmahan_split_is_200_shards_of_300_two_per_client() -> None:
    labels = np.repeat(np.arange(10), 6000)
    parts = partition_shards(labels, 100, seed=0)
    assert [len(p) for p in parts] == [600] * 100
    distinct = [len(np.unique(labels[p])) for p in parts]
    assert max(distinct) <= 2 and np.mean(distinct) > 1.2


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_same_seed_same_split_other_seed_other_split(scheme: str) -> None:
    labels = _labels(5000, seed=7)
    first = partition(scheme, labels, 10, seed=1)  # type: ignore[arg-type]
    again = partition(scheme, labels, 10, seed=1)  # type: ignore[arg-type]
    other = partition(scheme, labels, 10, seed=2)  # type: ignore[arg-type]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_unknown_scheme_and_bad_alpha_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="Unknown partition"):
        partition("random", _labels(10, 0), 2, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="alpha"):
        partition_dirichlet(_labels(10, 0), 2, alpha=0.0, seed=0)
