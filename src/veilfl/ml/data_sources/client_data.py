"""What a client trains and evaluates on, cut from what a source reads: one client's
:class:`~veilfl.ml.local_data.LocalData`, or every simulated client's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

from veilfl.ml.data_sources.source import DataSource
from veilfl.ml.datasets import ArrayDataset, ClientPartitions
from veilfl.ml.local_data import LocalData, hold_out

__all__ = ["PartitionedData", "local_data_from", "partitioned_local_data"]


def local_data_from(
    source: DataSource, *, eval_fraction: float | None = None, seed: int = 0
) -> LocalData[ArrayDataset]:
    """Read ``source`` and hold out ``eval_fraction`` of it (None: the source's
    default) for evaluation, at random for ``seed``.

    Raises:
        DataError: if the source cannot be read or the fraction is outside [0, 1).
    """
    fraction = source.default_eval_fraction if eval_fraction is None else eval_fraction
    return hold_out(source.load(), fraction=fraction, seed=seed)


class PartitionedData(Sequence[LocalData[ArrayDataset]]):
    """Every simulated client's data, as index arrays into one data set: client ``i``'s
    :class:`~veilfl.ml.local_data.LocalData` is made (copied out) only when asked for,
    so a simulator or executor takes this sequence as its ``client_data``.

    Args:
        train: Client ``i``'s training examples at position ``i``.
        evaluation: Client ``i``'s held-out examples at position ``i`` (None when no
            client holds any out).
    """

    def __init__(self, train: ClientPartitions, evaluation: ClientPartitions | None) -> None:
        self.train = train
        self.evaluation = evaluation

    def __len__(self) -> int:
        return len(self.train)

    @overload
    def __getitem__(self, index: int) -> LocalData[ArrayDataset]: ...

    @overload
    def __getitem__(self, index: slice) -> list[LocalData[ArrayDataset]]: ...

    def __getitem__(
        self, index: int | slice
    ) -> LocalData[ArrayDataset] | list[LocalData[ArrayDataset]]:
        if isinstance(index, slice):
            return [self.client(i) for i in range(len(self))[index]]
        return self.client(index)

    def client(self, index: int) -> LocalData[ArrayDataset]:
        """Client ``index``'s data."""
        return LocalData(
            train=self.train[index],
            evaluation=None if self.evaluation is None else self.evaluation[index],
        )


def partitioned_local_data(
    data: ArrayDataset,
    parts: Sequence[npt.NDArray[np.integer]],
    *,
    eval_fraction: float,
    seed: int = 0,
) -> PartitionedData:
    """Each client's part of ``data``, with ``eval_fraction`` of each part held out for
    evaluation as :func:`~veilfl.ml.local_data.hold_out` holds it out (client ``i``'s
    draw seeded by ``seed + i``).

    Raises:
        DataError: for an index outside ``data`` or a fraction outside [0, 1).
    """
    if eval_fraction == 0:
        return PartitionedData(train=ClientPartitions(data, parts), evaluation=None)
    train: list[npt.NDArray[np.int64]] = []
    evaluation: list[npt.NDArray[np.int64]] = []
    for number, part in enumerate(parts):
        index = np.asarray(part, dtype=np.int64)
        # hold_out splits a data set; split one whose labels are the part's indices.
        carrier = ArrayDataset(images=np.zeros((len(index), 1), np.float32), labels=index)
        split = hold_out(carrier, fraction=eval_fraction, seed=seed + number)
        train.append(split.train.labels)
        evaluation.append(
            np.zeros(0, np.int64) if split.evaluation is None else split.evaluation.labels
        )
    return PartitionedData(
        train=ClientPartitions(data, train), evaluation=ClientPartitions(data, evaluation)
    )
