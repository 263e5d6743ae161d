"""A run setting is declared once, next to its field, and everything else follows.

A throwaway setting, added by a test-only subclass of the run description, reaches the
command line of every command that builds a run, the ``--config`` file, the range
check, the resume messages, the run id and the run description of both simulators.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from tests.cli.processes import write_tiny_mnist

from veilfl.cli import run_options
from veilfl.cli.config_file import expand_config
from veilfl.cli.demo_cmd import DEMO_SETS
from veilfl.cli.main import build_parser, main
from veilfl.cli.run_options import declared_run_settings, setting_argv, setting_flags
from veilfl.cli.run_resume import differing_settings
from veilfl.cli.server_cmd import settings_from_args
from veilfl.declared import setting
from veilfl.errors import ConfigurationError
from veilfl.protocol.run_description import RunDescription
from veilfl.protocol.run_spec import RunSpec
from veilfl.sim import async_simulator, simulator


@dataclass(frozen=True)
class _WithThrowaway(RunSpec):
    """The run description with one more setting, declared in one place."""

    throwaway: int = setting(
        default=7, flag="--throwaway", help="a setting that lives in this test", at_least=1
    )


@pytest.fixture
def throwaway(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands declare and build :class:`_WithThrowaway` instead of RunSpec."""
    monkeypatch.setattr(run_options, "RUN_SPEC", _WithThrowaway)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    return parser.parse_args(expand_config(parser, argv))


def _spec(argv: list[str], tmp_path: Path) -> _WithThrowaway:
    spec = settings_from_args(_parse(["server", "--run-dir", str(tmp_path), *argv]))
    assert isinstance(spec, _WithThrowaway)
    return spec


@pytest.mark.usefixtures("throwaway")
def test_a_declared_setting_is_an_option_of_every_command_that_builds_a_run(
    tmp_path: Path,
) -> None:
    assert _spec(["--throwaway", "3"], tmp_path).throwaway == 3
    assert _spec([], tmp_path).throwaway == 7
    assert _parse(["simulate", "--throwaway", "4"]).throwaway == 4
    demo = _parse(["demo", "--throwaway", "5"])
    assert demo.throwaway == 5
    to_server = setting_argv(demo, skip=DEMO_SETS)  # what the demo passes its server
    assert to_server[to_server.index("--throwaway") + 1] == "5"
    assert "a setting that lives in this test" in _command(build_parser(), "server").format_help()


@pytest.mark.usefixtures("throwaway")
def test_a_declared_setting_is_a_config_file_key(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("throwaway = 9\n[server]\nrounds = 2\n")

    assert _spec(["--config", str(config)], tmp_path).throwaway == 9
    assert _spec(["--config", str(config), "--throwaway", "2"], tmp_path).throwaway == 2


@pytest.mark.usefixtures("throwaway")
def test_a_declared_range_is_checked_naming_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"^--throwaway must be at least 1; got 0\.$"):
        _spec(["--throwaway", "0"], tmp_path)


@pytest.mark.usefixtures("throwaway")
def test_a_declared_setting_is_part_of_the_run_id_and_named_on_resume(tmp_path: Path) -> None:
    spec = _spec(["--throwaway", "3"], tmp_path)
    other = replace(spec, throwaway=4)

    assert spec.run_id == replace(other, throwaway=3).run_id
    assert spec.run_id != other.run_id
    assert type(spec).from_json(other.to_json()).throwaway == 4
    assert setting_flags()["throwaway"] == "--throwaway"
    assert differing_settings(spec.to_json(), other.to_json()) == [
        "--throwaway 3 (stored) vs 4 (now)"
    ]


