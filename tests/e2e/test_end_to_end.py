"""A real coordinator and three client processes over loopback HTTP, on MNIST."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest
from tests.e2e.processes import PLAINTEXT, free_port, running, veilfl_command, wait_until_serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_three_clients_train_mnist_and_accuracy_rises(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    run_dir = tmp_path / "run"
    server_log = tmp_path / "server.log"
    data = ["--num-clients", "3", "--examples-per-client", "1500"]
    server = veilfl_command(
        "server",
        "--run-dir",
        str(run_dir),
        "--port",
        str(port),
        "--rounds",
        "3",
        "--clients-per-round",
        "3",
        "--min-clients",
        "3",
        "--test-examples",
        "2000",
        "--lr",
        "0.05",
        "--momentum",
        "0.9",
        "--linger",
        "5",
        *PLAINTEXT,
    )
    with ExitStack() as stack:
        coordinator = stack.enter_context(running(server, server_log))
        wait_until_serving(url, coordinator, server_log)
        clients = []
        for index in range(3):
            log = tmp_path / f"client-{index}.log"
            cmd = veilfl_command(
                "client",
                "--server",
                url,
                "--client-index",
                str(index),
                *data,
                "--insecure",
                "--allow-plaintext",
            )
            clients.append((stack.enter_context(running(cmd, log)), log))
        for process, log in clients:
            assert process.wait(timeout=240) == 0, log.read_text()[-3000:]
        assert coordinator.wait(timeout=60) == 0, server_log.read_text()[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    accuracies = [row["test_accuracy"] for row in metrics]
    assert [row["round_id"] for row in metrics] == [1, 2, 3]
    assert all(row["num_clients"] == 3 for row in metrics)
    assert accuracies[-1] > 0.85
    assert accuracies[-1] > accuracies[0] or accuracies[0] > 0.9
    assert (run_dir / "metrics.png").stat().st_size > 0
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.safetensors"))[-1].endswith(
        "03.safetensors"
    )
