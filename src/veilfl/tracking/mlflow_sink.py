"""MLflow: one MLflow run per veilfl run, each round's scalars logged at its step.

It logs through ``mlflow.tracking.MlflowClient`` (no global active run), to the
tracking server that ``MLFLOW_TRACKING_URI`` names (MLflow's own default otherwise), in
the experiment that ``MLFLOW_EXPERIMENT_NAME`` names (default ``veilfl``). It needs the
``mlflow`` extra (``pip install ".[mlflow]"`` in the checkout).
"""

from __future__ import annotations

import os
from typing import Any

from veilfl.protocol.metrics import RoundMetrics
from veilfl.tracking.sink import SinkContext, round_scalars

__all__ = ["DEFAULT_EXPERIMENT", "MlflowSink"]

DEFAULT_EXPERIMENT = "veilfl"
"""The MLflow experiment runs are logged to when ``MLFLOW_EXPERIMENT_NAME`` is unset."""


class MlflowSink:
    """Logs each round's scalars to an MLflow run, ended when the sink is closed.

    Args:
        run_name: The MLflow run's name.
        experiment: The MLflow experiment (created if missing).
    """

    def __init__(self, *, run_name: str, experiment: str = DEFAULT_EXPERIMENT) -> None:
        from mlflow.tracking import MlflowClient

        self._client: Any = MlflowClient()
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id if found is not None else self._client.create_experiment(experiment)
        )
        self._run_id: str = self._client.create_run(experiment_id, run_name=run_name).info.run_id

    @classmethod
    def open(cls, context: SinkContext) -> MlflowSink:
        """The sink for a run (the registry's factory)."""
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        return cls(run_name=context.title, experiment=experiment)

    def round(self, metrics: RoundMetrics) -> None:
        """Log the round's scalars at step ``round_id``."""
        for key, value in round_scalars(metrics).items():
            self._client.log_metric(self._run_id, key, value, step=metrics.round_id)

    def close(self) -> None:
        """Mark the MLflow run finished."""
        self._client.set_terminated(self._run_id)
