"""Splitting a data set across clients, deterministically for a seed.

* :func:`partition_iid` — uniformly at random; sizes within one of each other.
* :func:`partition_dirichlet` — label skew: each class is spread over the clients in
  proportions drawn from Dirichlet(alpha) (Hsu, Qi and Brown 2019, "Measuring the
  Effects of Non-Identical Data Distribution for Federated Visual Classification");
  small alpha, strong skew.
* :func:`partition_shards` — the pathological non-IID split of McMahan et al. 2017
  ("Communication-Efficient Learning of Deep Networks from Decentralized Data"): sort
  by label, cut into ``num_clients * shards_per_client`` shards and give each client
  ``shards_per_client`` of them at random (60,000 images over 100 clients: 200 shards
  of 300, two per client).

Each returns one sorted int64 index array per client. The arrays are disjoint and
together hold every example: nothing is dropped. The seed feeds
``np.random.default_rng``: a partition is public, not secret, randomness.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError, DataError

__all__ = [
    "IndexArray",
    "PartitionScheme",
    "partition",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
]

PartitionScheme = Literal["iid", "dirichlet", "shards"]
IndexArray = npt.NDArray[np.int64]


def _check_clients(num_examples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ConfigurationError(f"A partition needs at least one client, not {num_clients}.")
    if num_clients > num_examples:
        raise ConfigurationError(
            f"Cannot give each of {num_clients} clients an example from only {num_examples}; "
            "use fewer clients or more data."
        )


def _as_labels(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
    array = np.asarray(labels)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise DataError(
            f"Labels must be a 1-D array of integers; got shape {array.shape} and dtype "
            f"{array.dtype}."
        )
    return array


def partition_iid(num_examples: int, num_clients: int, *, seed: int) -> list[IndexArray]:
    """Shuffle the examples and deal them out evenly.

    Args:
        num_examples: Size of the data set; indices run over ``0..num_examples-1``.
        num_clients: Number of parts.
        seed: Seeds the shuffle.

    Returns:
        One sorted index array per client; sizes differ by at most one.

    Raises:
        ConfigurationError: for fewer than one client or more clients than examples.
    """
    _check_clients(num_examples, num_clients)
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
    """Label-skewed split: each class goes to the clients in Dirichlet(alpha) shares.

    For every class, the class's examples are shuffled and cut at the cumulative sums
    of a fresh Dirichlet(alpha, ..., alpha) draw over the clients (Hsu et al. 2019).
    If some client ends up with fewer than ``min_examples_per_client`` examples, the
    whole split is drawn again, up to ``max_attempts`` times.

    Args:
        labels: One integer label per example.
        num_clients: Number of parts.
        alpha: Concentration; small (0.1) gives each client a few classes, large
            (100) approaches an IID split.
        seed: Seeds every draw.
        min_examples_per_client: Smallest acceptable part.
        max_attempts: Draws to try before giving up.

    Returns:
        One sorted index array per client.

    Raises:
        ConfigurationError: for a non-positive alpha, too many clients or an
            unreachable minimum.
        DataError: if no draw in ``max_attempts`` gives every client the minimum.
    """
    labels = _as_labels(labels)
    _check_clients(len(labels), num_clients)
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ConfigurationError(f"The Dirichlet alpha must be a positive number, not {alpha}.")
    if min_examples_per_client < 0 or min_examples_per_client * num_clients > len(labels):
        raise ConfigurationError(
            f"Cannot give {num_clients} clients {min_examples_per_client} examples each from "
            f"{len(labels)}; lower min_examples_per_client."
        )
    if max_attempts < 1:
        raise ConfigurationError(f"max_attempts must be at least 1, not {max_attempts}.")
    rng = np.random.default_rng(seed)
    members_by_class = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    for _ in range(max_attempts):
        parts: list[list[IndexArray]] = [[] for _ in range(num_clients)]
        for members in members_by_class:
            shuffled = rng.permutation(members).astype(np.int64)
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(shuffled)).astype(np.int64)
            for client, piece in enumerate(np.split(shuffled, cuts)):
                parts[client].append(piece)
        result = [np.sort(np.concatenate(pieces)) for pieces in parts]
        if min(len(part) for part in result) >= min_examples_per_client:
            return result
    raise DataError(
        f"No Dirichlet(alpha={alpha}) split in {max_attempts} draws gave each of "
        f"{num_clients} clients {min_examples_per_client} examples; raise alpha, use fewer "
        "clients or lower min_examples_per_client."
    )


def partition_shards(
    labels: npt.NDArray[np.integer],
    num_clients: int,
    *,
    seed: int,
    shards_per_client: int = 2,
) -> list[IndexArray]:
    """McMahan et al. 2017's pathological non-IID split: deal out label-sorted shards.

    The examples are sorted by label (ties by index), cut into
    ``num_clients * shards_per_client`` contiguous shards, and each client receives
    ``shards_per_client`` shards chosen at random without replacement. When the number
    of examples is not a multiple of the number of shards, the remainder is spread:
    the first shards (in label order) are one example longer, so no example is dropped
    and shard sizes differ by at most one. A shard no longer than the smallest class
    spans at most two labels, so a client then sees at most ``2 * shards_per_client``
    labels; with MNIST's 60,000 images over 100 clients, most clients see two.

    Args:
        labels: One integer label per example.
        num_clients: Number of parts.
        seed: Seeds the assignment of shards.
        shards_per_client: Shards each client receives.

    Returns:
        One sorted index array per client.

    Raises:
        ConfigurationError: for fewer than one shard per client, or more shards than
            examples.
    """
    labels = _as_labels(labels)
    if shards_per_client < 1:
        raise ConfigurationError(f"shards_per_client must be at least 1, not {shards_per_client}.")
    _check_clients(len(labels), num_clients)
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise ConfigurationError(
            f"Cannot cut {len(labels)} examples into {num_shards} non-empty shards "
            f"({num_clients} clients x {shards_per_client}); lower shards_per_client or "
            "use fewer clients."
        )
    by_label = np.argsort(labels, kind="stable").astype(np.int64)
    shards = np.array_split(by_label, num_shards)
    picks = np.random.default_rng(seed).permutation(num_shards).reshape(num_clients, -1)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in picks]


def partition(
    scheme: PartitionScheme,
    labels: npt.NDArray[np.integer],
    num_clients: int,
    *,
    seed: int,
    alpha: float = 0.5,
    shards_per_client: int = 2,
) -> list[IndexArray]:
    """Split a data set with the named scheme.

    Args:
        scheme: ``"iid"`` (:func:`partition_iid`), ``"dirichlet"``
            (:func:`partition_dirichlet`) or ``"shards"`` (:func:`partition_shards`).
        labels: One integer label per example (only their number matters for ``"iid"``).
        num_clients: Number of parts.
        seed: Seeds the split.
        alpha: Dirichlet concentration, for ``"dirichlet"``.
        shards_per_client: Shards per client, for ``"shards"``.

    Returns:
        One sorted index array per client.

    Raises:
        ConfigurationError: for an unknown scheme or invalid settings.
        DataError: as the chosen partitioner does.
    """
    if scheme == "iid":
        return partition_iid(len(_as_labels(labels)), num_clients, seed=seed)
    if scheme == "dirichlet":
        return partition_dirichlet(labels, num_clients, alpha=alpha, seed=seed)
    if scheme == "shards":
        return partition_shards(labels, num_clients, seed=seed, shards_per_client=shards_per_client)
    raise ConfigurationError(
        f"Unknown partition scheme {scheme!r}; use 'iid', 'dirichlet' or 'shards'."
    )
