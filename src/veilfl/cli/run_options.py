"""A run's options on the command line, derived from its settings' declarations.

Each setting of :class:`~veilfl.protocol.run_spec.RunSpec` and of its nested configs
declares its flag, help, range and default once, next to its field
(:mod:`veilfl.declared`). From those declarations this module

* adds the options to ``veilfl server``, ``simulate`` and ``demo``
  (:func:`add_run_options`; ``--config`` files take the same keys, without dashes);
* builds the run back from the parsed options (:func:`run_spec_from_args`), with the
  defaults that follow from other settings taken from :mod:`veilfl.cli.derived_settings`;
* names each stored setting by its flag, for resume messages (:func:`setting_flags`);
* writes the options back as a command line (:func:`setting_argv`: the demo hands its
  run to the server it starts).
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import Any

from veilfl.cli.derived_settings import derived_run_values, dp_settings
from veilfl.declared import Declared, build_config, declared_settings, nested_fields
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.mechanisms import mechanism_named, mechanism_names
from veilfl.protocol.run_spec import RunSpec, SecureSettings

__all__ = [
    "add_declared_options",
    "add_run_options",
    "declared_run_settings",
    "given_settings",
    "run_spec_from_args",
    "setting_argv",
    "setting_flags",
]

RUN_SPEC: type[RunSpec] = RunSpec
"""The run description the commands declare and build (a test may put a subclass with
one more setting here)."""


MECHANISM_OPTIONS = "dp.options."
"""Where the registered privacy mechanisms' own settings sit in the run's JSON."""


def declared_run_settings() -> list[Declared]:
    """Every setting of the run description, in field order, then the own settings of
    every registered privacy mechanism (:attr:`PrivacyMechanism.options
    <veilfl.privacy.mechanisms.base.PrivacyMechanism.options>`; a flag two mechanisms
    share is one option)."""
    found = declared_settings(RUN_SPEC)
    flags = {d.setting.flag for d in found}
    for name in mechanism_names():
        options = mechanism_named(name).options
        for declared in [] if options is None else declared_settings(options, MECHANISM_OPTIONS):
            if declared.setting.flag in flags:
                continue
            flags.add(declared.setting.flag)
            group = declared.setting.group or "differential privacy"
            found.append(replace(declared, setting=replace(declared.setting, group=group)))
    return found


def add_run_options(
    parser: argparse.ArgumentParser,
    *,
    skip: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add an option for every declared setting that has a flag.

    Args:
        parser: The command's parser. Each option goes into the section its setting
            declares (one the parser already has, by title, or a new one).
        skip: Setting paths (or their prefixes, ``secure.``) the command sets itself.
        defaults: The command's own defaults, by setting path, where they differ.
    """
    own = dict(defaults or {})
    for declared in declared_run_settings():
        flag = declared.setting.flag
        if flag is None or _skipped(declared.path, skip):
            continue
        group = _group(parser, declared.setting.group or "rounds")
        group.add_argument(flag, **_argument(declared, own.get(declared.path, declared.default)))
        if declared.path == "dp.placement":
            group.add_argument(
                "--allow-no-privacy",
                action="store_true",
                help="accept --dp with a zero noise multiplier (no guarantee; for experiments)",
            )


def add_declared_options(
    parser: argparse.ArgumentParser, settings: list[Declared], *, skip: Collection[str] = ()
) -> None:
    """Add an option for each of ``settings`` (declared on any config, not only the
    run's: a party's data settings, say), in the section each declares."""
    for declared in settings:
        flag = declared.setting.flag
        if flag is None or _skipped(declared.path, skip):
            continue
        group = _group(parser, declared.setting.group or "options")
        group.add_argument(flag, **_argument(declared, declared.default))


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed value of every declared setting the command has, by path."""
    return {
        d.path: getattr(args, str(d.setting.dest))
        for d in declared_run_settings()
        if d.setting.dest is not None and hasattr(args, d.setting.dest)
    }


def run_spec_from_args(
    args: argparse.Namespace,
    *,
    secure: Callable[[DpConfig | None], SecureSettings | None] | None = None,
) -> RunSpec:
    """The run the options describe.

    Under ``--target-epsilon`` the noise multiplier is derived for the sampling rate
    and the number of releases that :func:`~veilfl.protocol.assembly.cohort_plan`
    gives for these settings, the figures every path charges (q = 1 for buffered runs,
    whose sample is not secret).

    Args:
        args: The parsed options.
        secure: The command's secure aggregation, given the DP settings (their clipping
            norm is the default norm bound); None: a plaintext run.
    """
    from veilfl.protocol.assembly import cohort_plan

    given = given_settings(args)
    values = {**given, **derived_run_values(args, given), "dp": None, "secure": None}
    spec = build_config(RUN_SPEC, values)
    dp = dp_settings(
        args,
        given,
        # Rounds are Poisson-sampled under DP; a buffer's sample may be known (q = 1).
        sample_rate=cohort_plan(spec).sample_rate if spec.buffer is None else 1.0,
        rounds=spec.num_releases,
        min_clients=spec.rounds.min_clients,
    )
    return replace(spec, dp=dp, secure=None if secure is None else secure(dp))


def setting_flags() -> dict[str, str]:
    """How messages name each stored setting (``dp.noise_multiplier``:
    ``--noise-multiplier``), nested configs included (``dp``: ``--dp``)."""
    names: dict[str, str] = {}
    _nested_names(RUN_SPEC, "", names)
    for declared in declared_run_settings():
        if declared.setting.name:
            names[declared.path] = declared.setting.name
    return names


def setting_argv(args: argparse.Namespace, *, skip: Collection[str] = ()) -> list[str]:
    """The options that give, to a command with every run option at its declared
    default (``veilfl server``), the settings in ``args`` that differ from it."""
    argv: list[str] = []
    for declared in declared_run_settings():
        flag, dest = declared.setting.flag, declared.setting.dest
        if flag is None or dest is None or _skipped(declared.path, skip):
            continue
        value = getattr(args, dest, None)
        if value is None or value == declared.default:
            continue
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def _argument(declared: Declared, default: Any) -> dict[str, Any]:
    setting = declared.setting
    kwargs: dict[str, Any] = {"help": setting.help, "default": default}
    if declared.kind is bool:
        return {**kwargs, "action": "store_true"}
    choices = declared.choices
    if declared.switch_of is not None and declared.switch_of.off is not None:
        choices = (declared.switch_of.off, *choices)
    if setting.lowercase:
        kwargs["type"] = str.lower
    elif choices or isinstance(declared.kind, enum.EnumMeta):
        kwargs["type"] = str
    else:
        kwargs["type"] = declared.kind
    if choices:
        kwargs["choices"] = list(choices)
    if setting.metavar is not None:
        kwargs["metavar"] = setting.metavar
    return kwargs


def _group(parser: argparse.ArgumentParser, title: str) -> argparse._ActionsContainer:
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def _skipped(path: str, skip: Collection[str]) -> bool:
    return any(path == s or (s.endswith(".") and path.startswith(s)) for s in skip)


def _nested_names(cls: type, prefix: str, names: dict[str, str]) -> None:
    """Names of nested configs: declared, else their switch's flag (``buffer``: ``--mode``)."""
    switches = {d.path: d.setting.flag for d in declared_settings(cls, prefix)}
    for item, how, inner in nested_fields(cls):
        path = f"{prefix}{item.name}"
        name = how.shown_as or switches.get(f"{path}.{how.switch}")
        if name:
            names[path] = name
        _nested_names(inner, f"{path}.", names)
