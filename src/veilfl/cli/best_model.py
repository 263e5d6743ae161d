"""The best model on the command line: ``--best-metric NAME``, by which metric a run
keeps its best model in ``checkpoints/best.safetensors`` (declared once, for ``veilfl
server`` and ``veilfl simulate``; ``best-metric = "..."`` in veilfl.toml; ``veilfl export
--best`` writes it), and :class:`SimulatedBestModel`, which keeps it for ``veilfl
simulate`` (the coordinator keeps it in :mod:`veilfl.server.round_reports`)."""

from __future__ import annotations

import argparse

from veilfl.protocol.best_model import BestMetric, BestModel, BestModelKeeper
from veilfl.protocol.metrics import RoundMetrics
from veilfl.server.checkpoints import CheckpointStore
from veilfl.tensors import Weights

__all__ = ["SimulatedBestModel", "add_best_metric_option"]


def add_best_metric_option(parser: argparse.ArgumentParser) -> None:
    """``--best-metric NAME`` (one of :class:`~veilfl.protocol.best_model.BestMetric`)."""
    parser.add_argument(
        "--best-metric",
        type=str.lower,
        choices=[m.value for m in BestMetric],
        default=BestMetric.AUTO.value,
        help="keep the best model by this metric in checkpoints/best.safetensors (losses "
        "minimised; auto: federated accuracy where clients evaluate, else test accuracy); "
        "veilfl export --best writes it",
    )


class SimulatedBestModel:
    """Keeps a simulation's best model in ``checkpoints``: give it each model the
    simulation serves (:meth:`model`, the simulators' ``on_model``) and then each
    round's metrics (:meth:`round`). It holds the last two models, since a round's
    federated metrics score the model it started from.

    Args:
        checkpoints: Where ``best.safetensors`` goes.
        metric: What "best" means.
    """

    def __init__(self, checkpoints: CheckpointStore, metric: BestMetric) -> None:
        self._checkpoints = checkpoints
        self._keeper = BestModelKeeper(metric)
        self._models: dict[int, Weights] = {}

    @property
    def best(self) -> BestModel | None:
        """The best version so far."""
        return self._keeper.best

    def model(self, version: int, weights: Weights) -> None:
        """The simulation serves ``version`` now."""
        self._models = {v: w for v, w in self._models.items() if v >= version - 1}
        self._models[version] = weights

    def round(self, metrics: RoundMetrics) -> BestModel | None:
        """A round completed (after its model was given): the new best, written, if it
        is one."""
        if not self._models:
            return None
        best = self._keeper.offer(metrics, version=max(self._models))
        if best is None or best.version not in self._models:
            return None
        self._checkpoints.save_best(best, self._models[best.version])
        return best
