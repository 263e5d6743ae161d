"""The run folder's own record: ``metrics.json`` and ``metrics.csv`` after every round,
``metrics.png`` at the end (the files :mod:`veilfl.reporting` writes)."""

from __future__ import annotations

from pathlib import Path

from veilfl.protocol.metrics import RoundMetrics
from veilfl.reporting import plot_metrics, write_metrics
from veilfl.tracking.sink import SinkContext

__all__ = ["FilesSink"]


class FilesSink:
    """Rewrites ``metrics.json`` and ``metrics.csv`` (every round so far) after each
    round, and draws ``metrics.png`` when closed.

    Args:
        run_dir: The run folder.
        title: The plot's title.
        history: Rounds completed before this process started.
    """

    def __init__(
        self, run_dir: Path, *, title: str, history: tuple[RoundMetrics, ...] = ()
    ) -> None:
        self._run_dir = run_dir
        self._title = title
        self._history = list(history)

    @classmethod
    def open(cls, context: SinkContext) -> FilesSink:
        """The sink for a run (the registry's factory)."""
        return cls(context.run_dir, title=context.title, history=context.history)

    def round(self, metrics: RoundMetrics) -> None:
        """Add (or replace) the round's row and rewrite both files."""
        kept = [m for m in self._history if m.round_id != metrics.round_id]
        self._history = sorted([*kept, metrics], key=lambda m: m.round_id)
        write_metrics(self._run_dir, self._history)

    def close(self) -> None:
        """Draw ``metrics.png`` from every round (nothing when there was none)."""
        if self._history:
            plot_metrics(self._run_dir, self._history, title=self._title)
