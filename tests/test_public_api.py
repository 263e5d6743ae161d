"""The package's exported names exist, and every module declares what it exports."""

from __future__ import annotations

import importlib
import pkgutil

import veilfl


def test_every_exported_name_resolves() -> None:
    for name in veilfl.__all__:
        assert getattr(veilfl, name) is not None, name


def test_every_module_declares_all_and_its_names_exist() -> None:
    for info in pkgutil.walk_packages(veilfl.__path__, prefix="veilfl."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{info.name} has no __all__"
        for name in exported:
            assert hasattr(module, name), f"{info.name}.__all__ names missing {name!r}"


def test_every_role_has_a_public_entry_point() -> None:
    roles = {"run_coordinator", "run_aggregator", "run_client"}

    exported = set(veilfl.__all__)

    assert roles <= exported
    assert all(callable(getattr(veilfl, name)) for name in roles)
