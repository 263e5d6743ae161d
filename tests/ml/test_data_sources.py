"""Data sources: tables, image folders, MNIST and in-memory data sets, chosen by what
``--data`` names, and the client data cut from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.cli.processes import write_tiny_mnist

from veilfl.errors import ConfigurationError, DataError
from veilfl.ml.data_check import check_model_takes
from veilfl.ml.data_sources import (
    CsvSource,
    DataSettings,
    ImageFolderSource,
    MnistSource,
    ParquetSource,
    TorchDatasetSource,
    data_set_digest,
    data_source,
    local_data_from,
    partitioned_local_data,
)
from veilfl.ml.datasets import ArrayDataset


def _table(rows: int = 20, features: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, features)).round(4), rng.integers(0, 3, size=rows)


def _write_csv(path: Path, features: np.ndarray, labels: np.ndarray, *, label_first: bool) -> Path:
    names = [f"x{i}" for i in range(features.shape[1])]
    header = ["label", *names] if label_first else [*names, "label"]
    lines = [",".join(header)]
    for row, label in zip(features, labels, strict=True):
        cells = [repr(float(v)) for v in row]
        lines.append(",".join([str(label), *cells] if label_first else [*cells, str(label)]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("label_first", [True, False])
def test_a_csv_table_reads_features_and_the_label_column(tmp_path: Path, label_first: bool) -> None:
    features, labels = _table()
    path = _write_csv(tmp_path / "t.csv", features, labels, label_first=label_first)

    data = CsvSource(path).load()

    np.testing.assert_allclose(data.images, features.astype(np.float32))
    assert data.labels.tolist() == labels.tolist()


def test_a_headerless_csv_takes_its_last_column_or_a_numbered_one(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("1,0.5,2\n0,1.5,3\n")

    last = CsvSource(path).load()
    first = CsvSource(path, label_column="0").load()

    assert last.labels.tolist() == [2, 3] and last.images.tolist() == [[1, 0.5], [0, 1.5]]
    assert first.labels.tolist() == [1, 0] and first.images.tolist() == [[0.5, 2], [1.5, 3]]


def test_a_named_label_column_is_used_and_a_missing_one_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,kind,b\n1,1,2\n3,0,4\n")

    data = CsvSource(path, label_column="kind").load()
    with pytest.raises(DataError, match=r"no column 'klass'.*a, kind, b"):
        CsvSource(path, label_column="klass").load()

    assert data.labels.tolist() == [1, 0] and data.images.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a,label\n1,0\nx,1\n", "line 3: 'x' is not a number"),
        ("a,label\n1,0.5\n", "whole numbers 0..K-1"),
        ("a,label\n1,0\n2\n", "line 3: 1 columns where the table has 2"),
        ("a,label\n", "no rows"),
    ],
)
def test_a_bad_csv_is_refused_in_one_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)

    with pytest.raises(DataError, match=problem) as caught:
        CsvSource(path).load()

    assert "\n" not in str(caught.value)


def test_a_parquet_table_reads_like_the_same_csv(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    features, labels = _table()
    columns = {f"x{i}": features[:, i] for i in range(features.shape[1])}
    pq.write_table(pa.table({**columns, "label": labels}), tmp_path / "t.parquet")
    csv = _write_csv(tmp_path / "t.csv", features, labels, label_first=False)

    from_parquet = ParquetSource(tmp_path / "t.parquet").load()
    from_csv = CsvSource(csv).load()

    np.testing.assert_array_equal(from_parquet.images, from_csv.images)
    np.testing.assert_array_equal(from_parquet.labels, from_csv.labels)


def _write_images(folder: Path, classes: dict[str, int], *, size: int = 10) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (folder / name).mkdir(parents=True)
        for number in range(count):
            pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{number}.png")
    (folder / "README.txt").write_text("not a class")
    return folder


@pytest.mark.parametrize(("mode", "channels"), [("gray", 1), ("rgb", 3)])
def test_an_image_folder_gives_one_label_per_class_folder(
    tmp_path: Path, mode: str, channels: int
) -> None:
    folder = _write_images(tmp_path / "imgs", {"cat": 2, "dog": 3})

    data = ImageFolderSource(folder, size=8, mode=mode).load()  # type: ignore[arg-type]

    assert data.images.shape == (5, channels, 8, 8)
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert data.labels.tolist() == [0, 0, 1, 1, 1]


def test_numbered_class_folders_keep_their_numbers(tmp_path: Path) -> None:
    folder = _write_images(tmp_path / "imgs", {"2": 1, "7": 1})

    assert ImageFolderSource(folder).load().labels.tolist() == [2, 7]


def test_an_in_memory_torch_dataset_becomes_arrays() -> None:
    examples = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    dataset = torch.utils.data.TensorDataset(examples, torch.tensor([0, 1, 1, 0]))

    data = TorchDatasetSource(dataset).load()

    np.testing.assert_array_equal(data.images, examples.numpy())
    assert data.labels.tolist() == [0, 1, 1, 0]


def test_what_data_names_chooses_the_source(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "t.csv", *_table(), label_first=False)
    folder = _write_images(tmp_path / "imgs", {"a": 1})
    oddly_named = tmp_path / "t.txt"
    oddly_named.write_text(csv.read_text())
    settings = DataSettings(label_column="x0", image_size=5)

    assert data_source(str(csv), settings) == CsvSource(csv, label_column="x0")
    assert data_source(str(folder), settings) == ImageFolderSource(folder, size=5)
    assert data_source(f"csv:{oddly_named}") == CsvSource(oddly_named)
    assert data_source("mnist", mnist_dir=tmp_path) == MnistSource(folder=tmp_path)
    with pytest.raises(DataError, match=r"No data source reads \.txt files"):
        data_source(str(oddly_named))
    with pytest.raises(DataError, match="neither a file nor a folder"):
        data_source(str(tmp_path / "missing.csv"))


def test_tables_hold_out_an_evaluation_split_and_mnist_none(tmp_path: Path) -> None:
    csv = _write_csv(tmp_path / "t.csv", *_table(rows=50), label_first=False)
    mnist = MnistSource(folder=write_tiny_mnist(tmp_path / "mnist"))

    table = local_data_from(CsvSource(csv))
    digits = local_data_from(mnist)
    chosen = local_data_from(CsvSource(csv), eval_fraction=0.5)

    assert table.evaluation is not None and len(table.evaluation) == 10 and len(table.train) == 40
    assert digits.evaluation is None and len(digits.train) == len(mnist.load())
    assert chosen.evaluation is not None and len(chosen.evaluation) == 25


@pytest.mark.parametrize("fraction", [0.0, 0.25])
def test_partitioned_clients_split_each_part_into_train_and_evaluation(fraction: float) -> None:
    data = ArrayDataset(
        images=np.arange(40, dtype=np.float32).reshape(40, 1), labels=np.arange(40) % 2
    )
    parts = [np.arange(0, 20), np.arange(20, 40)]

    clients = partitioned_local_data(data, parts, eval_fraction=fraction, seed=1)

    for number, part in enumerate(parts):
        local = clients.client(number)
        held = [] if local.evaluation is None else local.evaluation.images[:, 0].tolist()
        assert sorted(local.train.images[:, 0].tolist() + held) == part.tolist()
        assert len(held) == round(fraction * len(part))
    assert (clients.evaluation is None) == (fraction == 0)


def test_the_digest_follows_the_examples_not_the_file(tmp_path: Path) -> None:
    features, labels = _table()
    one = CsvSource(_write_csv(tmp_path / "a.csv", features, labels, label_first=False)).load()
    moved = CsvSource(_write_csv(tmp_path / "b.csv", features, labels, label_first=True)).load()
    features[0, 0] += 1
    edited = CsvSource(_write_csv(tmp_path / "c.csv", features, labels, label_first=False)).load()

    assert data_set_digest(one) == data_set_digest(moved)
    assert data_set_digest(one) != data_set_digest(edited)


def _mlp(inputs: int, classes: int = 2) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, 4), torch.nn.ReLU(), torch.nn.Linear(4, classes)
    )


def test_a_model_that_does_not_take_the_data_is_one_line_naming_both_shapes() -> None:
    data = ArrayDataset(images=np.zeros((5, 30), np.float32), labels=np.zeros(5, np.int64))

    with pytest.raises(ConfigurationError) as caught:
        check_model_takes(lambda: _mlp(28), data, data_name="--data t.csv", model_name="m:l")

    message = str(caught.value)
    assert "\n" not in message
    assert "--data t.csv gives examples of shape (30,)" in message
    assert "(28,)" in message and "m:l" in message


def test_labels_beyond_the_models_outputs_are_refused() -> None:
    data = ArrayDataset(images=np.zeros((3, 4), np.float32), labels=np.array([0, 1, 5]))

    with pytest.raises(ConfigurationError, match=r"labels up to 5.*outputs 2 classes"):
        check_model_takes(lambda: _mlp(4), data, data_name="d", model_name="m")
    check_model_takes(lambda: _mlp(4, 6), data, data_name="d", model_name="m")


def test_a_registered_kind_reads_what_kind_path_names(tmp_path: Path) -> None:
    import uuid

    from veilfl.ml.data_sources import register_data_source

    kind = f"kind{uuid.uuid4().hex[:8]}"
    dataset = torch.utils.data.TensorDataset(torch.ones(3, 2), torch.tensor([0, 1, 0]))
    register_data_source(kind, lambda location, _: TorchDatasetSource(dataset, name=location))

    source = data_source(f"{kind}:somewhere")
    with pytest.raises(ConfigurationError, match="registered already"):
        register_data_source(kind, lambda location, _: TorchDatasetSource(dataset))

    assert source.description == "somewhere"
    assert source.load().labels.tolist() == [0, 1, 0]
