"""``veilfl simulate`` with the device, executor and strategy flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.cli.processes import write_tiny_mnist

from veilfl.cli.main import main


def _simulate(tmp_path: Path, *flags: str) -> int:
    mnist = write_tiny_mnist(tmp_path / "mnist")
    return main(
        [
            "simulate",
            "--mnist-dir",
            str(mnist),
            "--num-clients",
            "6",
            "--clients-per-round",
            "3",
            "--rounds",
            "2",
            "--max-batches",
            "1",
            "--test-examples",
            "30",
            "--run-dir",
            str(tmp_path / "run"),
            *flags,
        ]
    )


def test_a_simulation_with_a_server_optimiser_fedprox_and_a_device_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _simulate(
        tmp_path,
        "--server-optimizer",
        "fedyogi",
        "--server-tau",
        "0.01",
        "--proximal-mu",
        "0.01",
        "--device",
        "cpu",
        "--batch-clients",
        "2",
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "server fedyogi; training on cpu (inprocess)" in out
    rounds = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [r["round_id"] for r in rounds] == [1, 2]


def test_asking_for_a_gpu_torch_does_not_see_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = _simulate(tmp_path, "--device", "cuda:1")

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("veilfl: error: Device cuda:1 was asked for but torch sees no CUDA GPU")
    assert err.count("\n") == 1
