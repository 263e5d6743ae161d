"""TensorBoard event files, written when ``--metrics-sink tensorboard`` is set, read
back with TensorBoard's own (TensorFlow-free) event reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tests.cli.processes import write_tiny_mnist

from veilfl.cli.main import main
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.effects import RoundOutcome
from veilfl.protocol.messages import ClientReport
from veilfl.protocol.metrics import Evaluation, RoundMetrics
from veilfl.server.round_reports import RoundReports
from veilfl.tensors import spec_of

pytestmark = pytest.mark.timeout(300)


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_simulate_with_the_flag_writes_each_rounds_accuracy_loss_and_epsilon(
    tmp_path: Path,
) -> None:
    # Arrange
    mnist = write_tiny_mnist(tmp_path / "mnist")
    run_dir = tmp_path / "run"

    # Act
    code = main(
        [
            "simulate",
            *("--mnist-dir", str(mnist), "--num-clients", "6", "--clients-per-round", "3"),
            *("--min-clients", "2", "--rounds", "2", "--max-batches", "1"),
            *("--batch-size", "8", "--test-examples", "30", "--run-dir", str(run_dir)),
            *("--dp", "central", "--target-epsilon", "4", "--accounting", "pld"),
            *("--metrics-sink", "tensorboard"),
        ]
    )

    # Assert: the event files hold what metrics.json holds, round by round.
    assert code == 0
    rows = json.loads((run_dir / "metrics.json").read_text())
    scalars = _scalars(run_dir / "tensorboard")
    for tag, key in (
        ("test/accuracy", "test_accuracy"),
        ("test/loss", "test_loss"),
        ("privacy/epsilon", "epsilon"),
    ):
        assert [step for step, _ in scalars[tag]] == [1, 2], tag
        assert [value for _, value in scalars[tag]] == pytest.approx(
            [row[key] for row in rows], rel=1e-6
        ), tag
    assert [v for _, v in scalars["round/clients"]] == [row["num_clients"] for row in rows]
    assert (run_dir / "metrics.csv").exists() and (run_dir / "metrics.png").exists()


class _Recorder:
    def __init__(self) -> None:
        self.evaluated: list[RoundMetrics] = []

    def record_evaluation(self, metrics: RoundMetrics) -> None:
        self.evaluated.append(metrics)


def _outcome(round_id: int) -> RoundOutcome:
    cohort = ClosedCohort(
        round_id=round_id,
        base_version=round_id - 1,
        participants=(ClientReport("c1", 10, 1.0), ClientReport("c2", 10, 1.0)),
        opened_at=0.0,
        closed_at=1.0,
        sampled=2,
    )
    metrics = RoundMetrics(round_id, 2, 0.5, None, None, seconds=1.0, epsilon=0.5 * round_id)
    return RoundOutcome(cohort, metrics, new_version=round_id, weights=np.zeros(2, np.float32))


def test_the_coordinators_round_reports_send_evaluated_rounds_to_tensorboard(
    tmp_path: Path,
) -> None:
    # Arrange: the coordinator's reporter with the sink named, as veilfl server makes it.
    reports = RoundReports(
        tmp_path,
        _Recorder(),  # type: ignore[arg-type]
        spec=spec_of({"w": np.zeros(2, np.float32)}),
        evaluate=lambda weights: Evaluation(loss=2.0, accuracy=0.25),
        history=[],
        title="veilfl run test",
        sinks=["tensorboard"],
    )

    # Act
    reports(_outcome(1))
    reports(_outcome(2))
    reports.close()

    # Assert
    scalars = _scalars(tmp_path / "tensorboard")
    assert scalars["test/accuracy"] == [(1, 0.25), (2, 0.25)]
    assert scalars["test/loss"] == [(1, 2.0), (2, 2.0)]
    assert scalars["privacy/epsilon"] == [(1, 0.5), (2, 1.0)]
    assert [r["round_id"] for r in json.loads((tmp_path / "metrics.json").read_text())] == [1, 2]
    assert (tmp_path / "metrics.png").exists()
