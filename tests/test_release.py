"""Releases: one declared version, printed by ``veilfl --version`` and matched by the
changelog, and a wheel that installs and runs in a fresh virtual environment.

The wheel tests build with ``python -m build --wheel --no-isolation`` (the ``build``
and ``setuptools`` of the ``dev`` extra; an isolated build would download setuptools)
from a copy of the checkout, and install the wheel with ``--no-deps`` into a venv made
without system site packages. veilfl's dependencies (torch and the rest, hundreds of
MB) are not downloaded again: a ``.pth`` line puts this interpreter's site-packages
after the new venv's own, as a plain path, so its ``.pth`` files (the editable install
of the checkout) are not run and ``veilfl`` can only come from the wheel. By hand::

    python -m build --wheel --no-isolation --outdir dist .
    python -m venv /tmp/v && /tmp/v/bin/pip install dist/veilfl-*.whl   # with network
    /tmp/v/bin/veilfl demo --rounds 1
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

import veilfl
from veilfl.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_declared_once_and_veilfl_version_prints_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "veilfl.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", veilfl.__version__)
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"veilfl {veilfl.__version__}\n"


def test_the_changelog_has_the_declared_version_and_an_unreleased_section() -> None:
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == "Unreleased"
    assert veilfl.__version__ in headings


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the built wheel, the bin folder of a fresh venv it is installed in)."""
    tmp = tmp_path_factory.mktemp("release")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("veilfl-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python*/site-packages")
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "veilfl_test_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
    )
    return wheel, venv / "bin"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.mark.slow
def test_the_wheel_holds_the_package_data_and_runs_from_a_fresh_venv(
    wheel_venv: tuple[Path, Path], tmp_path: Path
) -> None:
    wheel, bin_dir = wheel_venv
    assert wheel.name == f"veilfl-{veilfl.__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"veilfl/py.typed", "veilfl/server/static/dashboard.html"} <= names
    env = _clean_env()

    where = subprocess.run(
        [bin_dir / "python", "-c", "import veilfl; print(veilfl.__file__)"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    version = subprocess.run(
        [bin_dir / "veilfl", "--version"], env=env, check=True, capture_output=True, text=True
    ).stdout
    demo_help = subprocess.run(
        [bin_dir / "veilfl", "demo", "--help"], env=env, check=True, capture_output=True, text=True
    ).stdout

    assert Path(where).is_relative_to(bin_dir.parent)
    assert version == f"veilfl {veilfl.__version__}\n"
    assert demo_help.startswith("usage: veilfl demo")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_demo_runs_from_the_wheel(wheel_venv: tuple[Path, Path], tmp_path: Path) -> None:
    _, bin_dir = wheel_venv
    run_dir = tmp_path / "demo"

    done = subprocess.run(
        [bin_dir / "veilfl", "demo", "--rounds", "1", "--run-dir", str(run_dir)],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=540,
    )

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "finished 1 rounds" in done.stdout
    assert (run_dir / "metrics.json").exists()
