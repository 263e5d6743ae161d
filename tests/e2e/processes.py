"""Start veilfl processes on loopback for end-to-end tests, and always stop them."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import aggregator_audience, coordinator_audience
from veilfl.cli.local_fleet import free_port
from veilfl.transport.signing import SigningAuth

__all__ = [
    "PLAINTEXT",
    "HandClient",
    "described_run",
    "free_port",
    "running",
    "veilfl_command",
    "wait_until_serving",
]

PLAINTEXT = ("--insecure", "--open-enrollment")
"""Server options for tests that play clients by hand over plain HTTP."""


@dataclass
class HandClient:
    """A client the test plays itself: an Ed25519 key that signs its requests.

    Attributes:
        run_id: The run it takes part in (what its signatures are addressed to).
        identity: Its key.
        client_id: The id the coordinator gave it, once enrolled.
    """

    run_id: str
    identity: Identity = field(default_factory=Identity.generate)
    client_id: str = ""

    @classmethod
    def enroll(
        cls, http: httpx.Client, url: str, *, name: str, token: str | None = None
    ) -> HandClient:
        """Enroll a new client with the coordinator at ``url``."""
        client = cls(run_id=str(described_run(http, url)["run_id"]))
        response = http.post(
            f"{url}/v1/clients",
            json={
                "name": name,
                "public_key": client.identity.public_key_text,
                "enrollment_token": token,
            },
            auth=client.auth,
        )
        assert response.status_code == 201, response.text
        client.client_id = str(response.json()["client_id"])
        return client

    @property
    def auth(self) -> SigningAuth:
        """Signs requests to the coordinator."""
        return SigningAuth(self.identity, coordinator_audience(self.run_id))

    def aggregator_auth(self, index: int) -> SigningAuth:
        """Signs requests to aggregator ``index``."""
        return SigningAuth(self.identity, aggregator_audience(index, self.run_id))


def veilfl_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "veilfl", *args]


@contextmanager
def running(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` with output to ``log``; kill it on the way out."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=out, env=env)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


def described_run(http: httpx.Client, url: str, *, timeout_s: float = 60.0) -> dict[str, Any]:
    """The coordinator's run description, once it has one (while it sets its run up it
    answers 503 and says when to ask again, as a real client retries)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = http.get(f"{url}/v1/run")
        if response.status_code == 200:
            described: dict[str, Any] = response.json()
            return described
        assert time.monotonic() < deadline, f"no run description: {response.text}"
        time.sleep(0.2)


def wait_until_serving(
    url: str, process: subprocess.Popen[bytes], log: Path, *, verify: ssl.SSLContext | bool = True
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/status", timeout=1.0, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not start serving:\n{log.read_text()[-3000:]}")
