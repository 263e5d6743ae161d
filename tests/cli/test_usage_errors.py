"""A mistake on the command line is one line naming the command, and exit code 2."""

from __future__ import annotations

import argparse

import pytest

from veilfl.cli.main import build_parser, main


def _commands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def _error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err.strip()


def test_a_mistyped_flag_beside_a_missing_required_one_is_named_with_the_closest_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _error_of(["server", "--rnds", "3"], capsys)  # and no --run-dir
    assert err.startswith("veilfl server: ")
    assert "--rnds" in err and "did you mean --rounds?" in err


@pytest.mark.parametrize("command", _commands())
def test_every_command_names_an_unknown_option_in_one_line(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _error_of([command, "--no-such-option-at-all"], capsys)
    assert err.startswith(f"veilfl {command}: ")
    assert "--no-such-option-at-all" in err


def test_other_mistakes_are_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error_of(["server", "--run-dir", "r", "--rounds", "many"], capsys)
    assert err.startswith("veilfl server: ") and "--rounds" in err and "'many'" in err
    err = _error_of(["servr", "--run-dir", "r"], capsys)
    assert err.startswith("veilfl: ") and "did you mean server?" in err
    err = _error_of([], capsys)
    assert err.startswith("veilfl: ") and "command" in err


def test_known_abbreviations_and_negative_numbers_are_not_unknown_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["server", "--run-d", "r", "--server-lr", "-0.5"])
    assert args.run_dir is not None and args.server_lr == -0.5
    err = _error_of(["server", "--run-d", "r", "--rounds", "-3", "--epochs", "x"], capsys)
    assert "unknown option" not in err and "--epochs" in err