@pytest.mark.usefixtures("throwaway")
@pytest.mark.parametrize("mode", [[], ["--mode", "fedbuff", "--buffer-size", "2"]])
def test_a_declared_setting_reaches_the_run_veilfl_simulate_describes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: list[str]
) -> None:
    described: list[RunDescription] = []

    def recording(real: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            described.append(result.description)
            return result

        return run

    monkeypatch.setattr(simulator, "simulate", recording(simulator.simulate))
    monkeypatch.setattr(
        async_simulator, "simulate_async", recording(async_simulator.simulate_async)
    )
    argv = ["simulate", "--mnist-dir", str(write_tiny_mnist(tmp_path / "mnist"))]
    argv += ["--num-clients", "2", "--clients-per-round", "2", "--rounds", "1"]
    argv += ["--max-batches", "1", "--test-examples", "10", "--run-dir", str(tmp_path / "run")]

    assert main([*argv, *mode, "--throwaway", "3"]) == 0

    [description] = described
    assert isinstance(description.spec, _WithThrowaway)
    assert description.spec.throwaway == 3
    assert description.run_id == description.spec.run_id
    assert description.run_id != replace(description.spec, throwaway=4).run_id


def test_every_declared_setting_has_help_a_name_and_a_place_in_the_commands() -> None:
    flags = setting_flags()
    parser = build_parser()
    server, simulate_parser = (_options(parser, name) for name in ("server", "simulate"))

    for declared in declared_run_settings():
        assert declared.setting.help, declared.path
        if declared.setting.flag is None:
            continue  # derived from other settings, or a library setting with no flag
        assert flags[declared.path] in (declared.setting.flag, declared.setting.shown_as)
        assert declared.setting.flag in server, declared.path
        if declared.path != "secure.config.max_samples_per_client":  # from the data
            assert declared.setting.flag in simulate_parser, declared.path
    # Nested configs are named by the flag that turns them on.
    assert {flags[p] for p in ("dp", "buffer", "server_optimizer", "secure")} == {
        "--dp",
        "--mode",
        "--server-optimizer",
        "--aggregator",
    }


def test_the_declarations_keep_the_documented_command_line_defaults(tmp_path: Path) -> None:
    args = _parse(["server", "--run-dir", str(tmp_path)])
    spec = settings_from_args(args)

    assert (args.rounds, args.momentum, args.buffer_size, args.dp, args.mode) == (
        5,
        0.9,
        10,
        "off",
        "sync",
    )
    assert spec.plan.momentum == 0.9
    assert spec.rounds.min_clients == 1 and spec.rounds.clients_per_round == 1
    assert spec.server_learning_rate == 1.0
    assert _parse(["demo"]).buffer_size == 2


def _command(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[command]
            return found
    raise AssertionError(command)


def _options(parser: argparse.ArgumentParser, command: str) -> set[str]:
    return {flag for a in _command(parser, command)._actions for flag in a.option_strings}


def test_a_range_declared_on_a_field_is_checked_on_construction_naming_its_flag(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigurationError, match=r"^--fedasync-mixing must be more than 0 and"):
        settings_from_args(_parse(["server", "--run-dir", str(tmp_path), "--fedasync-mixing", "0"]))


def test_server_momentum_and_schedule_flags_reach_the_run_and_its_id(tmp_path: Path) -> None:
    argv = ["--server-momentum", "0.9", "--server-nesterov", "--server-lr-schedule", "Cosine"]
    argv += ["--server-lr-warmup", "2", "--server-lr-final-fraction", "0.1"]

    spec = settings_from_args(_parse(["server", "--run-dir", str(tmp_path), *argv]))
    plain = settings_from_args(_parse(["server", "--run-dir", str(tmp_path)]))

    assert (spec.server_momentum, spec.server_nesterov) == (0.9, True)
    schedule = spec.server_lr_schedule
    assert (schedule.name, schedule.warmup_rounds, schedule.final_fraction) == ("cosine", 2, 0.1)
    assert spec.run_id != plain.run_id
    assert (plain.server_momentum, plain.server_lr_schedule.name) == (0, "constant")
    assert "--server-momentum 0.9 (stored) vs 0.0 (now)" in differing_settings(
        spec.to_json(), plain.to_json()
    )


def test_server_momentum_with_an_adaptive_optimiser_is_refused_in_one_line(tmp_path: Path) -> None:
    argv = ["--server-momentum", "0.9", "--server-optimizer", "fedyogi"]
    with pytest.raises(ConfigurationError, match=r"^--server-momentum is FedAvg's") as raised:
        settings_from_args(_parse(["server", "--run-dir", str(tmp_path), *argv]))
    assert "\n" not in str(raised.value)
