"""Progress within a round: how many clients trained (or batches, for one client), and
an estimate of the time left.

On a terminal a ``rich`` progress bar shows it, redrawn in place and gone when the
round's row is printed. When output is not a terminal (a log file, CI), plain lines
say the same at 25%, 50% and 75% of a round that takes a while, so logs stay short.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

if TYPE_CHECKING:
    from veilfl.ml.learner import Learner, TrainOutcome
    from veilfl.ml.training import TrainProgress
    from veilfl.protocol.messages import LocalTrainingPlan

DataT = TypeVar("DataT")

__all__ = [
    "CoordinatorProgress",
    "RoundProgress",
    "TrainedClients",
    "format_seconds",
    "train_progress",
    "use_live_display",
    "with_training_hook",
]


PLAIN_LINE_GAP_S = 5.0
"""Plain lines come at 25%, 50% and 75% of a round, and only once this many seconds
have passed since the round began or the last line."""


def use_live_display(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that can show a live progress bar."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 5 s`` or ``2 h 10 min``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


class RoundProgress:
    """Counts work done in the current round and shows it.

    Args:
        unit: What is counted, plural (``"clients trained"``, ``"batches"``).
        stream: Where a live bar is drawn (default: stderr); its being a terminal
            decides between the bar and plain lines.
        plain: Prints one plain line (default: ``print`` to stdout).
        live: Force the live bar on or off (default: when ``stream`` is a terminal).
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        *,
        unit: str,
        stream: TextIO | None = None,
        plain: Callable[[str], None] | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._unit = unit
        self._stream = stream or sys.stderr
        self._plain = plain or (lambda line: print(line, flush=True))
        self._live = use_live_display(self._stream) if live is None else live
        self._clock = clock
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None
        self._label = ""
        self._total: int | None = None
        self._done = 0
        self._started = 0.0
        self._quarters_shown = 0
        self._last_line = 0.0
        self._detail = ""

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> RoundProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the live bar, if any."""
        with self._lock:
            if self._bar is not None:
                self._bar.stop()
                self._bar = None
                self._task = None

    # ------------------------------------------------------------------ rounds
    def start(self, label: str, total: int | None) -> None:
        """A new round (or local training) begins: ``total`` units, if known."""
        with self._lock:
            self._label, self._total, self._done = label, total, 0
            self._started = self._clock()
            self._quarters_shown = 0
            self._last_line = self._started
            self._detail = ""
            if self._live:
                self._start_bar()

    def advance(self, done: int | None = None, *, detail: str | None = None) -> None:
        """``done`` units are done now (default: one more); ``detail`` is shown beside."""
        with self._lock:
            self._done = self._done + 1 if done is None else done
            if detail is not None:
                self._detail = detail
            if self._live:
                self._update_bar()
            else:
                self._maybe_plain_line()

    def set_detail(self, detail: str) -> None:
        """Change the text beside the bar (no plain line)."""
        with self._lock:
            self._detail = detail
            if self._live:
                self._update_bar()

    def finish(self) -> None:
        """The round is over: the bar goes (its row is printed by the caller)."""
        with self._lock:
            if self._bar is not None and self._task is not None:
                self._bar.remove_task(self._task)
                self._task = None
            self._total = None

    # ----------------------------------------------------------------- display
    def eta_seconds(self) -> float | None:
        """Estimated seconds left in the round, from the pace so far (None: unknown)."""
        if not self._total or self._done <= 0:
            return None
        elapsed = self._clock() - self._started
        return elapsed / self._done * max(0, self._total - self._done)

    def _maybe_plain_line(self) -> None:
        if not self._total:
            return
        quarters = min(3, 4 * self._done // self._total)
        if quarters <= self._quarters_shown or self._done >= self._total:
            return
        now = self._clock()
        if now - max(self._started, self._last_line) < PLAIN_LINE_GAP_S:
            return  # a quick round needs no progress lines
        self._quarters_shown = quarters
        self._last_line = now
        elapsed = now - self._started
        eta = self.eta_seconds()
        left = "" if eta is None else f", about {format_seconds(eta)} left"
        detail = f" ({self._detail})" if self._detail else ""
        self._plain(
            f"{self._label}: {self._done}/{self._total} {self._unit}{detail}, "
            f"{format_seconds(elapsed)} so far{left}"
        )

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        if self._bar is None:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self._unit),
                TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"),
                TextColumn("{task.fields[detail]}"),
                console=Console(file=self._stream, force_terminal=True),
                transient=True,
            )
            self._bar.start()
            atexit.register(self.close)  # never leave the terminal mid-bar
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(self._label, total=self._total, detail="", eta="")

    def _update_bar(self) -> None:
        if self._bar is None or self._task is None:
            return
        eta = self.eta_seconds()
        self._bar.update(
            self._task,
            completed=self._done,
            detail=self._detail,
            eta="" if eta is None else f"about {format_seconds(eta)} left",
        )


def with_training_hook(
    learner: Learner[DataT], *, before: Callable[[], None], after: Callable[[], None]
) -> Learner[DataT]:
    """The same learner (on the same device), calling ``before`` and ``after`` around
    each call of its ``train_fn``. The hook makes the training opaque, so the learner
    no longer counts as veilfl's SGD trainer (its clients are not batched)."""
    import dataclasses

    def train(model: Any, data: DataT, plan: LocalTrainingPlan) -> TrainOutcome:
        before()
        try:
            return learner.train_fn(model, data, plan)
        finally:
            after()

    return dataclasses.replace(learner, train_fn=train, local_sgd=None)


