"""The examples in examples/ run as documented, with warnings as errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _run(name: str) -> list[float]:
    """Run an example with every warning an error; return each round's accuracy."""
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == "", result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("round")]
    return [float(line.rsplit(" ", 1)[1]) for line in lines]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_custom_model_example_federates_and_learns() -> None:
    accuracies = _run("custom_model.py")
    assert len(accuracies) == 5
    assert accuracies[-1] > 0.8 and accuracies[-1] > accuracies[0]


def test_custom_model_example_is_as_short_as_the_readme_says() -> None:
    code = [
        line
        for line in (EXAMPLES / "custom_model.py").read_text().splitlines()
        if line.strip() and not line.startswith(("import ", "from ", '"""'))
    ]
    assert len(code) <= 25


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_tabular_example_learns_the_breast_cancer_set() -> None:
    accuracies = _run("tabular_breast_cancer.py")
    assert len(accuracies) == 10
    assert max(accuracies[-3:]) > 0.9


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_secure_federation_example_runs_two_secure_rounds_through_the_public_api() -> None:
    source = (EXAMPLES / "secure_federation.py").read_text()
    internal = [line for line in source.splitlines() if line.startswith("from veilfl")]

    accuracies = _run("secure_federation.py")

    assert internal == []  # `import veilfl` names only
    assert len(accuracies) == 2
    assert all(0.0 <= accuracy <= 1.0 for accuracy in accuracies)
