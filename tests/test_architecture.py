"""The layout shows the architecture, and a test keeps it so.

* The pure core (``crypto``, ``strategy``, ``privacy``, ``secagg``, ``auth``,
  ``protocol`` and the shared types) imports no transport, storage, torch or edge, and
  reads no clock.
* Inside the core, dependencies point one way: types <- crypto, strategy <- privacy <-
  secagg, auth <- protocol.
* Edges (``server``, ``aggregator``, ``client``, ``sim``) never import each other; what
  they share lives in ``transport`` (HTTP) or below.
* No two top-level packages import each other.
* Secrets and noise never come from ``numpy.random``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import veilfl

PACKAGE = Path(veilfl.__file__).parent
CORE = ("protocol", "strategy", "crypto", "secagg", "privacy", "auth")
CORE_FILES = ("tensors.py", "errors.py", "declared.py")
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
    "time",
    "datetime",
    "veilfl.server",
    "veilfl.client",
    "veilfl.aggregator",
    "veilfl.sim",
    "veilfl.cli",
    "veilfl.ml",
    "veilfl.transport",
    "veilfl.wire",
}
#: Inside the core, each layer may import only the layers listed for it (and itself).
CORE_LAYERS: dict[str, set[str]] = {
    "tensors": {"errors"},
    "errors": set(),
    "declared": {"errors"},
    "crypto": {"errors"},
    "strategy": {"errors", "tensors", "declared"},
    "privacy": {"errors", "crypto", "declared"},
    "auth": {"errors", "crypto"},
    "secagg": {"errors", "tensors", "crypto", "privacy", "strategy", "declared"},
    "protocol": {
        "errors",
        "tensors",
        "declared",
        "crypto",
        "privacy",
        "strategy",
        "secagg",
        "auth",
    },
}
EDGES = ("server", "aggregator", "client", "sim")
SECRET_RANDOMNESS = ("secagg", "privacy", "crypto", "auth")


def _modules(folder: str) -> list[Path]:
    path = PACKAGE / folder
    return sorted(path.glob("*.py")) if path.is_dir() else [PACKAGE / f"{folder}.py"]


def _core_modules() -> list[Path]:
    files = [PACKAGE / name for name in CORE_FILES]
    for folder in CORE:
        files.extend(_modules(folder))
    return files


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _top_level(module: str) -> str | None:
    """``veilfl.x.y`` -> ``x`` (a module file ``veilfl/x.py`` counts as package ``x``)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "veilfl" and len(parts) > 1 else None


def _violates(module: str) -> bool:
    return any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN_IN_CORE)


def test_core_modules_import_no_edge_io_clock_or_torch() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(m for m in _imports(path) if _violates(m))
        for path in _core_modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_architecture_check_would_catch_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import asyncio\nimport time\nfrom veilfl.server.app import create_app\n")
    assert {m for m in _imports(sample) if _violates(m)} == {
        "asyncio",
        "time",
        "veilfl.server.app",
    }


def test_core_layers_depend_only_downward() -> None:
    offenders: dict[str, list[str]] = {}
    for layer, allowed in CORE_LAYERS.items():
        for path in _modules(layer):
            used = {_top_level(m) for m in _imports(path)} - {None, layer}
            bad = sorted(str(u) for u in used if u not in allowed)
            if bad:
                offenders[str(path.relative_to(PACKAGE))] = bad
    assert offenders == {}


def test_no_edge_imports_another_edge() -> None:
    offenders: dict[str, list[str]] = {}
    for edge in EDGES:
        for path in _modules(edge):
            used = {_top_level(m) for m in _imports(path)}
            bad = sorted(str(u) for u in used if u in EDGES and u != edge)
            if bad:
                offenders[str(path.relative_to(PACKAGE))] = bad
    assert offenders == {}


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        package = relative.parts[0].removesuffix(".py")
        if package == "__init__":
            continue
        used = {_top_level(m) for m in _imports(path)} - {None, package}
        graph.setdefault(package, set()).update(str(u) for u in used)
    return graph


def test_no_two_packages_import_each_other() -> None:
    graph = _package_graph()
    cycles = sorted(
        (a, b) for a, uses in graph.items() for b in uses if a < b and a in graph.get(b, set())
    )
    assert cycles == []


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
