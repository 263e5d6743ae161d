"""The bring-your-own-data examples: the breast-cancer CSV files through ``veilfl
simulate`` and ``veilfl demo`` (secure aggregation on, each demo client reading its own
CSV file with ``veilfl client --data``), and an image folder through ``veilfl simulate``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from veilfl.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
BREAST_CANCER = ROOT / "examples" / "breast_cancer_csv"
IMAGE_FOLDER = ROOT / "examples" / "image_folder"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def _script(folder: Path, name: str, *args: str) -> None:
    """Run an example's data-writing script, every warning an error."""
    result = subprocess.run(
        [sys.executable, "-W", "error", str(folder / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture
def breast_cancer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example's CSV files, in ``tmp_path/data``, with its learner importable."""
    _script(BREAST_CANCER, "write_data.py", str(tmp_path / "data"), "--hospitals", "3")
    monkeypatch.syspath_prepend(str(BREAST_CANCER))
    yield tmp_path / "data"
    sys.modules.pop("breast_cancer_learner", None)


@pytest.mark.slow
def test_the_breast_cancer_csv_simulation_learns_under_secure_aggregation(
    breast_cancer: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"

    code = main(
        [
            "simulate",
            "--learner",
            "breast_cancer_learner:learner",
            "--data",
            str(breast_cancer / "breast_cancer.csv"),
            "--eval-data",
            str(breast_cancer / "test.csv"),
            "--num-clients",
            "3",
            "--rounds",
            "3",
            "--lr",
            "0.05",
            "--batch-size",
            "16",
            "--secure",
            "--run-dir",
            str(run),
            "--log-level",
            "error",
        ]
    )

    rounds = json.loads((run / "metrics.json").read_text())
    assert code == 0
    assert [r["round_id"] for r in rounds] == [1, 2, 3]
    assert rounds[-1]["test_accuracy"] > 0.85
    # The sampled clients evaluated each round's starting model on their held-out fifth.
    assert all(r["federated_examples"] > 0 for r in rounds)
    assert rounds[-1]["federated_accuracy"] > 0.85


def test_the_image_folder_example_runs_through_simulate(tmp_path: Path) -> None:
    _script(IMAGE_FOLDER, "write_images.py", str(tmp_path / "shapes"), "--per-class", "12")
    run = tmp_path / "run"

    code = main(
        [
            "simulate",
            "--data",
            str(tmp_path / "shapes" / "train"),
            "--eval-data",
            str(tmp_path / "shapes" / "test"),
            "--num-clients",
            "3",
            "--rounds",
            "2",
            "--max-batches",
            "2",
            "--run-dir",
            str(run),
            "--log-level",
            "error",
        ]
    )

    rounds = json.loads((run / "metrics.json").read_text())
    assert code == 0
    assert [r["round_id"] for r in rounds] == [1, 2]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rounds)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_the_breast_cancer_demo_clients_train_on_their_own_csv_files(
    breast_cancer: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "veilfl",
            "demo",
            "--learner",
            "breast_cancer_learner:learner",
            "--data",
            str(breast_cancer / "hospitals"),
            "--clients",
            "3",
            "--aggregators",
            "3",
            "--rounds",
            "2",
            "--lr",
            "0.05",
            "--batch-size",
            "16",
            "--run-dir",
            str(run),
        ],
        cwd=BREAST_CANCER,
        capture_output=True,
        text=True,
        timeout=450,
        check=False,
        env=ENV,
    )

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "secure aggregation" in result.stdout
    rounds = json.loads((run / "metrics.json").read_text())
    assert [r["round_id"] for r in rounds] == [1, 2]
    # No --eval-data: the coordinator evaluates nothing, and says no ERROR about it.
    assert all(r["test_accuracy"] is None and r["test_loss"] is None for r in rounds)
    assert (run / "metrics.csv").is_file()
    logs = {path.name: path.read_text() for path in (run / "logs").glob("*.log")}
    assert not [name for name, text in logs.items() if " ERROR " in text]
    for number in range(3):
        own = breast_cancer / "hospitals" / f"hospital-{number}.csv"
        assert f"loaded {own}:" in logs[f"client-{number}.log"]
    # Federated evaluation: each client evaluated the model it received on its own
    # held-out fifth (30 of its 151 or 152 rows), and the aggregators summed it securely.
    for metrics in rounds:
        assert metrics["federated_examples"] in (60, 90)  # two or three clients' 30 rows
        assert 0.0 <= metrics["federated_accuracy"] <= 1.0
        assert metrics["federated_loss"] > 0.0
