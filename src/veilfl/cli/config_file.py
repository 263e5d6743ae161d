"""``--config FILE``: a command's options from a TOML file, flags overriding it.

The keys are the command's long options without the leading dashes (``rounds``,
``clients-per-round`` or ``clients_per_round``). Keys at the top of the file apply to
the command being run; a table named after a command (``[server]``, ``[client]``,
``[aggregator]``, ``[simulate]``, ``[demo]``) applies to that command only and wins over
the top. Other commands' tables are checked but not used, so one file can serve every
role (top-level keys must then be options of every command that reads the file)::

    learner = "my_project.learner:learner"

    [server]
    run-dir = "runs/r1"
    rounds = 10
    aggregator = ["https://127.0.0.1:8091,keys/aggregator-1.pub"]

    [client]
    server = "https://127.0.0.1:8080"
    num-clients = 4

A flag is ``true`` or ``false``; a repeatable option is a list. Relative paths
(including the key file of ``aggregator = ["URL,KEY_FILE"]`` and the path of
``data = "KIND:PATH"``) are taken from the file's folder. A flag given on the command
line overrides the file (a repeatable one replaces the file's whole list). A key that
is not an option of the command, or a table that is not a command, is an error naming
the key and the file.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from veilfl.errors import ConfigurationError

__all__ = ["CONFIG_COMMANDS", "add_config_option", "expand_config"]

CONFIG_COMMANDS = ("server", "client", "aggregator", "simulate", "demo")
"""The commands that take ``--config``."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML file of this command's options (flags given here override it)",
    )


def expand_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``argv`` with the options of its ``--config`` file put in front of the flags.

    Args:
        parser: The top-level ``veilfl`` parser (with one subparser per command).
        argv: The command line after ``veilfl``.

    Returns:
        The command line to parse: unchanged when there is no ``--config``.

    Raises:
        ConfigurationError: if the file cannot be read or parsed, or names an unknown
            key or table.
    """
    args = list(argv)
    command_at = next((i for i, token in enumerate(args) if not token.startswith("-")), None)
    if command_at is None:
        return args
    command = args[command_at]
    subparser = _subparsers(parser).get(command)
    rest = args[command_at + 1 :]
    path = _config_path(rest)
    if subparser is None or path is None:
        return args
    data = _read(path)
    values = _values_for(command, data, path)
    parsers = _subparsers(parser)
    for other in CONFIG_COMMANDS:  # a typo in another command's table is caught too
        table = data.get(other)
        if other != command and isinstance(table, dict) and other in parsers:
            for key in table:
                _action(parsers[other], other, key, path)
    given = {token.split("=", 1)[0] for token in rest if token.startswith("--")}
    tokens: list[str] = []
    for key, value in values.items():
        option, action = _action(subparser, command, key, path)
        if option in given:
            continue
        tokens += _tokens(option, action, value, path)
    return [*args[: command_at + 1], *tokens, *rest]


def _action(
    parser: argparse.ArgumentParser, command: str, key: str, path: Path
) -> tuple[str, argparse.Action]:
    """The long option ``key`` stands for in ``command``, and its action.

    Raises:
        ConfigurationError: if ``command`` has no such option.
    """
    option = "--" + key.replace("_", "-")
    for action in parser._actions:
        if option in action.option_strings and option not in ("--config", "--help"):
            return option, action
    raise ConfigurationError(
        f"{path}: unknown key {key!r} for veilfl {command}; keys are the command's long "
        f"options without the dashes (see veilfl {command} --help)."
    )


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _config_path(rest: Sequence[str]) -> Path | None:
    for index, token in enumerate(rest):
        if token == "--config" and index + 1 < len(rest):
            return Path(rest[index + 1])
        if token.startswith("--config="):
            return Path(token.split("=", 1)[1])
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"--config {path} cannot be read: {exc.strerror or exc}."
        ) from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"--config {path} is not UTF-8 text.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML ({exc}).") from None


def _values_for(command: str, data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    top = {key: value for key, value in data.items() if not isinstance(value, dict)}
    for key, value in data.items():
        if isinstance(value, dict) and key not in CONFIG_COMMANDS:
            raise ConfigurationError(
                f"{path}: unknown table [{key}]; tables are named after commands "
                f"({', '.join(CONFIG_COMMANDS)})."
            )
    own = data.get(command, {})
    nested = [key for key, value in own.items() if isinstance(value, dict)]
    if nested:
        raise ConfigurationError(
            f"{path}: unknown table [{command}.{nested[0]}]; options of veilfl {command} "
            "go directly under its table."
        )
    return {**top, **own}


def _tokens(option: str, action: argparse.Action, value: Any, path: Path) -> list[str]:
    where = f"{path}: {option.removeprefix('--')}"
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where} is a flag; write true or false.")
        wanted = isinstance(action, argparse._StoreTrueAction)
        return [option] if value is wanted else []
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [token for item in items for token in (option, _text(item, action, where, path))]
    if isinstance(value, list | dict):
        raise ConfigurationError(f"{where} takes one value, not a list.")
    return [option, _text(value, action, where, path)]


def _text(value: Any, action: argparse.Action, where: str, path: Path) -> str:
    if isinstance(value, bool):
        raise ConfigurationError(f"{where} takes a value, not true or false.")
    if isinstance(value, list | dict):
        raise ConfigurationError(f"{where} takes plain values, not nested lists or tables.")
    text = str(value)
    if action.type is Path:
        return _relative_to(path, text)
    if action.dest in ("data", "eval_data"):  # a data source: KIND:PATH, a path, or a kind
        return _relative_data(path, text)
    if action.dest == "aggregator" and "," in text:  # URL,PUBLIC_KEY_FILE
        url, _, key_file = text.partition(",")
        return f"{url},{_relative_to(path, key_file)}"
    return text


def _relative_data(config: Path, text: str) -> str:
    from veilfl.ml.data_sources import data_source_names

    kind, colon, location = text.partition(":")
    if text in data_source_names():
        return text
    if colon and kind in data_source_names():
        return f"{kind}:{_relative_to(config, location)}" if location else text
    return _relative_to(config, text)


def _relative_to(config: Path, text: str) -> str:
    given = Path(text).expanduser()
    return str(given if given.is_absolute() else config.parent / given)
