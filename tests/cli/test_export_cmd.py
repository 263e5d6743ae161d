"""``veilfl export`` writes the latest or a chosen global model with its model name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from veilfl.cli.main import main
from veilfl.errors import StorageError
from veilfl.server.checkpoints import CheckpointStore
from veilfl.server.run_store import RoundRecord, RunStore
from veilfl.wire.tensor_codec import decode_weights


def _weights(version: int) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 3), float(version), dtype=np.float32)}


def _run(run_dir: Path, *, completed: int, written: int) -> None:
    """A run whose rounds 1..completed are recorded, with checkpoints 0..written."""
    store = CheckpointStore(run_dir / "checkpoints", model_name="pkg.mod:learner")
    for version in range(written + 1):
        store.save(version, _weights(version))
    with RunStore(run_dir / "run.sqlite") as runs:
        runs.initialise("run-1", {"model_name": "pkg.mod:learner"})
        for round_id in range(1, completed + 1):
            runs.record_round(
                RoundRecord(round_id, round_id - 1, round_id, 0.0, 1.0, 2, None, None, None, 1.0),
                [],
            )


def test_exports_the_last_completed_round_not_a_later_orphan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(tmp_path / "r", completed=2, written=3)  # version 3: a crash before its round row
    out = tmp_path / "model.safetensors"
    assert main(["export", "--run-dir", str(tmp_path / "r"), "--out", str(out)]) == 0
    weights, metadata = decode_weights(out.read_bytes())
    assert metadata == {"model_name": "pkg.mod:learner", "version": "2", "run_id": "run-1"}
    np.testing.assert_array_equal(weights["w"], _weights(2)["w"])
    assert capsys.readouterr().out == (
        f"wrote {out}: model pkg.mod:learner, version 2 of run run-1\n"
    )


def test_exports_a_chosen_version(tmp_path: Path) -> None:
    _run(tmp_path / "r", completed=2, written=2)
    out = tmp_path / "v1.safetensors"
    assert (
        main(["export", "--run-dir", str(tmp_path / "r"), "--out", str(out), "--version", "1"]) == 0
    )
    weights, metadata = decode_weights(out.read_bytes())
    assert metadata["version"] == "1"
    np.testing.assert_array_equal(weights["w"], _weights(1)["w"])


def test_a_version_past_the_last_round_or_no_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(tmp_path / "r", completed=1, written=1)
    out = str(tmp_path / "m.safetensors")
    assert main(["export", "--run-dir", str(tmp_path / "r"), "--out", out, "--version", "5"]) == 1
    assert capsys.readouterr().err == (
        "veilfl: error: Run run-1 has completed model versions 0..1; there is no version 5 "
        "to export.\n"
    )
    assert main(["export", "--run-dir", str(tmp_path / "empty"), "--out", out]) == 1
    assert "holds no run" in capsys.readouterr().err


def test_checkpoints_record_their_model_and_refuse_another(tmp_path: Path) -> None:
    CheckpointStore(tmp_path, model_name="simple-cnn").save(0, _weights(0))
    _, metadata = CheckpointStore(tmp_path).load_with_metadata(0)
    assert metadata["model_name"] == "simple-cnn"
    with pytest.raises(StorageError, match="belongs to the model simple-cnn, not mnist-cnn"):
        CheckpointStore(tmp_path, model_name="mnist-cnn").load(0)
