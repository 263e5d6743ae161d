"""The metrics sink interface: where each completed round's metrics go.

A sink is a small object with two methods, :meth:`MetricsSink.round` (one completed
round) and :meth:`MetricsSink.close` (the run is over, or this process stops). The
coordinator and the simulators hand every round to the sinks the run names
(``--metrics-sink NAME``, see :mod:`veilfl.tracking.registry`) and never ask which
ones they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from veilfl.protocol.metrics import RoundMetrics

__all__ = ["MetricsSink", "SinkContext", "round_scalars"]


@runtime_checkable
class MetricsSink(Protocol):
    """Receives each completed round's metrics, in round order."""

    def round(self, metrics: RoundMetrics) -> None:
        """Record one completed round (evaluated, where the run evaluates)."""

    def close(self) -> None:
        """Write what is written once, flush, and release files or connections."""


@dataclass(frozen=True)
class SinkContext:
    """What a sink is opened with.

    Attributes:
        run_dir: The run folder; a sink that writes files writes them under it.
        title: A human name for the run (plots, experiment-tracker run names).
        history: Rounds completed before this process started (a resumed run), in order.
    """

    run_dir: Path
    title: str
    history: tuple[RoundMetrics, ...] = ()


def round_scalars(metrics: RoundMetrics) -> dict[str, float]:
    """A round's numbers as tracker tags, leaving out missing and non-finite values.

    The tags are ``train/loss``, ``test/loss``, ``test/accuracy`` (a fraction),
    ``federated/loss``, ``federated/accuracy``, ``federated/examples`` (federated
    evaluation of the model the round started from), ``privacy/epsilon`` (against the
    public), ``privacy/epsilon_coordinator``, ``privacy/delta``, ``round/clients``,
    ``round/excluded`` and ``round/seconds``.
    """
    values: dict[str, float | None] = {
        "train/loss": metrics.train_loss,
        "test/loss": metrics.test_loss,
        "test/accuracy": metrics.test_accuracy,
        "federated/loss": metrics.federated_loss,
        "federated/accuracy": metrics.federated_accuracy,
        "federated/examples": metrics.federated_examples,
        "privacy/epsilon": metrics.epsilon,
        "privacy/epsilon_coordinator": metrics.epsilon_coordinator,
        "privacy/delta": metrics.delta,
        "round/clients": float(metrics.num_clients),
        "round/excluded": float(len(metrics.excluded)),
        "round/seconds": metrics.seconds,
    }
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
