"""The coordinator keeps the best model by ``--best-metric`` in the run folder, across
a restart, and ``veilfl export --best`` writes it; ``veilfl simulate`` does the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.cli.processes import write_tiny_mnist

from veilfl.cli.export_cmd import export_model
from veilfl.cli.main import main
from veilfl.errors import ConfigurationError
from veilfl.protocol.best_model import BestMetric
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.effects import RoundOutcome
from veilfl.protocol.messages import ClientReport
from veilfl.protocol.metrics import Evaluation, RoundMetrics
from veilfl.server.checkpoints import CheckpointStore
from veilfl.server.round_reports import RoundReports
from veilfl.tensors import Weights, spec_of
from veilfl.wire.tensor_codec import decode_weights

pytestmark = pytest.mark.timeout(300)

SPEC = spec_of({"w": np.zeros(2, np.float32)})


class _Recorder:
    def record_evaluation(self, metrics: RoundMetrics) -> None:
        pass


def _model(version: int) -> Weights:
    return {"w": np.full(2, float(version), np.float32)}


def _outcome(round_id: int, *, federated_loss: float | None = None) -> RoundOutcome:
    cohort = ClosedCohort(
        round_id=round_id,
        base_version=round_id - 1,
        participants=(ClientReport("c1", 10, 1.0),),
        opened_at=0.0,
        closed_at=1.0,
        sampled=1,
    )
    metrics = RoundMetrics(
        round_id,
        1,
        0.5,
        None,
        None,
        seconds=1.0,
        federated_loss=federated_loss,
        federated_accuracy=None if federated_loss is None else 0.5,
        federated_examples=None if federated_loss is None else 10.0,
    )
    weights = _model(round_id)["w"]
    return RoundOutcome(cohort, metrics, new_version=round_id, weights=weights)


def _reports(
    run_dir: Path, metric: BestMetric, accuracy: dict[int, float] | None = None
) -> RoundReports:
    def evaluate(weights: Weights) -> Evaluation:
        assert accuracy is not None
        return Evaluation(loss=1.0, accuracy=accuracy[int(weights["w"][0])])

    return RoundReports(
        run_dir,
        _Recorder(),  # type: ignore[arg-type]
        spec=SPEC,
        evaluate=None if accuracy is None else evaluate,
        history=[],
        title="veilfl run test",
        checkpoints=CheckpointStore(run_dir / "checkpoints", model_name="tiny"),
        best_metric=metric,
    )


def _play(reports: RoundReports, run_dir: Path, outcomes: list[RoundOutcome]) -> None:
    store = CheckpointStore(run_dir / "checkpoints", model_name="tiny")
    store.save(0, _model(0))
    for outcome in outcomes:
        store.save(outcome.new_version, _model(outcome.new_version))  # as RunRecorder does
        reports(outcome)


def test_the_best_test_accuracy_is_kept_and_export_best_writes_it(tmp_path: Path) -> None:
    # Arrange: the server's test accuracy peaks at round 2 of 4.
    accuracy = {1: 0.5, 2: 0.8, 3: 0.6, 4: 0.79}
    reports = _reports(tmp_path, BestMetric.TEST_ACCURACY, accuracy)
    # Act
    _play(reports, tmp_path, [_outcome(r) for r in accuracy])
    reports.close()
    out = tmp_path / "best.safetensors"
    metadata = export_model(tmp_path, out, best=True)
    # Assert
    weights, written = decode_weights(out.read_bytes())
    np.testing.assert_array_equal(weights["w"], _model(2)["w"])
    assert written["version"] == metadata["version"] == "2"
    assert (written["best_metric"], float(written["best_value"])) == ("test_accuracy", 0.8)
    assert written["model_name"] == "tiny"


def test_a_federated_loss_scores_the_model_the_round_started_from_across_a_restart(
    tmp_path: Path,
) -> None:
    # Arrange: round r's clients evaluated version r - 1; the lowest loss is round 3's,
    # so version 2 is best. The coordinator restarts after round 3.
    losses = {1: 2.0, 2: 1.5, 3: 0.75, 4: 0.9, 5: 1.0}
    first = _reports(tmp_path, BestMetric.FEDERATED_LOSS)
    _play(first, tmp_path, [_outcome(r, federated_loss=losses[r]) for r in (1, 2, 3)])
    first.close()
    # Act: a new process (same run folder) sees worse rounds only.
    second = _reports(tmp_path, BestMetric.FEDERATED_LOSS)
    for r in (4, 5):
        CheckpointStore(tmp_path / "checkpoints").save(r, _model(r))
        second(_outcome(r, federated_loss=losses[r]))
    second.close()
    # Assert
    kept = CheckpointStore(tmp_path / "checkpoints").load_best()
    assert kept is not None
    weights, best, _ = kept
    assert (best.version, best.round_id, best.value) == (2, 3, 0.75)
    np.testing.assert_array_equal(weights["w"], _model(2)["w"])


def test_export_best_without_a_best_model_is_one_line(tmp_path: Path) -> None:
    CheckpointStore(tmp_path / "checkpoints").save(0, _model(0))
    with pytest.raises(ConfigurationError, match="holds no best model yet"):
        export_model(tmp_path, tmp_path / "out.safetensors", best=True)


def test_simulate_keeps_the_best_model_by_the_chosen_metric(tmp_path: Path) -> None:
    # Arrange
    mnist = write_tiny_mnist(tmp_path / "mnist")
    run_dir = tmp_path / "run"
    # Act
    code = main(
        [
            "simulate",
            *("--mnist-dir", str(mnist), "--num-clients", "4", "--clients-per-round", "2"),
            *("--min-clients", "2", "--rounds", "3", "--max-batches", "1"),
            *("--batch-size", "8", "--test-examples", "30", "--run-dir", str(run_dir)),
            *("--best-metric", "test_loss"),
        ]
    )
    out = tmp_path / "best.safetensors"
    exported = main(["export", "--run-dir", str(run_dir), "--out", str(out), "--best"])
    # Assert: the round with the lowest test loss in metrics.json (the first on a tie).
    assert code == 0 and exported == 0
    rows = json.loads((run_dir / "metrics.json").read_text())
    best_row = min(rows, key=lambda row: (row["test_loss"], row["round_id"]))
    _, written = decode_weights(out.read_bytes())
    assert written["best_metric"] == "test_loss"
    assert written["version"] == str(best_row["round_id"])
    assert float(written["best_value"]) == pytest.approx(best_row["test_loss"])
