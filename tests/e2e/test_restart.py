"""A coordinator killed after round 2 and restarted resumes at round 3, with its
privacy state: a DP run (central noise, adaptive clipping) continues the same epsilon
and clipping norm after the kill."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.e2e.processes import (
    PLAINTEXT,
    HandClient,
    free_port,
    running,
    veilfl_command,
    wait_until_serving,
)

from veilfl.protocol.messages import UpdateHeader
from veilfl.transport.signing import for_round
from veilfl.wire.tensor_codec import decode_weights, encode_weights

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _play_round(http: httpx.Client, clients: list[HandClient], seed: int) -> None:
    """Act as every client for one round: fetch the model, upload a small delta."""
    rng = np.random.default_rng(seed)
    for client in clients:
        client_id = client.client_id
        task = http.get(f"/v1/clients/{client_id}/task", auth=client.auth).json()
        assert task["kind"] == "train", task
        weights, _ = decode_weights(http.get("/v1/model", auth=client.auth).content)
        delta = {
            name: rng.normal(0, 0.01, size=array.shape).astype(np.float32)
            for name, array in weights.items()
        }
        header = UpdateHeader(
            client_id=client_id,
            round_id=task["round_id"],
            base_version=task["model_version"],
            num_samples=10,
            loss=1.0,
        )
        response = http.post(
            f"/v1/rounds/{task['round_id']}/updates",
            content=encode_weights(delta, metadata=header.to_metadata()),
            auth=client.auth,
            extensions=for_round(task["round_id"]),
        )
        assert response.status_code == 202, response.text


def _wait_for_round(http: httpx.Client, round_id: int) -> None:
    for _ in range(200):
        if http.get("/v1/status").json()["round_id"] == round_id:
            return
        time.sleep(0.05)
    raise AssertionError(f"round {round_id} never opened")


def test_killed_coordinator_resumes_after_the_last_completed_round(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    log = tmp_path / "server.log"

    def server(port: int) -> list[str]:
        return veilfl_command(
            "server",
            "--run-dir",
            str(run_dir),
            "--port",
            str(port),
            "--rounds",
            "4",
            "--clients-per-round",
            "2",
            "--min-clients",
            "2",
            "--test-examples",
            "200",
            "--population",
            "2",
            "--dp",
            "central",
            "--noise-multiplier",
            "0.1",
            "--adaptive-clipping",
            "0.5",
            "--accounting",
            "pld",
            *PLAINTEXT,
        )

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(server(port), log) as first, httpx.Client(base_url=url, timeout=30) as http:
        wait_until_serving(url, first, log)
        ids = [HandClient.enroll(http, url, name=n) for n in "ab"]
        _play_round(http, ids, seed=1)
        _wait_for_round(http, 2)
        _play_round(http, ids, seed=2)
        _wait_for_round(http, 3)
        model_after_round_2 = http.get("/v1/model", auth=ids[0].auth).content
        status_after_round_2 = http.get("/v1/status").json()
        assert status_after_round_2["clip_norm"] != 1.0  # adaptive clipping moved C
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(server(port), log) as second, httpx.Client(base_url=url, timeout=30) as http:
        wait_until_serving(url, second, log)
        status = http.get("/v1/status").json()
        assert (status["round_id"], status["model_version"]) == (3, 2)
        resumed = http.get("/v1/model", auth=ids[0].auth)
        assert resumed.headers["X-Model-Version"] == "2"
        before, _ = decode_weights(model_after_round_2)
        after, _ = decode_weights(resumed.content)
        for name in before:
            np.testing.assert_array_equal(before[name], after[name])
        assert [m["round_id"] for m in http.get("/v1/metrics").json()] == [1, 2]
        # The privacy state goes on from round 2: the same epsilon, delta and C.
        assert status["privacy"] == status_after_round_2["privacy"]
        assert status["clip_norm"] == status_after_round_2["clip_norm"]
        # The same clients carry on without joining again.
        _play_round(http, ids, seed=3)
        _wait_for_round(http, 4)
        epsilons = [m["epsilon"] for m in http.get("/v1/metrics").json()]
        assert len(epsilons) == 3 and epsilons[0] < epsilons[1] < epsilons[2]
