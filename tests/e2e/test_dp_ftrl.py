"""DP-FTRL over loopback: real processes, secure aggregation with 3 aggregators that
deal the tree's noise, and real clients; both observers get the same epsilon."""

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
CLIENTS = 3


def test_dp_ftrl_with_distributed_tree_noise_trains_and_reports_one_epsilon(
    tmp_path: Path,
) -> None:
    coordinator_port = free_port()
    url = f"https://127.0.0.1:{coordinator_port}"
    trust = local_trust(tmp_path / "trust", aggregators=3, clients=CLIENTS)
    verify = client_ssl_context(trust.ca_file)
    fleet = local_aggregators(tmp_path / "keys", count=3, coordinator_url=url, trust=trust)
    run_dir = tmp_path / "run"
    server = veilfl_command(
        "server",
        "--run-dir",
        str(run_dir),
        "--port",
        str(coordinator_port),
        "--rounds",
        "2",
        "--clients-per-round",
        str(CLIENTS),
        "--min-clients",
        str(CLIENTS),
        "--min-available",
        str(CLIENTS),
        "--threshold",
        "2",
        "--dp",
        "distributed",
        "--dp-mechanism",
        "ftrl",
        "--noise-multiplier",
        "1.0",
        "--clip-norm",
        "1.0",
        "--test-examples",
        "500",
        "--linger",
        "20",
        *server_aggregator_flags(fleet),
        *trust.coordinator_flags(),
    )
    with ExitStack() as stack:
        coordinator = stack.enter_context(running(server, tmp_path / "server.log"))
        wait_until_serving(url, coordinator, tmp_path / "server.log", verify=verify)
        for index, aggregator in enumerate(fleet, start=1):
            log = tmp_path / f"aggregator-{index}.log"
            process = stack.enter_context(running(aggregator.command, log))
            wait_until_serving(aggregator.url, process, log, verify=verify)
        clients = []
        for index in range(CLIENTS):
            log = tmp_path / f"client-{index}.log"
            cmd = veilfl_command(
                "client",
                "--server",
                url,
                "--client-index",
                str(index),
                "--num-clients",
                str(CLIENTS),
                "--examples-per-client",
                "300",
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
    assert [row["round_id"] for row in metrics] == [1, 2]
    assert all(row["num_clients"] == CLIENTS for row in metrics)
    # No sampling to hide behind: the coordinator's epsilon is the public's, and it grows.
    epsilons = [row["epsilon"] for row in metrics]
    assert all(e is not None and e > 0 for e in epsilons) and epsilons[1] > epsilons[0]
    assert [row["epsilon_coordinator"] for row in metrics] == epsilons
