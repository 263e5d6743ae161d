"""Command-line mistakes in one line: ``veilfl server: unknown option --rnds; did you
mean --rounds?`` and exit code 2, instead of argparse's usage block.

An unknown option is reported before any other mistake of the same command line (a
missing required option beside it is usually the typo's consequence).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["OneLineParser"]

_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
_INVALID_CHOICE = re.compile(r"invalid choice: '(.*)' \(choose from (.*)\)$")


class OneLineParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are one line, naming the
    command; an unknown option comes with the closest known one. Subcommands made
    with ``add_subparsers().add_parser`` are of the same class (argparse's default)."""

    _given: list[str]

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and not self._has_commands():
            # A command's leftovers: name them here, with this command's options (the
            # top-level parser would say "unrecognized arguments" for the program).
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: MESSAGE`` (one line) to stderr and exit with 2."""
        unknown = self._unknown_options()
        if unknown:
            line = f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
            close = self._closest(unknown[0])
            line += f"; did you mean {close}?" if close else f"; see {self.prog} --help"
        else:
            line = " ".join(message.split())  # argparse wraps some messages
            close = _closest_choice(line)
            line += f"; did you mean {close}?" if close else f" (see {self.prog} --help)"
        self.exit(2, f"{self.prog}: {line}\n")

    def _has_commands(self) -> bool:
        return any(isinstance(a, argparse._SubParsersAction) for a in self._actions)

    def _unknown_options(self) -> list[str]:
        """The options given that this parser does not know, in order."""
        unknown: list[str] = []
        for token in getattr(self, "_given", []):
            if token == "--":
                break
            if not token.startswith("-") or _NEGATIVE_NUMBER.match(token):
                if self._has_commands():
                    break  # the command's own options follow; its parser checks them
                continue
            name = token.split("=", 1)[0]
            if not self._knows(name) and name not in unknown:
                unknown.append(name)
        return unknown

    def _knows(self, name: str) -> bool:
        if name in self._option_string_actions:
            return True
        if not (self.allow_abbrev and name.startswith("--")):
            return False
        return any(known.startswith(name) for known in self._option_string_actions)

    def _closest(self, name: str) -> str | None:
        options = [o for o in self._option_string_actions if o.startswith("--")]
        matches = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        return matches[0] if matches else None


def _closest_choice(message: str) -> str | None:
    """For argparse's "invalid choice: 'X' (choose from 'A', 'B')", the choice
    closest to X, if one is close."""
    found = _INVALID_CHOICE.search(message)
    if found is None:
        return None
    choices = [c.strip().strip("'") for c in found.group(2).split(",")]
    matches = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.6)
    return matches[0] if matches else None
