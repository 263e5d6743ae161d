"""Progress within a round: plain lines off a terminal, a live bar on one."""

from __future__ import annotations

import io

from veilfl.cli.progress import (
    CoordinatorProgress,
    RoundProgress,
    TrainedClients,
    format_seconds,
    train_progress,
)
from veilfl.ml.learner import Learner, TrainOutcome
from veilfl.ml.training import TrainProgress
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.metrics import Evaluation


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _plain(clock: Clock, unit: str = "clients trained") -> tuple[RoundProgress, list[str]]:
    lines: list[str] = []
    return RoundProgress(unit=unit, plain=lines.append, live=False, clock=clock), lines


def test_a_slow_round_gets_a_line_at_each_quarter_with_an_eta() -> None:
    clock = Clock()
    progress, lines = _plain(clock)
    progress.start("round 3", 8)
    for done in range(1, 9):
        clock.now += 4.0  # 4 s per client
        progress.advance(done)
    assert lines == [
        "round 3: 2/8 clients trained, 8 s so far, about 24 s left",
        "round 3: 4/8 clients trained, 16 s so far, about 16 s left",
        "round 3: 6/8 clients trained, 24 s so far, about 8 s left",
    ]


def test_a_quick_round_prints_nothing() -> None:
    clock = Clock()
    progress, lines = _plain(clock)
    progress.start("round 1", 4)
    for done in range(1, 5):
        clock.now += 0.5
        progress.advance(done)
    assert lines == []


def test_eta_is_unknown_before_the_first_unit_and_without_a_total() -> None:
    clock = Clock()
    progress, _ = _plain(clock)
    progress.start("round 1", 10)
    assert progress.eta_seconds() is None
    clock.now += 3
    progress.advance(3)
    assert progress.eta_seconds() == 7.0
    progress.start("buffer 2", None)
    progress.advance(1)
    assert progress.eta_seconds() is None


def test_the_live_bar_draws_on_a_terminal_and_is_removed() -> None:
    stream = io.StringIO()
    with RoundProgress(unit="clients trained", stream=stream, live=True) as progress:
        progress.start("round 1", 4)
        progress.advance(1, detail="epoch 1/2")
        progress.finish()
    out = stream.getvalue()
    assert "round 1" in out and "clients trained" in out


def test_trained_clients_count_per_round_through_the_learner() -> None:
    clock = Clock()
    progress, lines = _plain(clock)
    counter = TrainedClients(progress, per_round=4)

    def train(model: object, data: int, plan: LocalTrainingPlan) -> TrainOutcome:
        clock.now += 10.0
        return TrainOutcome(num_samples=data, mean_loss=0.0)

    learner = counter.wrap(
        Learner(model_fn=object, train_fn=train, evaluate_fn=lambda m, d: Evaluation(0.0, 1.0))  # type: ignore[arg-type]
    )
    for _ in range(4):
        learner.train_fn(None, 5, LocalTrainingPlan())  # type: ignore[arg-type]
    counter.round_done(1)
    learner.train_fn(None, 5, LocalTrainingPlan())  # type: ignore[arg-type]
    assert lines[0] == "round 1: 1/4 clients trained, 10 s so far, about 30 s left"
    assert lines[-1].startswith("round 2: 1/4 clients trained")


def test_local_training_batches_are_counted_across_epochs() -> None:
    clock = Clock()
    progress, lines = _plain(clock, unit="batches")
    show = train_progress(progress)
    for epoch in (1, 2):
        for batch in range(1, 5):
            clock.now += 2.0
            step = TrainProgress(
                epoch=epoch, epochs=2, batch=batch, batches_per_epoch=4, running_loss=0.5
            )
            show(step)
    # the clock starts at the first batch's report; 5 s pass before the first line
    assert lines == [
        "local training: 4/8 batches (epoch 1/2, loss 0.5000), 6 s so far, about 6 s left",
        "local training: 7/8 batches (epoch 2/2, loss 0.5000), 12 s so far, about 2 s left",
    ]


def test_coordinator_status_drives_rounds_and_buffers() -> None:
    clock = Clock()
    progress, lines = _plain(clock, unit="updates received")
    watcher = CoordinatorProgress(progress)
    for reported in range(5):
        clock.now += 6.0
        watcher.update({"round_id": 2, "sampled": 4, "reported": reported, "done": False})
    assert lines[0] == "round 2: 1/4 updates received, 6 s so far, about 18 s left"
    watcher.round_done()
    watcher.update({"round_id": 1, "pending": 0, "buffer_size": 2, "done": False})
    clock.now += 6.0
    watcher.update({"round_id": 1, "pending": 1, "buffer_size": 2, "done": False})
    assert lines[-1].startswith("buffer 1: 1/2 updates received")
    watcher.update({"done": True})


def test_format_seconds() -> None:
    assert [format_seconds(s) for s in (0.4, 59, 61, 3600 + 125)] == [
        "0 s",
        "59 s",
        "1 min 1 s",
        "1 h 2 min",
    ]
