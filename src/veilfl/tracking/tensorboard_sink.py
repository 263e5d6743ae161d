"""TensorBoard event files under ``<run dir>/tensorboard``, one scalar per tag and round
(the tags of :func:`veilfl.tracking.sink.round_scalars`, the round as the step).

It uses ``torch.utils.tensorboard``, which needs the ``tensorboard`` package: the
``tensorboard`` extra (``pip install ".[tensorboard]"`` in the checkout). View the run
with ``tensorboard --logdir <run dir>/tensorboard``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from veilfl.protocol.metrics import RoundMetrics
from veilfl.tracking.sink import SinkContext, round_scalars

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["LOG_FOLDER", "TensorBoardSink"]

LOG_FOLDER = "tensorboard"
"""The folder, inside the run folder, that holds the event files."""


class TensorBoardSink:
    """Writes each round's scalars to TensorBoard event files, flushed every round.

    Args:
        log_dir: The folder of the event files (created if missing).
    """

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer: SummaryWriter = SummaryWriter(log_dir=str(log_dir))

    @classmethod
    def open(cls, context: SinkContext) -> TensorBoardSink:
        """The sink for a run (the registry's factory): ``<run dir>/tensorboard``."""
        return cls(context.run_dir / LOG_FOLDER)

    def round(self, metrics: RoundMetrics) -> None:
        """Add the round's scalars at step ``round_id`` and flush them to disk."""
        for tag, value in round_scalars(metrics).items():
            self._writer.add_scalar(tag, value, global_step=metrics.round_id)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()
