"""One client's own data: the split it trains on and the split it evaluates on.

Every data source (:mod:`veilfl.ml.data_sources`: MNIST partitions, tables, image
folders, an in-memory data set) hands a client a :class:`LocalData`. Training reads
:attr:`LocalData.train`; federated evaluation runs the global model over
:attr:`LocalData.evaluation`, where the data is, and only the example-weighted
metrics leave the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from veilfl.errors import DataError
from veilfl.ml.datasets import ArrayDataset

__all__ = ["LocalData", "as_local_data", "hold_out"]

DataT = TypeVar("DataT")


@dataclass(frozen=True)
class LocalData(Generic[DataT]):
    """A client's data.

    Attributes:
        train: What the client trains on.
        evaluation: Held-out examples the client evaluates the global model on
            (federated evaluation), or None when it evaluates nothing.
    """

    train: DataT
    evaluation: DataT | None = None


def hold_out(data: ArrayDataset, *, fraction: float, seed: int = 0) -> LocalData[ArrayDataset]:
    """Split ``data`` at random into a training part and an evaluation part holding
    ``round(fraction * len(data))`` examples (at least one when ``fraction`` > 0 and
    the data has two or more examples; none when ``fraction`` is 0).

    Raises:
        DataError: for a fraction outside [0, 1).
    """
    if not 0 <= fraction < 1:
        raise DataError(f"The evaluation fraction must lie in [0, 1); got {fraction}.")
    count = round(fraction * len(data))
    if fraction > 0 and len(data) >= 2:
        count = min(max(count, 1), len(data) - 1)
    if count == 0:
        return LocalData(train=data, evaluation=None)
    order = np.random.default_rng(seed).permutation(len(data))
    return LocalData(train=data.subset(order[count:]), evaluation=data.subset(order[:count]))


def as_local_data(data: DataT | LocalData[DataT]) -> LocalData[DataT]:
    """``data`` as a :class:`LocalData`: a bare data set trains and evaluates nothing
    (``LocalData(train=data, evaluation=None)``)."""
    if isinstance(data, LocalData):
        return data
    return LocalData(train=data, evaluation=None)
