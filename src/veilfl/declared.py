"""Run settings declared once, next to their field.

A run setting is a field of :class:`~veilfl.protocol.run_spec.RunSpec` or of one of its
nested configs. It is declared with :func:`setting` (or, for a nested config,
:func:`nested`), which keeps in the field's metadata everything the outside sees of
it: its command-line flag (the TOML key of ``--config`` files is the flag without its
dashes), its help text, its valid range or choices, and the command line's default
where that differs from the library's. From these declarations are derived the
options of ``veilfl server``, ``simulate`` and ``demo`` and how a run is built from
them (:mod:`veilfl.cli.run_options`), the names that resume messages give a setting,
the range checks of the configs' constructors (:func:`check_declared`) and the run
description's JSON. This module is pure: it knows nothing of argparse.

A field declared with ``flag=None`` is a setting the command line derives from others
(``num_aggregators`` from the ``--aggregator`` count) or a library setting with no flag;
``shown_as`` names it in messages.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import sys
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass
from typing import Any, TypeVar

from veilfl.errors import ConfigurationError

__all__ = [
    "UNSET",
    "Declared",
    "Nested",
    "Setting",
    "build_config",
    "check_declared",
    "config_from_json",
    "declared_settings",
    "nested",
    "nested_fields",
    "setting",
    "to_json_value",
]

SETTING_KEY = "veilfl.setting"
NESTED_KEY = "veilfl.nested"

ConfigT = TypeVar("ConfigT")


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
"""No value given (a default of the command line that is the library's own)."""


@dataclass(frozen=True)
class Setting:
    """How one run setting shows outside the code.

    Attributes:
        flag: The long option (``--rounds``); None for a setting with no flag of its own.
        help: The option's help text.
        choices: The values it takes (default: a ``Literal`` or enum annotation's), or
            a function that lists them when the command line is built (a registry's
            names, which can grow after the declaration).
        at_least: Smallest valid value (inclusive).
        above: Valid values are larger than this.
        below: Valid values are smaller than this.
        at_most: Largest valid value (inclusive).
        metavar: How ``--help`` names the value.
        cli_default: The command line's default, where it differs from the field's
            (None: derived from other settings, see :mod:`veilfl.cli.derived_settings`).
        cli_type: How the command line parses the value, where the field's type is not
            a plain ``int``, ``float``, ``str`` or ``bool``.
        to_value: Turns the parsed value into the field's value.
        lowercase: Lower-case the given value.
        shown_as: How messages name the setting, where that is not its flag.
        group: The ``--help`` section, where it is not the nested config's.
    """

    flag: str | None
    help: str
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
    at_least: float | None = None
    above: float | None = None
    below: float | None = None
    at_most: float | None = None
    metavar: str | None = None
    cli_default: Any = UNSET
    cli_type: Callable[[str], Any] | None = None
    to_value: Callable[[Any], Any] | None = None
    lowercase: bool = False
    shown_as: str | None = None
    group: str | None = None

    @property
    def key(self) -> str | None:
        """The key of ``--config`` files: the flag without its dashes."""
        return None if self.flag is None else self.flag.removeprefix("--")

    @property
    def dest(self) -> str | None:
        """The attribute the parsed value lands in (argparse's rule)."""
        return None if self.key is None else self.key.replace("-", "_")

    @property
    def name(self) -> str:
        """How messages name the setting."""
        return self.shown_as or self.flag or ""

    def range_error(self, value: Any) -> str | None:
        """Why ``value`` is out of the declared range, or None when it is within."""
        bounds = (self.at_least, self.above, self.below, self.at_most)
        if all(b is None for b in bounds) or value is None or isinstance(value, bool):
            return None
        if not isinstance(value, int | float):
            return None
        number = float(value)
        limits: tuple[tuple[float | None, bool, str], ...] = (
            (self.at_least, self.at_least is None or number >= self.at_least, "at least"),
            (self.above, self.above is None or number > self.above, "more than"),
            (self.below, self.below is None or number < self.below, "less than"),
            (self.at_most, self.at_most is None or number <= self.at_most, "at most"),
        )
        wanted = [f"{words} {_number(limit)}" for limit, _, words in limits if limit is not None]
        if all(ok for _, ok, _ in limits) and math.isfinite(number):
            return None
        return f"{self.name} must be {' and '.join(wanted)}; got {value}."


@dataclass(frozen=True)
class Nested:
    """A nested config of a run (``RunSpec.dp``).

    Attributes:
        switch: The nested config's field whose flag turns it on (``placement``).
        off: The switch's value that means no config at all (``"off"``: ``dp`` is None).
        shown_as: How messages name the config as a whole (default: the switch's flag).
        group: The ``--help`` section of its settings.
    """

    switch: str | None = None
    off: str | None = None
    shown_as: str | None = None
    group: str | None = None


def setting(
    *,
    flag: str | None,
    help: str,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    **declared: Any,
) -> Any:
    """A dataclass field that is a run setting (see :class:`Setting` for ``declared``)."""
    metadata = {SETTING_KEY: Setting(flag=flag, help=help, **declared)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def nested(
    *, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING, **how: Any
) -> Any:
    """A dataclass field that holds a nested config (see :class:`Nested`)."""
    metadata = {NESTED_KEY: Nested(**how)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Declared:
    """One declared setting, found by :func:`declared_settings`.

    Attributes:
        path: Where it sits in the run's JSON (``dp.noise_multiplier``).
        owner: The config class that declares it.
        field: The dataclass field.
        setting: Its declaration.
        kind: ``int``, ``float``, ``str`` or ``bool``: what the command line parses.
        choices: The values it takes (empty: any of its kind).
        optional: Whether None is a valid value.
        switch_of: For the switch of a nested config, that config's declaration.
    """

    path: str
    owner: type
    field: dataclasses.Field[Any]
    setting: Setting
    kind: type
    choices: tuple[str, ...]
    optional: bool
    switch_of: Nested | None = None

    @property
    def default(self) -> Any:
        """The command line's default."""
        if self.switch_of is not None:
            return self.switch_of.off
        if self.setting.cli_default is not UNSET:
            return self.setting.cli_default
        if self.field.default is not MISSING:
            return self.field.default
        if self.field.default_factory is not MISSING:
            return self.field.default_factory()
        raise ConfigurationError(
            f"The setting {self.path} is required and declares no cli_default."
        )


def nested_fields(cls: type) -> Iterator[tuple[dataclasses.Field[Any], Nested, type]]:
    """The fields of ``cls`` that hold nested configs, with their declaration and class."""
    for item in dataclasses.fields(cls):
        how = item.metadata.get(NESTED_KEY)
        if how is not None:
            yield item, how, _annotation(cls, item)[0]


def declared_settings(cls: type, prefix: str = "") -> list[Declared]:
    """Every setting ``cls`` and its nested configs declare, in field order.

    Args:
        cls: A config dataclass (``RunSpec``).
        prefix: The path of ``cls`` in the run's JSON.
    """
    found: list[Declared] = []
    for item in dataclasses.fields(cls):
        path = f"{prefix}{item.name}"
        how = item.metadata.get(NESTED_KEY)
        if how is not None:
            switch = f"{path}.{how.switch}"
            for inner in declared_settings(_annotation(cls, item)[0], f"{path}."):
                changes: dict[str, Any] = {}
                if inner.path == switch:
                    changes["switch_of"] = how
                if how.group and inner.setting.group is None:
                    changes["setting"] = dataclasses.replace(inner.setting, group=how.group)
                found.append(dataclasses.replace(inner, **changes))
            continue
        declared = item.metadata.get(SETTING_KEY)
        if declared is None:
            continue
        kind, optional, choices = _annotation(cls, item)
        if declared.cli_type is not None:
            kind = declared.cli_type
        found.append(
            Declared(
                path=path,
                owner=cls,
                field=item,
                setting=declared,
                kind=kind,
                choices=(declared.choices() if callable(declared.choices) else declared.choices)
                or choices,
                optional=optional,
            )
        )
    return found


def check_declared(config: Any) -> None:
    """Refuse a config whose declared settings are out of their declared range.

    Raises:
        ConfigurationError: naming the setting's flag and the valid range.
    """
    for item in dataclasses.fields(config):
        declared = item.metadata.get(SETTING_KEY)
        if declared is None:
            continue
        problem = declared.range_error(getattr(config, item.name))
        if problem is not None:
            raise ConfigurationError(problem)


def to_json_value(value: Any) -> Any:
    """A config value as JSON: a nested config by its own ``to_json`` (or field by
    field), an enum by its value, a tuple as a list."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        own = getattr(value, "to_json", None)
        if own is not None:
            return own()
        return {f.name: to_json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_json_value(v) for v in value]
    return value


def config_from_json(cls: type[ConfigT], data: Mapping[str, Any]) -> ConfigT:
    """Inverse of :func:`to_json_value` for a config dataclass: each field from its
    key (a missing key takes the field's default), nested configs by their own
    ``from_json`` (or field by field), numbers and enums as their field's type."""
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {
        name: _decode(_annotation(cls, known[name])[0], value)
        for name, value in data.items()
        if name in known
    }
    return cls(**kwargs)


def build_config(cls: type[ConfigT], values: Mapping[str, Any], prefix: str = "") -> ConfigT:
    """A config from its settings' values, keyed by path (``rounds.num_rounds``).

    A setting whose value is missing or None takes the field's default; a declared
    ``to_value`` turns a given value into the field's, and an enum field takes its
    member. A nested config is built from its own settings, or is None where its
    switch has the off value (``dp.placement`` ``"off"``) or is not given; a path that
    names a nested config (``dp``) gives it whole.

    Args:
        cls: The config dataclass.
        values: Values by path (more keys do no harm).
        prefix: The path of ``cls`` in the run's JSON (``"dp."``).
    """
    kwargs: dict[str, Any] = {}
    for item in dataclasses.fields(cls):  # type: ignore[arg-type]
        path = f"{prefix}{item.name}"
        how: Nested | None = item.metadata.get(NESTED_KEY)
        if path in values and (how is not None or values[path] is not None):
            kwargs[item.name] = values[path]
        elif how is not None:
            if how.switch is not None and values.get(f"{path}.{how.switch}", how.off) == how.off:
                kwargs[item.name] = None
            else:
                kwargs[item.name] = build_config(_annotation(cls, item)[0], values, f"{path}.")
        else:
            continue
        declared: Setting | None = item.metadata.get(SETTING_KEY)
        value = kwargs[item.name]
        if declared is not None and declared.to_value is not None:
            kwargs[item.name] = declared.to_value(value)
        else:
            kind = _annotation(cls, item)[0]
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                kwargs[item.name] = kind(value)
    return cls(**kwargs)


def _decode(kind: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        own = getattr(kind, "from_json", None)
        return own(value) if own is not None else config_from_json(kind, value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    if kind in (int, float, str, bool):
        return kind(value)
    return value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _annotation(cls: type, item: dataclasses.Field[Any]) -> tuple[Any, bool, tuple[str, ...]]:
    """The field's type (None stripped), whether None is allowed, and its choices.

    Annotations are strings (``from __future__ import annotations``); each is resolved
    in its class's module, and a name only imported for type checking counts as ``str``.
    """
    text = item.type if isinstance(item.type, str) else getattr(item.type, "__name__", "")
    if not isinstance(item.type, str):
        return item.type, False, ()
    parts = [p.strip() for p in text.split("|")]
    optional = "None" in parts
    base = next((p for p in parts if p != "None"), "None")
    owner = next((k for k in cls.__mro__ if item.name in getattr(k, "__annotations__", {})), cls)
    namespace = {**vars(typing), **vars(sys.modules[owner.__module__])}
    try:
        resolved = eval(base, namespace)
    except NameError:
        return str, optional, ()
    if typing.get_origin(resolved) is typing.Literal:
        return str, optional, tuple(str(a) for a in typing.get_args(resolved))
    if isinstance(resolved, type) and issubclass(resolved, enum.Enum):
        return resolved, optional, tuple(str(m.value) for m in resolved)
    return resolved, optional, ()
