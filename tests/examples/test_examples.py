"""The examples in examples/ run as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.timeout(120)
def test_custom_model_example_federates_and_learns() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_model.py")],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("round")]
    assert len(lines) == 5
    accuracies = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert accuracies[-1] > 0.8
