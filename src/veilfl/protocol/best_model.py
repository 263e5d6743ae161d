"""Which model version is the best so far, by a chosen metric (``--best-metric``).

Pure bookkeeping: :class:`BestModelKeeper` is offered each completed round's metrics
with the version the round produced and says when a version beats the best so far;
the edges (the coordinator's round reports, ``veilfl simulate``) then write that
version's weights durably (:class:`veilfl.server.checkpoints.CheckpointStore`), and
``veilfl export --best`` writes them out.

A round's server-side test metrics measure the model it produced (version v); its
federated metrics measure the model it started from (version v - 1), which every
client of a synchronous round received and evaluated before training. Accuracies are
maximised, losses minimised; a tie keeps the earlier version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from veilfl.errors import ConfigurationError
from veilfl.protocol.metrics import RoundMetrics

__all__ = ["BestMetric", "BestModel", "BestModelKeeper"]


class BestMetric(StrEnum):
    """What "best" means. ``auto``: federated accuracy where clients evaluate, else
    the server's test accuracy (decided by the first round that reports either)."""

    AUTO = "auto"
    FEDERATED_ACCURACY = "federated_accuracy"
    FEDERATED_LOSS = "federated_loss"
    TEST_ACCURACY = "test_accuracy"
    TEST_LOSS = "test_loss"

    @property
    def minimised(self) -> bool:
        """Whether lower is better (losses)."""
        return self in (BestMetric.FEDERATED_LOSS, BestMetric.TEST_LOSS)

    @property
    def federated(self) -> bool:
        """Whether it is measured on the model a round started from."""
        return self in (BestMetric.FEDERATED_ACCURACY, BestMetric.FEDERATED_LOSS)

    @classmethod
    def parse(cls, name: str) -> BestMetric:
        """The metric named ``name``.

        Raises:
            ConfigurationError: naming the choices, for another name.
        """
        try:
            return cls(name.lower().replace("-", "_"))
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ConfigurationError(
                f"--best-metric {name!r} is not a metric; choose one of {choices}."
            ) from None


@dataclass(frozen=True)
class BestModel:
    """The best version so far.

    Attributes:
        version: The model version.
        round_id: The round whose metrics scored it.
        metric: The metric (never ``auto``).
        value: Its value.
    """

    version: int
    round_id: int
    metric: BestMetric
    value: float

    def to_metadata(self) -> dict[str, str]:
        """String metadata for the checkpoint file (without the version, which the
        checkpoint store records)."""
        return {
            "best_round_id": str(self.round_id),
            "best_metric": self.metric.value,
            "best_value": repr(self.value),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], *, version: int) -> BestModel | None:
        """Parse :meth:`to_metadata` output; None when it holds no best model."""
        try:
            return cls(
                version=version,
                round_id=int(metadata["best_round_id"]),
                metric=BestMetric(metadata["best_metric"]),
                value=float(metadata["best_value"]),
            )
        except (KeyError, ValueError):
            return None

    def describe(self) -> str:
        """One phrase for people: ``version 3 (test_accuracy 0.9412, round 3)``."""
        return (
            f"version {self.version} ({self.metric.value} {self.value:.4f}, round {self.round_id})"
        )


class BestModelKeeper:
    """Keeps track of the best version by ``metric`` (see the module docstring).

    Args:
        metric: The metric, or ``auto``.
        best: The best version recorded before (a resumed run), if any; it fixes
            ``auto`` to its metric.
    """

    def __init__(self, metric: BestMetric, *, best: BestModel | None = None) -> None:
        self._metric: BestMetric | None = None if metric is BestMetric.AUTO else metric
        self._best: BestModel | None = None
        if best is not None and (self._metric is None or best.metric is self._metric):
            self._metric = best.metric
            self._best = best

    @property
    def best(self) -> BestModel | None:
        """The best version so far, or None before any round scored one."""
        return self._best

    def offer(self, metrics: RoundMetrics, *, version: int) -> BestModel | None:
        """Round ``metrics`` produced model ``version``: the new best, if a version it
        scores beats the best so far; None otherwise."""
        metric = self._metric or self._auto(metrics)
        if metric is None:
            return None
        value = _value(metrics, metric)
        if value is None or not math.isfinite(value):
            return None
        self._metric = metric
        candidate = BestModel(
            version=version - 1 if metric.federated else version,
            round_id=metrics.round_id,
            metric=metric,
            value=value,
        )
        best = self._best
        if best is not None and not _better(candidate.value, best.value, metric):
            return None
        self._best = candidate
        return candidate

    @staticmethod
    def _auto(metrics: RoundMetrics) -> BestMetric | None:
        if metrics.federated_accuracy is not None:
            return BestMetric.FEDERATED_ACCURACY
        if metrics.test_accuracy is not None:
            return BestMetric.TEST_ACCURACY
        return None


def _value(metrics: RoundMetrics, metric: BestMetric) -> float | None:
    value: Any = getattr(metrics, metric.value)
    return None if value is None else float(value)


def _better(value: float, best: float, metric: BestMetric) -> bool:
    return value < best if metric.minimised else value > best
