"""What happens after a round's model is served: evaluation, records, files, a log line.

:class:`RoundReports` consumes ``RoundCompleted`` notices one after another, in a worker
thread, off the request path: it evaluates the new model (server-side), adds the result
to the round's row, keeps the best model by ``--best-metric``
(:mod:`veilfl.protocol.best_model`: ``checkpoints/best.safetensors``, written
atomically), hands the row to the run's metrics sinks (:mod:`veilfl.tracking`:
``metrics.json`` and ``metrics.csv`` rewritten from the rows in memory, no re-read of
the database; TensorBoard or MLflow where chosen) and logs one line. ``metrics.png`` is
drawn on demand (``GET /v1/metrics.png``, :mod:`veilfl.server.metrics_plot`) and
written when :meth:`RoundReports.close` closes the sinks at the end of the run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from veilfl.errors import StorageError
from veilfl.protocol.best_model import BestMetric, BestModelKeeper
from veilfl.protocol.effects import RoundOutcome
from veilfl.protocol.metrics import EvaluateFn, RoundMetrics
from veilfl.reporting import format_round_fields, round_fields
from veilfl.server.checkpoints import CheckpointStore
from veilfl.server.run_setup import RunRecorder
from veilfl.tensors import TensorSpec, Weights, unflatten
from veilfl.tracking import SinkContext, open_sinks

__all__ = ["RoundReports"]

logger = logging.getLogger("veilfl.server")


class RoundReports:
    """Evaluates and records each completed round (see the module docstring).

    Args:
        run_dir: Where the metrics files go.
        recorder: Adds evaluations to the run store.
        spec: The model's tensors.
        evaluate: Server-side evaluation, or None.
        history: Metrics of rounds completed before this process started.
        title: The plot's title (and the tracked run's name).
        sinks: Metrics sinks beside the run folder's files (``--metrics-sink``).
        checkpoints: The run's checkpoints, where the best model is kept (None: not
            kept).
        best_metric: What "best" means (``--best-metric``).

    Raises:
        ConfigurationError: if a sink is unknown or its extra is not installed.
        StorageError: if a best model kept before cannot be read.
    """

    def __init__(
        self,
        run_dir: Path,
        recorder: RunRecorder,
        *,
        spec: TensorSpec,
        evaluate: EvaluateFn | None,
        history: list[RoundMetrics],
        title: str,
        sinks: Sequence[str] = (),
        checkpoints: CheckpointStore | None = None,
        best_metric: BestMetric = BestMetric.AUTO,
    ) -> None:
        self._recorder = recorder
        self._checkpoints = checkpoints
        self._best: BestModelKeeper | None = None
        if checkpoints is not None:
            kept = checkpoints.load_best()
            self._best = BestModelKeeper(best_metric, best=None if kept is None else kept[1])
        self._spec = spec
        self._evaluate = evaluate
        self._history = list(history)
        self._lock = threading.Lock()
        self._sinks = open_sinks(
            sinks, SinkContext(run_dir=run_dir, title=title, history=tuple(history))
        )

    @property
    def history(self) -> tuple[RoundMetrics, ...]:
        """Every completed round's metrics (evaluated once its evaluation is done)."""
        with self._lock:
            return tuple(self._history)

    def note(self, outcome: RoundOutcome) -> None:
        """A round completed: list it at once (its evaluation follows)."""
        self._keep(outcome.metrics)

    def _keep(self, metrics: RoundMetrics) -> None:
        with self._lock:
            kept = [m for m in self._history if m.round_id != metrics.round_id]
            self._history = sorted([*kept, metrics], key=lambda m: m.round_id)

    def __call__(self, outcome: RoundOutcome) -> None:
        """Evaluate, record, write and log one completed round."""
        metrics = outcome.metrics
        if self._evaluate is not None:
            evaluation = self._evaluate(unflatten(outcome.weights, self._spec))
            metrics = replace(metrics, test_loss=evaluation.loss, test_accuracy=evaluation.accuracy)
            self._recorder.record_evaluation(metrics)
        self._keep_best(metrics, outcome)
        self._keep(metrics)
        self._sinks.round(metrics)
        logger.info(
            "round complete: %s",
            format_round_fields(metrics),
            extra={"fields": round_fields(metrics)},
        )

    def _keep_best(self, metrics: RoundMetrics, outcome: RoundOutcome) -> None:
        if self._best is None or self._checkpoints is None:
            return
        best = self._best.offer(metrics, version=outcome.new_version)
        if best is None:
            return
        try:
            weights: Weights = (
                unflatten(outcome.weights, self._spec)
                if best.version == outcome.new_version
                else self._checkpoints.load(best.version)
            )
            self._checkpoints.save_best(best, weights)
        except StorageError as exc:  # the round stands; only its best copy is missing
            logger.warning("could not keep the best model, %s: %s", best.describe(), exc)
            return
        logger.info("best model so far: %s", best.describe())

    def close(self) -> None:
        """The run is over (or this process stops): write ``metrics.png`` and close the
        metrics sinks."""
        self._sinks.close()
