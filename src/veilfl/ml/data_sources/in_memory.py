"""Any in-memory ``torch.utils.data.Dataset`` of ``(example, label)`` pairs as a data
source (from Python: the command line reads files)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from veilfl.errors import DataError
from veilfl.ml.data_sources.settings import DEFAULT_EVAL_FRACTION
from veilfl.ml.datasets import ArrayDataset

__all__ = ["TorchDatasetSource"]


@dataclass(frozen=True, eq=False)
class TorchDatasetSource:
    """A map-style ``torch.utils.data.Dataset`` (anything with ``len`` and indexing)
    whose items are ``(example, label)``: examples are tensors or arrays of one
    shape, labels integer class numbers 0..K-1. It is read once, into memory.

    Attributes:
        dataset: The data set.
        name: Names it in messages.
        default_eval_fraction: The share a client holds out for evaluation by default.
    """

    dataset: Any
    name: str = "in-memory data set"
    default_eval_fraction: float = DEFAULT_EVAL_FRACTION

    @property
    def description(self) -> str:
        return self.name

    def load(self) -> ArrayDataset:
        import torch

        count = len(self.dataset)
        if count == 0:
            raise DataError(f"The {self.name} is empty.")
        examples: list[np.ndarray] = []
        labels: list[int] = []
        for index in range(count):
            item = self.dataset[index]
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise DataError(f"Item {index} of the {self.name} is not an (example, label) pair.")
            example, label = item
            if isinstance(example, torch.Tensor):
                example = example.detach().cpu().numpy()
            array = np.asarray(example, dtype=np.float32)
            if examples and array.shape != examples[0].shape:
                raise DataError(
                    f"Item {index} of the {self.name} has shape {array.shape}, item 0 "
                    f"{examples[0].shape}; every example needs one shape."
                )
            examples.append(array)
            labels.append(int(label.item() if isinstance(label, torch.Tensor) else label))
        return ArrayDataset(
            images=np.stack(examples).astype(np.float32, copy=False),
            labels=np.array(labels, dtype=np.int64),
        )
