"""Write scikit-learn's breast-cancer set (569 tumours, 30 measurements each) as CSV
files, the way hospitals would hold it:

* ``FOLDER/breast_cancer.csv``: 455 rows to train on (``veilfl simulate`` splits them);
* ``FOLDER/hospitals/hospital-I.csv``: the same rows split across ``--hospitals``
  hospitals, one file each (``veilfl client --data``, ``veilfl demo --data``);
* ``FOLDER/test.csv``: 114 held-out rows the coordinator evaluates on (``--eval-data``).

The features are standardised with the training rows' statistics (statistics the
hospitals would agree on beforehand). Column ``label``: 0 malignant, 1 benign.

Run: python write_data.py data [--hospitals 3]
(needs scikit-learn: `pip install ".[examples]"` in the veilfl checkout)
"""

import argparse
import csv
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer


def write(path: Path, header: list[str], features: np.ndarray, labels: np.ndarray) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row, label in zip(features, labels, strict=True):
            writer.writerow([f"{value:.6g}" for value in row] + [int(label)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--hospitals", type=int, default=3)
    args = parser.parse_args()
    data = load_breast_cancer()
    order = np.random.default_rng(0).permutation(len(data.target))  # shuffle once
    features, labels = data.data[order], data.target[order]
    train, test = slice(0, 455), slice(455, None)
    mean, std = features[train].mean(axis=0), features[train].std(axis=0)
    features = (features - mean) / std
    header = [str(name) for name in data.feature_names] + ["label"]
    (args.folder / "hospitals").mkdir(parents=True, exist_ok=True)
    write(args.folder / "breast_cancer.csv", header, features[train], labels[train])
    write(args.folder / "test.csv", header, features[test], labels[test])
    rows = np.array_split(np.arange(455), args.hospitals)
    for number, part in enumerate(rows):
        path = args.folder / "hospitals" / f"hospital-{number}.csv"
        write(path, header, features[train][part], labels[train][part])
    print(f"wrote {args.folder}/breast_cancer.csv, test.csv and {args.hospitals} hospitals/")


if __name__ == "__main__":
    main()
