"""Start veilfl processes on loopback for end-to-end tests, and always stop them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from veilfl.cli.local_fleet import free_port

__all__ = ["free_port", "running", "veilfl_command", "wait_until_serving"]


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


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/status", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not start serving:\n{log.read_text()[-3000:]}")
