"""The README's "Secure aggregation by hand" recipe, followed as written: its commands,
parsed from the README's block, in its order, each server in a process of its own,
with two clients; the run trains. The same recipe with ``--clients-per-round 1`` is
refused at start-up in one line naming both flags.

What the reader fills in is filled in the same way: ``FP1``..``FP4`` from what
``veilfl keys`` prints, ``<line N of tokens.txt>`` from that file. The ports are
swapped for free ones (other tests share the machine), and MNIST is the small one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from tests.cli.processes import write_tiny_mnist
from tests.e2e.processes import wait_until_serving
from tests.test_readme import _blocks, _section, _stand_in_venv

from veilfl.cli.local_fleet import free_port
from veilfl.tls import client_ssl_context

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

LONG_RUNNING = re.compile(r"^(\w+=(<[^>]*>|\S+) )*veilfl (server|aggregator|client) ")


def _recipe() -> list[str]:
    """The block's commands, continuation lines joined, comments dropped."""
    (block,) = _blocks(_section("Secure aggregation by hand"), "bash")
    joined = block.replace("\\\n", " ")
    commands = [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines()]
    return [" ".join(command.split()) for command in commands if command]


class _Reader:
    """Runs the recipe's commands in ``folder`` as a reader would, filling in the blanks."""

    def __init__(self, folder: Path, env: dict[str, str], stack: ExitStack) -> None:
        self.folder = folder
        self.env = env
        self.stack = stack
        self.ports = {port: str(free_port()) for port in ("8080", "8091", "8092", "8093", "8094")}
        self.fingerprints: dict[str, str] = {}

    def fill_in(self, command: str) -> str:
        command = re.sub(
            r"\b(8080|8091|8092|8093|8094)\b", lambda m: self.ports[m.group(1)], command
        )
        command = re.sub(r"\bFP[1-4]\b", lambda m: self.fingerprints[m.group(0)], command)
        tokens = (self.folder / "tokens.txt").read_text().split() if "<line" in command else []
        return re.sub(r"<line (\d+) of tokens.txt>", lambda m: tokens[int(m.group(1)) - 1], command)

    def run(self, command: str) -> None:
        result = subprocess.run(
            ["bash", "-e", "-c", self.fill_in(command)],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        for index, fingerprint in re.findall(
            r"aggregator (\d+):.*fingerprint (\S+)", result.stdout
        ):
            self.fingerprints[f"FP{index}"] = fingerprint

    def start(self, command: str, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.folder / f"{name}.log"
        out = self.stack.enter_context(log.open("ab"))
        process = subprocess.Popen(
            ["bash", "-e", "-c", self.fill_in(command)],
            cwd=self.folder,
            env=self.env,
            stdout=out,
            stderr=out,
            start_new_session=True,  # its own process group: stopped with its children
        )
        self.stack.callback(_stop, process)
        return process, log

    @property
    def coordinator_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['8080']}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _env(tmp_path: Path) -> dict[str, str]:
    bin_dir = _stand_in_venv(tmp_path / "venv")
    return {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "VEILFL_MNIST_DIR": str(write_tiny_mnist(tmp_path / "mnist")),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _follow(
    folder: Path,
    env: dict[str, str],
    stack: ExitStack,
    *,
    server_flags: str = "",
    roles: tuple[str, ...] = ("server", "aggregator", "client"),
) -> tuple[_Reader, dict[str, tuple[subprocess.Popen[bytes], Path]]]:
    """Run the recipe in ``folder``: the one-shot commands to completion, each server
    and client started in order (the coordinator serving before the rest)."""
    folder.mkdir()
    reader = _Reader(folder, env, stack)
    started: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for command in _recipe():
        match = LONG_RUNNING.match(command)
        if match is None:
            reader.run(command)
            continue
        role = match.group(3)
        if role not in roles:
            continue
        if role == "server":
            command = command.replace("veilfl server ", f"veilfl server {server_flags} ", 1)
        name = f"{role}-{sum(key.startswith(role) for key in started) + 1}"
        started[name] = reader.start(command, name)
        if role == "server":
            process, log = started[name]
            verify = client_ssl_context(folder / "tls" / "ca.pem")
            wait_until_serving(reader.coordinator_url, process, log, verify=verify)
    return reader, started


def test_the_readme_recipe_trains_with_two_clients(tmp_path: Path) -> None:
    roles = [m.group(3) for m in map(LONG_RUNNING.match, _recipe()) if m is not None]
    assert roles == ["server", *["aggregator"] * 4, "client", "client"]
    env = _env(tmp_path)
    with ExitStack() as stack:
        folder = tmp_path / "by-hand"
        _, started = _follow(folder, env, stack)
        for name in ("client-1", "client-2"):
            process, log = started[name]
            assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
        server, server_log = started["server-1"]
        assert server.wait(timeout=120) == 0, server_log.read_text()[-3000:]
    rounds = json.loads((folder / "runs" / "r1" / "metrics.json").read_text())
    assert len(rounds) == 5 and all(r["num_clients"] == 2 for r in rounds)


def test_clients_per_round_below_the_aggregators_minimum_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    with ExitStack() as stack:
        _, started = _follow(
            tmp_path / "misconfigured", env, stack, server_flags="--clients-per-round 1"
        )
        server, log = started["server-1"]
        deadline = time.monotonic() + 120
        while server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.returncode == 1, log.read_text()[-3000:]
    errors = [line for line in log.read_text().splitlines() if "--min-participants" in line]
    assert errors == [
        "veilfl: error: --clients-per-round 1 is below aggregator 1's --min-participants 2; "
        "raise --clients-per-round or lower --min-participants."
    ]
    assert "Traceback" not in log.read_text()
