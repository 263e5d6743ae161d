"""``veilfl new NAME`` writes a project whose README commands run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from veilfl.cli.main import main

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_new_project_simulates_its_own_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["new", "my-proj"]) == 0
    project = tmp_path / "my-proj"
    assert (project / "my_proj" / "learner.py").is_file()
    readme = (project / "README.md").read_text()
    assert "veilfl simulate --config veilfl.toml" in readme
    assert "veilfl demo --config veilfl.toml" in readme
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "veilfl",
            "simulate",
            "--config",
            "veilfl.toml",
            "--rounds",
            "1",
            "--examples-per-client",
            "20",
            "--test-examples",
            "100",
            "--run-dir",
            "runs/s",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "simulating 10 clients" in result.stdout
    assert (project / "runs" / "s" / "metrics.json").is_file()


def test_an_existing_folder_or_bad_name_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").mkdir()
    assert main(["new", "taken"]) == 1
    assert capsys.readouterr().err == ("veilfl: error: taken exists already; choose a new name.\n")
    assert main(["new", "9lives"]) == 1
    assert "cannot name a project" in capsys.readouterr().err
