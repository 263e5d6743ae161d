"""Every command's --help shows the defaults and one example."""

from __future__ import annotations

import argparse

import pytest

from veilfl.cli.help_text import EXAMPLES
from veilfl.cli.main import build_parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_an_example() -> None:
    assert set(_commands()) == set(EXAMPLES)


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_help_ends_with_the_example_and_shows_defaults(command: str) -> None:
    text = _commands()[command].format_help()
    assert text.rstrip().endswith(EXAMPLES[command])
    flat = " ".join(text.split())
    for action in _commands()[command]._actions:
        default = action.default
        if default is argparse.SUPPRESS or isinstance(default, bool) or default in (None, []):
            continue
        assert f"default: {default}" in flat or "default:" in (action.help or ""), action.dest


def test_server_help_shows_the_rounds_default() -> None:
    text = " ".join(_commands()["server"].format_help().split())
    assert "number of rounds (default: 5)" in text
