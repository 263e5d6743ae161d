"""``--learner MODULE:ATTRIBUTE``: a Learner or a factory, and one-line errors otherwise."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from veilfl.cli.learner_option import learner_for, load_learner
from veilfl.cli.main import main
from veilfl.errors import ConfigurationError
from veilfl.ml.learner import Learner

MODULE = "ux_learner_fixture"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / f"{MODULE}.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            from veilfl.ml.learner import sgd_learner

            def model():
                return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

            learner = sgd_learner(model)
            seeds = []

            def make():
                return learner

            def make_seeded(seed):
                seeds.append(seed)
                return learner

            def broken():
                raise RuntimeError("no GPU\\nhere")

            not_a_learner = 42

            def returns_wrong():
                return "learner"
            """
        )
    )
    (tmp_path / "ux_broken_import.py").write_text("import numpy\nraise ValueError('bad config')\n")
    (tmp_path / "ux_missing_dependency.py").write_text("import no_such_package_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in (MODULE, "ux_broken_import", "ux_missing_dependency"):
        sys.modules.pop(name, None)


def test_a_learner_attribute_loads(project: Path) -> None:
    learner = load_learner(f"{MODULE}:learner")
    assert isinstance(learner, Learner)
    assert learner is sys.modules[MODULE].learner


def test_a_factory_is_called_with_the_seed_when_it_takes_one(project: Path) -> None:
    assert load_learner(f"{MODULE}:make") is sys.modules[MODULE].learner
    assert load_learner(f"{MODULE}:make_seeded", seed=7) is sys.modules[MODULE].learner
    assert sys.modules[MODULE].seeds == [7]


def test_a_spec_goes_to_the_import_and_a_name_to_the_builtin(project: Path) -> None:
    assert learner_for(f"{MODULE}:learner") is sys.modules[MODULE].learner
    assert learner_for("simple-cnn").model_fn().__class__.__name__ == "SimpleCNN"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "nocolon",
            "--learner takes MODULE:ATTRIBUTE, such as my_project.learner:learner; got 'nocolon'.",
        ),
        (
            "ux_nowhere:learner",
            "--learner ux_nowhere:learner: there is no module "
            "'ux_nowhere'; run from the folder that holds it, or install its package.",
        ),
        (
            f"{MODULE}:missing",
            f"--learner {MODULE}:missing: module {MODULE} has no attribute 'missing'.",
        ),
        (
            f"{MODULE}:not_a_learner",
            f"--learner {MODULE}:not_a_learner: not_a_learner is "
            "a int, not a veilfl.Learner or a function returning one.",
        ),
        (
            f"{MODULE}:returns_wrong",
            f"--learner {MODULE}:returns_wrong: returns_wrong() "
            "returned a str, not a veilfl.Learner.",
        ),
        (
            f"{MODULE}:broken",
            f"--learner {MODULE}:broken: calling broken() failed: RuntimeError: no GPU here.",
        ),
        (
            "ux_broken_import:x",
            "--learner ux_broken_import:x: importing ux_broken_import "
            "failed: ValueError: bad config.",
        ),
        (
            "ux_missing_dependency:x",
            "--learner ux_missing_dependency:x: importing "
            "ux_missing_dependency failed: ModuleNotFoundError: No module named "
            "'no_such_package_xyz'.",
        ),
    ],
)
def test_each_failure_is_one_line_naming_the_flag(project: Path, spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_learner(spec)
    assert str(caught.value) == message


def test_the_command_line_reports_it_in_one_line_without_a_traceback(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["simulate", "--learner", f"{MODULE}:missing", "--rounds", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        f"veilfl: error: --learner {MODULE}:missing: module {MODULE} has no attribute 'missing'.\n"
    )
