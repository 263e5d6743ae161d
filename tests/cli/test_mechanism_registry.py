"""A privacy mechanism registered in one place reaches the command line and the run id.

A throwaway mechanism, registered by this test alone (no other file names it), becomes
a choice of ``--dp-mechanism`` for every command that builds a run, derives its noise
multiplier from ``--target-epsilon`` with its own accounting, and is part of the run's
JSON, so of its run id."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from tests.cli.processes import write_tiny_mnist
from tests.cli.test_one_epsilon import FTRL_FLAGS, POPULATION, _release_rounds, _server_run

from veilfl.cli.config_file import expand_config
from veilfl.cli.main import build_parser, main
from veilfl.cli.run_options import setting_flags
from veilfl.cli.server_cmd import settings_from_args
from veilfl.declared import setting
from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.mechanisms import (
    DpFtrlTree,
    PrivacyMechanism,
    register_mechanism,
    unregister_mechanism,
)
from veilfl.protocol import assembly
from veilfl.protocol.run_spec import RunSpec
from veilfl.sim import assembly as simulated_run


class _HalfTree(DpFtrlTree):
    """The tree, accounted as if its sensitivity were half: a mechanism no other file
    knows, with an epsilon of its own."""

    name: ClassVar[str] = "half-tree"
    title: ClassVar[str] = "Half tree"
    summary: ClassVar[str] = "a throwaway mechanism that lives in this test"

    def planned_epsilon(self, config: DpConfig, *, rounds: int, sample_rate: float) -> float:
        return super().planned_epsilon(
            replace(config, noise_multiplier=2 * config.noise_multiplier),
            rounds=rounds,
            sample_rate=sample_rate,
        )

    def settings_json(self, config: DpConfig) -> dict[str, Any]:
        return PrivacyMechanism.settings_json(self, config)


@dataclass(frozen=True)
class _BandOptions:
    """A throwaway mechanism's own setting, declared once."""

    bands: int = setting(
        default=2, flag="--dp-throwaway-bands", help="bands of a throwaway mechanism", at_least=1
    )


class _Banded(_HalfTree):
    """A throwaway mechanism with a setting of its own."""

    name: ClassVar[str] = "throwaway-banded"
    options: ClassVar[type[Any] | None] = _BandOptions


@pytest.fixture
def banded() -> Iterator[PrivacyMechanism]:
    mechanism = register_mechanism(_Banded())
    yield mechanism
    unregister_mechanism(mechanism.name)


@pytest.fixture
def half_tree() -> Iterator[PrivacyMechanism]:
    mechanism = register_mechanism(_HalfTree())
    yield mechanism
    unregister_mechanism(mechanism.name)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    return parser.parse_args(expand_config(parser, argv))


FLAGS = ["--dp", "central", "--clients-per-round", "2", "--population", "8", "--rounds", "4"]


def _spec(tmp_path: Path, *flags: str) -> RunSpec:
    return settings_from_args(_parse(["server", "--run-dir", str(tmp_path), *FLAGS, *flags]))


def test_a_registered_mechanism_is_a_choice_of_every_command_that_builds_a_run(
    half_tree: PrivacyMechanism,
) -> None:
    for command in (["simulate"], ["demo"], ["server", "--run-dir", "x"]):
        assert _parse([*command, "--dp-mechanism", half_tree.name]).dp_mechanism == half_tree.name


def test_an_unregistered_mechanism_is_no_choice(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(["simulate", "--dp-mechanism", _HalfTree.name])

    assert "invalid choice" in capsys.readouterr().err


def test_a_registered_mechanism_is_part_of_the_run_id_and_derives_its_own_noise(
    tmp_path: Path, half_tree: PrivacyMechanism
) -> None:
    ours = _spec(tmp_path, "--dp-mechanism", half_tree.name, "--target-epsilon", "2")
    tree = _spec(tmp_path, "--dp-mechanism", "ftrl", "--target-epsilon", "2")

    assert ours.dp is not None and tree.dp is not None
    assert ours.dp.privacy_mechanism is half_tree
    assert ours.to_json()["dp"]["mechanism"] == half_tree.name
    assert RunSpec.from_json(ours.to_json()) == ours
    # Its own accounting: half the multiplier the tree needs for the same target.
    assert ours.dp.noise_multiplier == pytest.approx(tree.dp.noise_multiplier / 2, rel=1e-2)
    same_noise = replace(ours, dp=replace(ours.dp, noise_multiplier=tree.dp.noise_multiplier))
    assert same_noise.run_id != tree.run_id  # only the mechanism's name differs


def test_simulate_and_the_server_give_a_registered_mechanism_one_epsilon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, half_tree: PrivacyMechanism
) -> None:
    # Arrange: the one-epsilon test's flags and paths, under the throwaway mechanism.
    flags = [*FTRL_FLAGS]
    flags[flags.index("ftrl")] = half_tree.name
    assembled: list[assembly.AssembledRun] = []

    def spy(*args: Any, **kwargs: Any) -> assembly.AssembledRun:
        run = assembly.build_coordinator(*args, **kwargs)
        assembled.append(run)
        return run

    monkeypatch.setattr(simulated_run, "build_coordinator", spy)
    mnist = write_tiny_mnist(tmp_path / "mnist")
    # Act
    code = main(
        [
            *("simulate", "--run-dir", str(tmp_path / "sim"), "--num-clients", str(POPULATION)),
            *("--mnist-dir", str(mnist), "--test-examples", "20", *flags),
        ]
    )
    served = _server_run(tmp_path / "server", flags)
    server_rounds = _release_rounds(served, 2)
    # Assert: the same settings and, round by round, the same epsilon from its accounting.
    assert code == 0
    (simulated_assembly,) = assembled
    simulated = json.loads((tmp_path / "sim" / "metrics.json").read_text())
    assert served.privacy is not None and simulated_assembly.privacy is not None
    assert served.privacy.config == simulated_assembly.privacy.config
    assert served.privacy.config.privacy_mechanism is half_tree
    assert [r["epsilon"] for r in server_rounds] == [r["epsilon"] for r in simulated]
    config = served.privacy.config
    assert server_rounds[-1]["epsilon"] == half_tree.planned_epsilon(
        config, rounds=2, sample_rate=1.0
    )
    served.store.close()


def test_a_mechanisms_own_setting_is_an_option_a_range_and_part_of_the_run_id(
    tmp_path: Path, banded: PrivacyMechanism
) -> None:
    base = ("--dp-mechanism", banded.name, "--noise-multiplier", "1")

    three = _spec(tmp_path, *base, "--dp-throwaway-bands", "3")
    default = _spec(tmp_path, *base)

    assert three.dp is not None and default.dp is not None
    assert three.dp.options == _BandOptions(bands=3)
    assert default.dp.options == _BandOptions()
    assert three.to_json()["dp"]["options"] == {"bands": 3}
    assert RunSpec.from_json(three.to_json()) == three
    assert three.run_id != default.run_id
    assert setting_flags()["dp.options.bands"] == "--dp-throwaway-bands"
    with pytest.raises(ConfigurationError, match=r"^--dp-throwaway-bands must be at least 1"):
        _spec(tmp_path, *base, "--dp-throwaway-bands", "0")


def test_a_mechanisms_own_setting_is_no_option_while_it_is_unregistered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        _parse(["simulate", "--dp-throwaway-bands", "3"])

    assert "unknown option --dp-throwaway-bands" in capsys.readouterr().err
