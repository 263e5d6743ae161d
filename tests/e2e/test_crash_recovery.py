"""Fault test: SIGKILL the coordinator at random instants across several rounds.

The test plays two clients whose updates depend only on (round, client), so the rounds
are deterministic. After every kill the coordinator is restarted on the same run
folder and the clients carry on. Every completed round must be kept, and the final
model must equal, bit for bit, the one an uninterrupted run produces.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.e2e.processes import PLAINTEXT, HandClient, free_port, veilfl_command, wait_until_serving

from veilfl.protocol.messages import UpdateHeader
from veilfl.transport.signing import for_round
from veilfl.wire.tensor_codec import decode_weights, encode_weights

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
ROUNDS = 4
CLIENTS = ("a", "b")


def _delta(round_id: int, client: str, template: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([round_id, ord(client)])
    return {name: rng.normal(0, 0.01, a.shape).astype(np.float32) for name, a in template.items()}


class _Coordinator:
    def __init__(self, run_dir: Path, log: Path) -> None:
        self.run_dir, self.log = run_dir, log
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = veilfl_command(
            "server",
            "--run-dir",
            str(self.run_dir),
            "--port",
            str(port),
            "--rounds",
            str(ROUNDS),
            "--clients-per-round",
            "2",
            "--min-clients",
            "2",
            "--test-examples",
            "50",
            "--linger",
            "30",
            *PLAINTEXT,
        )
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=out)
        wait_until_serving(self.url, self.process, self.log)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def _run(run_dir: Path, log: Path, kills: set[int], seed: int) -> tuple[dict[str, np.ndarray], int]:
    """Drive the run; after the k-th upload in ``kills``, SIGKILL at a random instant."""
    coordinator = _Coordinator(run_dir, log)
    coordinator.start()
    chooser = random.Random(seed)
    ids: dict[str, HandClient] = {}
    uploads = restarts = 0
    try:
        with httpx.Client(timeout=30) as http:
            for client in CLIENTS:
                ids[client] = HandClient.enroll(http, coordinator.url, name=client)
            template, _ = decode_weights(
                http.get(f"{coordinator.url}/v1/model", auth=ids["a"].auth).content
            )
            while True:
                status = http.get(f"{coordinator.url}/v1/status").json()
                if status["done"]:
                    break
                for client in CLIENTS:
                    hand = ids[client]
                    task = http.get(
                        f"{coordinator.url}/v1/clients/{hand.client_id}/task", auth=hand.auth
                    ).json()
                    if task["kind"] != "train":
                        continue
                    header = UpdateHeader(
                        client_id=hand.client_id,
                        round_id=task["round_id"],
                        base_version=task["model_version"],
                        num_samples=10,
                        loss=1.0,
                    )
                    body = encode_weights(
                        _delta(task["round_id"], client, template), metadata=header.to_metadata()
                    )
                    uploads += 1
                    killer = None
                    if uploads in kills:  # kill while this upload is in flight
                        killer = threading.Timer(chooser.uniform(0.0, 0.05), coordinator.kill)
                        killer.start()
                    with contextlib.suppress(httpx.TransportError):  # killed mid-request
                        http.post(
                            f"{coordinator.url}/v1/rounds/{task['round_id']}/updates",
                            content=body,
                            auth=hand.auth,
                            extensions=for_round(task["round_id"]),
                        )
                    if killer is not None:
                        killer.join()
                        coordinator.start()
                        restarts += 1
                        break  # ask for fresh tasks from the restarted coordinator
                time.sleep(0.05)
            final, _ = decode_weights(
                http.get(f"{coordinator.url}/v1/model", auth=ids["a"].auth).content
            )
            rounds = [m["round_id"] for m in http.get(f"{coordinator.url}/v1/metrics").json()]
            assert rounds == list(range(1, ROUNDS + 1)), rounds
            return final, restarts
    finally:
        if coordinator.process is not None and coordinator.process.poll() is None:
            coordinator.kill()


def test_sigkilled_coordinator_keeps_every_round_and_ends_with_the_same_model(
    tmp_path: Path,
) -> None:
    reference, _ = _run(tmp_path / "clean", tmp_path / "clean.log", kills=set(), seed=0)
    chooser = random.Random(2026)
    kills = set(chooser.sample(range(1, 2 * ROUNDS), 4))
    crashed, restarts = _run(tmp_path / "crashed", tmp_path / "crashed.log", kills=kills, seed=1)
    assert restarts == len(kills)
    assert (tmp_path / "crashed.log").read_text().count("resuming run") >= 1
    for name in reference:
        np.testing.assert_array_equal(crashed[name], reference[name])
