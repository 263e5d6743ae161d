"""The README as a user reads it: every name it mentions imports from veilfl, and every
command block of its Quick start and Commands sections runs as written (on a small
MNIST, through a stand-in for the .venv that runs this checkout)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.cli.processes import write_tiny_mnist

import veilfl

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : None if end < 0 else end]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_every_name_the_readme_imports_or_mentions_is_exported() -> None:
    imported: set[str] = set()
    for block in _blocks(README, "python"):
        tree = ast.parse(block.replace("await ", ""))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "veilfl":
                imported.update(alias.name for alias in node.names)
    mentioned = {
        name
        for name in re.findall(r"`veilfl\.(\w+)", README)
        if name != "toml"  # veilfl.toml is a file name
        and importlib.util.find_spec(f"veilfl.{name}") is None  # not a subpackage
    }
    names = imported | mentioned
    assert {"client_ssl_context", "load_or_create_identity", "Learner"} <= names
    for name in sorted(names):
        assert name in veilfl.__all__, name
        assert getattr(importlib.import_module("veilfl"), name) is not None


def test_every_install_line_installs_from_the_checkout() -> None:
    # veilfl is on no package index: `pip install veilfl[...]` would fail for a user.
    from_index = re.compile(r"pip install [^\n`]*?(?<![\w./-])['\"]?veilfl\b")
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*.py")]
    files += (ROOT / "src" / "veilfl").rglob("*.py")
    wrong = [
        f"{path.name}: {m.group(0)}"
        for path in files
        for m in from_index.finditer(path.read_text())
    ]
    assert wrong == []
    (install,) = _blocks(_section("Install as a library"), "bash")
    assert 'pip install ".[mnist]"' in install


def _stand_in_venv(folder: Path) -> Path:
    """A ``.venv`` whose ``veilfl`` runs this checkout, already "installed" for make."""
    bin_dir = folder / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    veilfl_bin = bin_dir / "veilfl"
    veilfl_bin.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m veilfl "$@"\n')
    veilfl_bin.chmod(veilfl_bin.stat().st_mode | stat.S_IXUSR)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, folder / name)
    time.sleep(0.01)
    (folder / ".venv" / ".veilfl-installed").touch()  # newer than pyproject.toml
    return bin_dir


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_command_block_of_quick_start_and_commands_runs(tmp_path: Path) -> None:
    blocks = _blocks(_section("Quick start"), "bash") + _blocks(_section("Commands"), "bash")
    assert len(blocks) >= 3
    assert any("make demo" in b for b in blocks) and any("veilfl new" in b for b in blocks)
    bin_dir = _stand_in_venv(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "VEILFL_MNIST_DIR": str(write_tiny_mnist(tmp_path / "mnist")),  # the reduced size
        "OMP_NUM_THREADS": "1",
        "DEMO_FLAGS": "--rounds 1 --clients 2 --aggregators 2",  # make demo, smaller
    }
    for block in blocks:
        result = subprocess.run(
            ["bash", "-e", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        assert result.returncode == 0, f"{block}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (tmp_path / "model.safetensors").is_file()
    assert (tmp_path / "my_project" / "veilfl.toml").is_file()
