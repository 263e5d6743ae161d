"""Secure aggregation over loopback with 3 aggregator processes, one killed mid-round.

The test plays the clients itself, so it knows every delta: the model the coordinator
reconstructs must equal the plaintext weighted mean within the quantisation bound,
although aggregator 3 died halfway through the uploads and one client dropped out
after reaching only aggregator 1.
"""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.e2e.processes import (
    HandClient,
    free_port,
    running,
    veilfl_command,
    wait_until_serving,
)
from veilfl.tls import client_ssl_context

from veilfl.auth.admission import ADMISSION_HEADER
from veilfl.cli.local_fleet import local_aggregators, local_trust, server_aggregator_flags
from veilfl.client.signing import for_round
from veilfl.crypto.csprng import CsprngStream
from veilfl.keyfiles import PublicKeyFile
from veilfl.secagg.client_shares import seal_update
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.tensors import flatten, spec_of, unflatten
from veilfl.wire.tensor_codec import decode_weights

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _wait_for_version(http: httpx.Client, version: int, timeout_s: float = 60.0) -> None:
    """Poll the (public) status until the model reaches ``version``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http.get("/v1/status").json()["model_version"] >= version:
            return
        time.sleep(0.1)
    raise AssertionError(f"model version {version} never appeared")


def test_round_completes_correctly_with_an_aggregator_killed_mid_round(tmp_path: Path) -> None:
    # Arrange: keys, 3 aggregators and a coordinator on loopback.
    coordinator_port = free_port()
    url = f"https://127.0.0.1:{coordinator_port}"
    trust = local_trust(tmp_path / "trust", aggregators=3, clients=5)
    verify = client_ssl_context(trust.ca_file)
    fleet = local_aggregators(tmp_path / "keys", count=3, coordinator_url=url, trust=trust)
    aggregator_urls = [a.url for a in fleet]
    aggregator_cmds = [a.command for a in fleet]
    server_flags = server_aggregator_flags(fleet)
    server = veilfl_command(
        "server",
        "--run-dir",
        str(tmp_path / "run"),
        "--port",
        str(coordinator_port),
        "--rounds",
        "1",
        "--clients-per-round",
        "5",
        "--min-clients",
        "3",
        "--round-timeout",
        "15",
        "--threshold",
        "2",
        "--max-clients",
        "10",
        "--max-samples-per-client",
        "1000",
        "--test-examples",
        "100",
        *server_flags,
        *trust.coordinator_flags(),
    )
    with ExitStack() as stack, httpx.Client(base_url=url, timeout=30, verify=verify) as http:
        coordinator = stack.enter_context(running(server, tmp_path / "server.log"))
        wait_until_serving(url, coordinator, tmp_path / "server.log", verify=verify)
        aggregators = [
            stack.enter_context(running(cmd, tmp_path / f"aggregator-{i}.log"))
            for i, cmd in enumerate(aggregator_cmds, start=1)
        ]
        for aggregator_url, process in zip(aggregator_urls, aggregators, strict=True):
            wait_until_serving(aggregator_url, process, tmp_path / "aggregator.log", verify=verify)

        run = http.get("/v1/run").json()
        config = SecureAggregationConfig(**run["secure"]["config"])
        keys = [PublicKeyFile.from_json(a).key for a in run["secure"]["aggregators"]]
        hands = {
            hand.client_id: hand
            for hand in (
                HandClient.enroll(http, url, name=n, token=token)
                for n, token in zip("abcde", trust.tokens, strict=True)
            )
        }
        clients = list(hands)
        start, _ = decode_weights(http.get("/v1/model", auth=hands[clients[0]].auth).content)
        spec = spec_of(start)
        rng = np.random.default_rng(0)
        deltas = {c: rng.normal(0, 0.01, spec.total_size).astype(np.float32) for c in clients}
        samples = dict(zip(clients, [100, 250, 400, 700, 900], strict=True))
        admissions = {}
        for client in clients:
            task = http.get(f"/v1/clients/{client}/task", auth=hands[client].auth).json()
            assert task["kind"] == "train"
            admissions[client] = task["admission"]

        def upload(client: str, reach: list[int]) -> list[int]:
            sealed = seal_update(
                deltas[client],
                num_samples=samples[client],
                loss=1.0,
                config=config,
                public_keys=keys,
                run_id=run["run_id"],
                round_id=1,
                client_id=client,
                rng=CsprngStream(),
            )
            acknowledged = []
            for share in sealed:
                if share.aggregator_index not in reach:
                    continue
                try:
                    response = http.post(
                        f"{aggregator_urls[share.aggregator_index - 1]}/v1/rounds/1/shares",
                        content=share.envelope,
                        headers={ADMISSION_HEADER: admissions[client]},
                        auth=hands[client].aggregator_auth(share.aggregator_index),
                        extensions=for_round(1),
                        timeout=10,
                    )
                except httpx.TransportError:
                    continue
                if response.status_code == 202:
                    acknowledged.append(share.aggregator_index)
            return acknowledged

        def report(client: str, acknowledged: list[int]) -> None:
            response = http.post(
                "/v1/rounds/1/receipts",
                json={"client_id": client, "base_version": 0, "aggregators": acknowledged},
                auth=hands[client].auth,
                extensions=for_round(1),
            )
            assert response.status_code == 202, response.text

        # Act: two clients reach all three aggregators ...
        for client in clients[:2]:
            report(client, upload(client, [1, 2, 3]))
        # ... aggregator 3 dies mid-round ...
        aggregators[2].send_signal(signal.SIGKILL)
        aggregators[2].wait(timeout=30)
        # ... two more clients reach only the survivors ...
        for client in clients[2:4]:
            acknowledged = upload(client, [1, 2, 3])
            assert acknowledged == [1, 2]
            report(client, acknowledged)
        # ... and one drops out after reaching aggregator 1 alone (it never reports).
        assert upload(clients[4], [1]) == [1]
        _wait_for_version(http, 1)
        final, _ = decode_weights(
            http.get("/v1/model", auth=hands[clients[0]].auth).content, spec=spec
        )

    # Assert: the plaintext weighted mean of the four reporters, within the bound.
    reporters = clients[:4]
    weights = np.array([samples[c] / 1000 for c in reporters])
    mean = sum(w * deltas[c].astype(np.float64) for w, c in zip(weights, reporters, strict=True))
    mean /= weights.sum()
    expected = unflatten((flatten(start, spec) + mean).astype(np.float32), spec)
    # Σw·Δ and Σw are each off by at most B, so the mean is off by (B + B·|mean|)/(Σw - B);
    # 1e-6 covers rounding the new model to float32.
    b = config.encoding().quantisation_bound(len(reporters))
    bound = unflatten(
        ((b + b * np.abs(mean)) / (weights.sum() - b) + 1e-6).astype(np.float32), spec
    )
    for name in spec.names:
        assert np.all(np.abs(final[name] - expected[name]) <= bound[name]), name
