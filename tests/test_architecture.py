"""Dependencies point inward: the pure core imports no transport, storage or torch."""

from __future__ import annotations

import ast
from pathlib import Path

import veilfl

PACKAGE = Path(veilfl.__file__).parent
CORE = ("protocol", "strategy", "crypto", "secagg", "privacy", "auth")
CORE_FILES = ("tensors.py", "errors.py")
FORBIDDEN_IN_CORE = {
    "asyncio",
    "socket",
    "sqlite3",
    "subprocess",
    "httpx",
    "fastapi",
    "starlette",
    "uvicorn",
    "torch",
    "veilfl.server",
    "veilfl.client",
    "veilfl.aggregator",
    "veilfl.sim",
    "veilfl.cli",
    "veilfl.ml",
}
SECRET_RANDOMNESS = ("secagg", "privacy", "crypto", "auth")


def _core_modules() -> list[Path]:
    files = [PACKAGE / name for name in CORE_FILES]
    for folder in CORE:
        files.extend(sorted((PACKAGE / folder).glob("*.py")))
    return files


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _violates(module: str) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN_IN_CORE)


def test_core_modules_import_no_edge_io_or_torch() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(m for m in _imports(path) if _violates(m))
        for path in _core_modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_architecture_check_would_catch_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import asyncio\nfrom veilfl.server.app import create_app\n")
    assert {m for m in _imports(sample) if _violates(m)} == {"asyncio", "veilfl.server.app"}


def _uses_numpy_random(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "random"
            and isinstance(node.value, ast.Name)
            and node.value.id in {"np", "numpy"}
        ):
            return True
        if isinstance(node, ast.ImportFrom) and node.module and "numpy.random" in node.module:
            return True
        if isinstance(node, ast.Import) and any("numpy.random" in a.name for a in node.names):
            return True
    return False


def test_secret_and_noise_randomness_never_comes_from_numpy_random() -> None:
    for folder in SECRET_RANDOMNESS:
        for path in sorted((PACKAGE / folder).glob("*.py")):
            assert not _uses_numpy_random(path.read_text()), path


def test_the_randomness_check_would_catch_numpy_random() -> None:
    assert _uses_numpy_random("import numpy as np\nnoise = np.random.normal(size=3)\n")
    assert _uses_numpy_random("from numpy.random import default_rng\n")
    assert not _uses_numpy_random('"""Never numpy.random."""\nimport secrets\n')
