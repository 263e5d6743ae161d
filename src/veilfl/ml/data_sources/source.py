"""The :class:`DataSource` protocol: where a data set comes from."""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

import numpy as np

from veilfl.ml.datasets import ArrayDataset

__all__ = ["DataSource", "data_set_digest"]


@runtime_checkable
class DataSource(Protocol):
    """A data set a party reads whole: a table, an image folder, MNIST, a Python object.

    A source only reads; what a client trains and evaluates on is cut from what it
    reads (:func:`~veilfl.ml.data_sources.local_data_from`), and a simulation
    partitions it (:func:`~veilfl.ml.data_sources.partitioned_local_data`).

    Attributes:
        description: Names the data in messages (``breast_cancer.csv``).
        default_eval_fraction: The share held out for evaluation when none is chosen.
    """

    @property
    def description(self) -> str:
        """Names the data in messages."""
        ...

    @property
    def default_eval_fraction(self) -> float:
        """The share of examples held out for evaluation when none is chosen."""
        ...

    def load(self) -> ArrayDataset:
        """Read the data set: float32 examples of one shape and int64 labels.

        Raises:
            DataError: (one line) if the data cannot be read, saying what to fix.
            ConfigurationError: if reading it needs a package that is not installed.
        """
        ...


def data_set_digest(data: ArrayDataset) -> str:
    """A data set's identity: SHA-256 (hex) of its examples' shape and float32
    little-endian bytes and of its int64 labels. The same examples in the same order
    give the same digest wherever they were read from (a moved file keeps it, an
    edited one gets a new one)."""
    digest = hashlib.sha256()
    digest.update(repr(data.images.shape).encode())
    digest.update(np.ascontiguousarray(data.images, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(data.labels, dtype="<i8").tobytes())
    return digest.hexdigest()