def train_progress(progress: RoundProgress) -> Callable[[TrainProgress], None]:
    """A :data:`~veilfl.ml.training.ProgressCallback` showing one local training's
    batches (epoch and running loss beside them) on ``progress``."""

    def show(step: TrainProgress) -> None:
        total = step.epochs * step.batches_per_epoch
        done = (step.epoch - 1) * step.batches_per_epoch + step.batch
        if done == 1:
            progress.start("local training", total)
        detail = f"epoch {step.epoch}/{step.epochs}, loss {step.running_loss:.4f}"
        progress.advance(done, detail=detail)
        if done >= total:
            progress.finish()

    return show


class TrainedClients:
    """Counts the clients trained in each round of a simulation, for ``progress``.

    Args:
        progress: Where to show it.
        per_round: Clients expected per round (None: unknown).
    """

    def __init__(self, progress: RoundProgress, *, per_round: int | None) -> None:
        self._progress = progress
        self._per_round = per_round
        self._round = 1
        self._trained = 0
        self._open = False
        self._lock = threading.Lock()

    def wrap(self, learner: Learner[DataT]) -> Learner[DataT]:
        """``learner``, counting its local trainings (through its ``train_fn``)."""
        return with_training_hook(learner, before=self._before, after=self._after)

    def trained(self) -> None:
        """One client's update is trained (a simulator's ``on_client_trained``)."""
        self._before()
        self._after()

    def batch(self, step: TrainProgress) -> None:
        """Show the training client's epoch and batch beside the bar."""
        self._progress.set_detail(
            f"epoch {step.epoch}/{step.epochs}, batch {step.batch}/{step.batches_per_epoch}"
        )

    def round_done(self, round_id: int) -> None:
        """Round ``round_id`` is complete; the next one starts counting."""
        with self._lock:
            self._progress.finish()
            self._round, self._trained, self._open = round_id + 1, 0, False

    def _before(self) -> None:
        with self._lock:
            if not self._open:
                self._open = True
                self._progress.start(f"round {self._round}", self._per_round)

    def _after(self) -> None:
        with self._lock:
            self._trained += 1
            self._progress.advance(self._trained)


class CoordinatorProgress:
    """Shows a running coordinator's open round from its ``/v1/status`` answers:
    updates received out of clients sampled (or a buffer's fill, in buffered runs)."""

    def __init__(self, progress: RoundProgress) -> None:
        self._progress = progress
        self._round: int | None = None

    def update(self, status: dict[str, Any]) -> None:
        """Take one status answer."""
        if status.get("done"):
            return
        round_id = status.get("round_id")
        if "buffer_size" in status:
            done, total, label = status.get("pending"), status.get("buffer_size"), "buffer"
        else:
            done, total, label = status.get("reported"), status.get("sampled"), "round"
        if not isinstance(round_id, int) or not isinstance(done, int):
            return
        if round_id != self._round:
            self._round = round_id
            self._progress.start(f"{label} {round_id}", total if isinstance(total, int) else None)
        self._progress.advance(done)

    def round_done(self) -> None:
        """A round's row is about to be printed."""
        self._progress.finish()

    def __enter__(self) -> CoordinatorProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.close()
