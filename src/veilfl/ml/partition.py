"""Splitting a data set across clients, deterministically for a seed.

* :func:`partition_iid` — uniformly at random, sizes within one of each other.
* :func:`partition_dirichlet` — label skew: each class is spread over clients in
  proportions drawn from Dirichlet(alpha) (Hsu, Qi and Brown 2019); small alpha,
  strong skew.
* :func:`partition_shards` — the pathological non-IID split of McMahan et al. 2017:
  sort by label, cut into ``num_clients * shards_per_client`` equal shards and give
  each client ``shards_per_client`` of them at random (60,000 images over 100
  clients: 200 shards of 300). Examples left over by the integer division (fewer
  than the number of shards) are dropped.

Each returns one index array per client; the arrays are disjoint.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError, DataError

__all__ = [
    "PartitionScheme",
    "partition",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
]

PartitionScheme = Literal["iid", "dirichlet", "shards"]
IndexArray = npt.NDArray[np.int64]


def _check(num_examples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ConfigurationError("A partition needs at least one client.")
    if num_clients > num_examples:
        raise ConfigurationError(
            f"Cannot give {num_clients} clients at least one of {num_examples} examples."
        )


def partition_iid(num_examples: int, num_clients: int, *, seed: int) -> list[IndexArray]:
    """Shuffle and deal the examples out; sizes differ by at most one."""
    _check(num_examples, num_clients)
    order = np.random.default_rng(seed).permutation(num_examples).astype(np.int64)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def partition_dirichlet(
    labels: npt.NDArray[np.integer],
    num_clients: int,
    *,
    alpha: float,
    seed: int,
    min_examples_per_client: int = 1,
    max_attempts: int = 100,
) -> list[IndexArray]:
    """Label-skewed split: class c goes to clients in Dirichlet(alpha) proportions.

    Redraws (up to ``max_attempts``) until every client has ``min_examples_per_client``.

    Raises:
        ConfigurationError: for alpha <= 0 or too many clients.
        DataError: if no draw gives every client the minimum.
    """
    _check(len(labels), num_clients)
    if not alpha > 0:
        raise ConfigurationError("The Dirichlet alpha must be positive.")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_attempts):
        parts: list[list[IndexArray]] = [[] for _ in range(num_clients)]
        for label in classes:
            members = rng.permutation(np.flatnonzero(labels == label)).astype(np.int64)
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for client, piece in enumerate(np.split(members, cuts)):
                parts[client].append(piece)
        result = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in result) >= min_examples_per_client:
            return result
    raise DataError(
        f"No Dirichlet(alpha={alpha}) split in {max_attempts} tries gave each of "
        f"{num_clients} clients {min_examples_per_client} examples; raise alpha or lower "
        "the minimum."
    )


def partition_shards(
    labels: npt.NDArray[np.integer],
    num_clients: int,
    *,
    seed: int,
    shards_per_client: int = 2,
) -> list[IndexArray]:
    """McMahan et al.'s pathological non-IID split (sort by label, deal out shards)."""
    num_shards = num_clients * shards_per_client
    _check(len(labels), num_shards)
    if shards_per_client < 1:
        raise ConfigurationError("shards_per_client must be at least 1.")
    shard_size = len(labels) // num_shards
    by_label = np.argsort(labels, kind="stable").astype(np.int64)
    shards = by_label[: shard_size * num_shards].reshape(num_shards, shard_size)
    order = np.random.default_rng(seed).permutation(num_shards)
    return [
        np.sort(shards[order[c * shards_per_client : (c + 1) * shards_per_client]].reshape(-1))
        for c in range(num_clients)
    ]


def partition(
    scheme: PartitionScheme,
    labels: npt.NDArray[np.integer],
    num_clients: int,
    *,
    seed: int,
    alpha: float = 0.5,
    shards_per_client: int = 2,
) -> list[IndexArray]:
    """Split by ``scheme``: ``"iid"``, ``"dirichlet"`` or ``"shards"``."""
    if scheme == "iid":
        return partition_iid(len(labels), num_clients, seed=seed)
    if scheme == "dirichlet":
        return partition_dirichlet(labels, num_clients, alpha=alpha, seed=seed)
    if scheme == "shards":
        return partition_shards(labels, num_clients, seed=seed, shards_per_client=shards_per_client)
    raise ConfigurationError(
        f"Unknown partition scheme {scheme!r}; use 'iid', 'dirichlet' or 'shards'."
    )
