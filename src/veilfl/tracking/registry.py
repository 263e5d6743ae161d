"""Metrics sinks by name: ``files`` (always on), ``tensorboard`` and ``mlflow``.

``--metrics-sink NAME`` (repeatable; ``metrics-sink = ["tensorboard"]`` in veilfl.toml)
on ``veilfl server`` and ``veilfl simulate`` adds sinks beside the run folder's own
files. More can be registered with :func:`register_sink` (a learner's module may do so
at import); the coordinator and the simulators only ever call the sinks' two methods.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

from veilfl.errors import ConfigurationError
from veilfl.protocol.metrics import RoundMetrics
from veilfl.tracking.files import FilesSink
from veilfl.tracking.mlflow_sink import MlflowSink
from veilfl.tracking.sink import MetricsSink, SinkContext
from veilfl.tracking.tensorboard_sink import TensorBoardSink

__all__ = [
    "ALWAYS_ON",
    "MetricsSinks",
    "SinkKind",
    "check_sinks",
    "open_sinks",
    "register_sink",
    "sink_names",
]

ALWAYS_ON = "files"
"""The sink every run has: ``metrics.json``, ``metrics.csv`` and ``metrics.png``."""


@dataclass(frozen=True)
class SinkKind:
    """A registered sink.

    Attributes:
        name: What ``--metrics-sink`` calls it.
        open: Opens the sink for a run.
        module: A module the sink needs that may be missing, or None.
        extra: The veilfl extra that installs ``module``.
    """

    name: str
    open: Callable[[SinkContext], MetricsSink]
    module: str | None = None
    extra: str | None = None


_REGISTRY: dict[str, SinkKind] = {}


def register_sink(kind: SinkKind) -> None:
    """Make a sink available to ``--metrics-sink`` under ``kind.name``.

    Raises:
        ValueError: if the name is taken.
    """
    if kind.name in _REGISTRY:
        raise ValueError(f"A metrics sink named {kind.name!r} is already registered.")
    _REGISTRY[kind.name] = kind


def sink_names() -> list[str]:
    """The registered sinks' names, sorted."""
    return sorted(_REGISTRY)


def check_sinks(names: Iterable[str]) -> None:
    """Check, before any slow work, that each named sink exists and can be opened.

    Raises:
        ConfigurationError: naming the unknown sink, or the extra to install.
    """
    for name in names:
        kind = _REGISTRY.get(name)
        if kind is None:
            raise ConfigurationError(
                f"--metrics-sink {name!r} is not a metrics sink; choose from "
                f"{', '.join(sink_names())}."
            )
        if kind.module is not None and importlib.util.find_spec(kind.module) is None:
            raise ConfigurationError(
                f"--metrics-sink {name} needs the {kind.module} package: "
                f'pip install ".[{kind.extra}]" in the checkout.'
            )


def open_sinks(names: Iterable[str], context: SinkContext) -> MetricsSinks:
    """Open the ``files`` sink and each named one (each once, in the order given).

    Raises:
        ConfigurationError: as :func:`check_sinks`.
    """
    chosen = list(dict.fromkeys([ALWAYS_ON, *names]))
    check_sinks(chosen)
    return MetricsSinks([_REGISTRY[name].open(context) for name in chosen])


class MetricsSinks:
    """Several sinks as one: each round goes to every sink, one round at a time.

    A sink that raises does not keep the round from the others; the first error is
    raised once all have been called. Usable as a context manager that closes them.
    """

    def __init__(self, sinks: list[MetricsSink]) -> None:
        self._sinks = sinks
        self._lock = threading.Lock()  # the coordinator reports from a worker thread

    def round(self, metrics: RoundMetrics) -> None:
        """Hand the round to every sink."""
        with self._lock:
            _each(self._sinks, lambda sink: sink.round(metrics))

    def close(self) -> None:
        """Close every sink."""
        with self._lock:
            _each(self._sinks, lambda sink: sink.close())

    def __enter__(self) -> MetricsSinks:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _each(sinks: list[MetricsSink], call: Callable[[MetricsSink], None]) -> None:
    first: Exception | None = None
    for sink in sinks:
        try:
            call(sink)
        except Exception as exc:  # the others still get the round
            first = first or exc
    if first is not None:
        raise first


register_sink(SinkKind(ALWAYS_ON, FilesSink.open))
register_sink(SinkKind("tensorboard", TensorBoardSink.open, "tensorboard", "tensorboard"))
register_sink(SinkKind("mlflow", MlflowSink.open, "mlflow", "mlflow"))
