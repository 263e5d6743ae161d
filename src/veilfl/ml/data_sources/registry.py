"""Data sources by name: what ``--data`` names chooses the source that reads it.

``--data`` takes ``KIND:PATH`` (``csv:scores.txt``), or a path whose kind follows from
it: a folder is an image folder, a file is read by the source registered for its
suffix; ``mnist`` (or ``mnist:FOLDER`` of IDX files) is MNIST. A new kind is one
:func:`register_data_source` call; nothing else branches on the names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from veilfl.errors import ConfigurationError, DataError
from veilfl.ml.data_sources.image_folder import ImageFolderSource
from veilfl.ml.data_sources.mnist_source import MnistSource
from veilfl.ml.data_sources.settings import DataSettings
from veilfl.ml.data_sources.source import DataSource
from veilfl.ml.data_sources.tables import CsvSource, ParquetSource

__all__ = ["SourceFactory", "data_source", "data_source_names", "register_data_source"]

SourceFactory = Callable[[str, DataSettings], DataSource]
"""Makes a source from the location ``--data`` gives (the part after ``KIND:``) and
the party's data settings."""


@dataclass(frozen=True)
class _Registered:
    factory: SourceFactory
    suffixes: tuple[str, ...]
    folders: bool


_SOURCES: dict[str, _Registered] = {}


def register_data_source(
    name: str, factory: SourceFactory, *, suffixes: tuple[str, ...] = (), folders: bool = False
) -> None:
    """Make ``--data NAME:LOCATION`` (and files ending in ``suffixes``, or folders when
    ``folders``) read through ``factory``.

    Raises:
        ConfigurationError: if ``name`` is taken.
    """
    if name in _SOURCES:
        raise ConfigurationError(f"A data source named {name!r} is registered already.")
    _SOURCES[name] = _Registered(factory, tuple(s.lower() for s in suffixes), folders)


def data_source_names() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(_SOURCES)


def data_source(
    spec: str, settings: DataSettings | None = None, *, mnist_dir: Path | None = None
) -> DataSource:
    """The source that reads what ``spec`` names.

    Args:
        spec: ``mnist``, ``KIND:LOCATION``, or a file or folder.
        settings: How tables and images are read (label column, image size and mode).
        mnist_dir: MNIST's folder of IDX files for a bare ``mnist`` (``--mnist-dir``).

    Raises:
        DataError: (one line) for a path that does not exist or whose kind is unknown.
    """
    settings = settings or DataSettings()
    kind, colon, location = spec.partition(":")
    if colon and kind in _SOURCES:
        return _SOURCES[kind].factory(location, settings)
    if spec in _SOURCES:
        return _SOURCES[spec].factory(str(mnist_dir or "") if spec == "mnist" else "", settings)
    path = Path(spec).expanduser()
    if path.is_dir():
        kind = next((name for name, entry in _SOURCES.items() if entry.folders), "")
    elif path.is_file():
        suffix = path.suffix.lower()
        kind = next((name for name, entry in _SOURCES.items() if suffix in entry.suffixes), "")
        if not kind:
            raise DataError(
                f"No data source reads {suffix or 'suffix-less'} files ({path}); name a "
                f"{', '.join(_suffixes())} file, a folder of class sub-folders, or "
                f"KIND:PATH with KIND one of {', '.join(_SOURCES)}."
            )
    else:
        raise DataError(f"{spec} is neither a file nor a folder, nor a data source kind.")
    return _SOURCES[kind].factory(str(path), settings)


def _suffixes() -> list[str]:
    return [s for entry in _SOURCES.values() for s in entry.suffixes]


def _existing(location: str, kind: str) -> Path:
    path = Path(location).expanduser()
    if not path.exists():
        raise DataError(f"{kind}:{location}: there is no such file or folder.")
    return path


register_data_source(
    "mnist",
    lambda location, _: MnistSource(folder=Path(location).expanduser() if location else None),
)
register_data_source(
    "csv",
    lambda location, s: CsvSource(_existing(location, "csv"), label_column=s.label_column),
    suffixes=(".csv", ".tsv"),
)
register_data_source(
    "parquet",
    lambda location, s: ParquetSource(_existing(location, "parquet"), label_column=s.label_column),
    suffixes=(".parquet", ".pq"),
)
register_data_source(
    "images",
    lambda location, s: ImageFolderSource(
        _existing(location, "images"), size=s.image_size, mode=s.image_mode
    ),
    folders=True,
)
