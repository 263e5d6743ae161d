"""Experiment tracking: each completed round's metrics, handed to named sinks.

:class:`MetricsSink` is the interface (``round`` and ``close``);
:mod:`veilfl.tracking.registry` keeps the sinks by name: ``files`` (the run folder's
``metrics.json``, ``metrics.csv`` and ``metrics.png``, always on), ``tensorboard`` and
``mlflow`` (optional extras).
"""

from veilfl.tracking.registry import (
    ALWAYS_ON,
    MetricsSinks,
    SinkKind,
    check_sinks,
    open_sinks,
    register_sink,
    sink_names,
)
from veilfl.tracking.sink import MetricsSink, SinkContext, round_scalars

__all__ = [
    "ALWAYS_ON",
    "MetricsSink",
    "MetricsSinks",
    "SinkContext",
    "SinkKind",
    "check_sinks",
    "open_sinks",
    "register_sink",
    "round_scalars",
    "sink_names",
]
