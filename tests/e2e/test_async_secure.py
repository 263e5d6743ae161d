"""FedBuff over loopback: secure aggregation with 3 aggregators and slow clients."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

import pytest
from tests.e2e.processes import free_port, running, veilfl_command, wait_until_serving

from veilfl.cli.local_fleet import (
    client_pin_flags,
    local_aggregators,
    local_trust,
    server_aggregator_flags,
)
from veilfl.tls import client_ssl_context

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_fedbuff_with_secure_aggregation_and_slow_clients(tmp_path: Path) -> None:
    coordinator_port = free_port()
    url = f"https://127.0.0.1:{coordinator_port}"
    trust = local_trust(tmp_path / "trust", aggregators=3, clients=4)
    verify = client_ssl_context(trust.ca_file)
    fleet = local_aggregators(tmp_path / "keys", count=3, coordinator_url=url, trust=trust)
    flags = server_aggregator_flags(fleet)
    aggregators = [(a.url, a.command) for a in fleet]
    run_dir = tmp_path / "run"
    server = veilfl_command(
        "server",
        "--run-dir",
        str(run_dir),
        "--port",
        str(coordinator_port),
        "--mode",
        "fedbuff",
        "--buffer-size",
        "2",
        "--max-staleness",
        "3",
        "--rounds",
        "4",
        "--min-clients",
        "2",
        "--min-available",
        "4",
        "--threshold",
        "2",
        "--test-examples",
        "1000",
        # Serve long enough after the last buffer for a slow client still training to
        # hear that the run is done (the default 3 s raced it on a loaded machine).
        "--linger",
        "20",
        *flags,
        *trust.coordinator_flags(),
    )
    data = ["--num-clients", "4", "--examples-per-client", "600"]
    with ExitStack() as stack:
        coordinator = stack.enter_context(running(server, tmp_path / "server.log"))
        wait_until_serving(url, coordinator, tmp_path / "server.log", verify=verify)
        for index, (aggregator_url, cmd) in enumerate(aggregators, start=1):
            log = tmp_path / f"aggregator-{index}.log"
            process = stack.enter_context(running(cmd, log))
            wait_until_serving(aggregator_url, process, log, verify=verify)
        clients = []
        for index in range(4):
            slow = ["--slowdown", "4"] if index >= 2 else []
            log = tmp_path / f"client-{index}.log"
            cmd = veilfl_command(
                "client",
                "--server",
                url,
                "--client-index",
                str(index),
                *data,
                *slow,
                "--ca-cert",
                str(trust.ca_file),
                "--enrollment-token",
                trust.tokens[index],
                *client_pin_flags(fleet),
            )
            clients.append((stack.enter_context(running(cmd, log)), log))
        for process, log in clients:
            assert process.wait(timeout=240) == 0, log.read_text()[-3000:]
        assert coordinator.wait(timeout=60) == 0, (tmp_path / "server.log").read_text()[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["round_id"] for row in metrics] == [1, 2, 3, 4]
    assert all(row["num_clients"] == 2 for row in metrics)
    assert metrics[-1]["test_accuracy"] > metrics[0]["test_accuracy"]
    # The fast clients did not wait for the slow ones: they filled more buffers.
    logs = [log.read_text() for _, log in clients]
    uploads = [text.count("uploaded (") for text in logs]
    assert sum(uploads) >= 8
    assert min(uploads[:2]) > max(uploads[2:])
