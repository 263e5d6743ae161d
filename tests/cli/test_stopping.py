"""SIGINT and SIGTERM end every role with one line (what was saved, how to resume)
and no traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli.processes import SRC, VeilflProcess, write_tiny_mnist

from veilfl.cli.main import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    return write_tiny_mnist(tmp_path / "mnist")


@pytest.fixture
def started() -> Iterator[list[VeilflProcess]]:
    processes: list[VeilflProcess] = []
    yield processes
    for process in processes:
        process.kill()


def _last_line(process: VeilflProcess) -> str:
    err = process.stderr()
    assert "Traceback" not in err, err
    return err.rstrip("\n").splitlines()[-1]


def _server(
    tmp_path: Path, mnist_dir: Path, port: int, started: list[VeilflProcess]
) -> VeilflProcess:
    server = VeilflProcess(
        [
            "server",
            "--run-dir",
            "run",
            "--insecure",
            "--open-enrollment",
            "--port",
            str(port),
            "--mnist-dir",
            str(mnist_dir),
        ],
        cwd=tmp_path,
    )
    started.append(server)
    server.wait_for("Application startup complete")
    return server


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_server_says_what_its_run_folder_keeps(
    tmp_path: Path, mnist_dir: Path, started: list[VeilflProcess], signum: signal.Signals
) -> None:
    from veilfl.cli.local_fleet import free_port

    server = _server(tmp_path, mnist_dir, free_port(), started)
    assert server.stop(signum) == 128 + signum
    line = _last_line(server)
    assert re.fullmatch(
        rf"veilfl server: stopped by {signum.name}; no round of run [0-9a-f]{{64}} had "
        r"completed \(its settings are kept in run\); run the same command again to resume\.",
        line,
    ), line


def test_a_client_says_where_its_key_is(
    tmp_path: Path, mnist_dir: Path, started: list[VeilflProcess]
) -> None:
    from veilfl.cli.local_fleet import free_port

    client = VeilflProcess(
        [
            "client",
            "--server",
            f"http://127.0.0.1:{free_port()}",
            "--insecure",
            "--client-index",
            "1",
            "--identity",
            "me.key",
            "--mnist-dir",
            str(mnist_dir),
        ],
        cwd=tmp_path,
    )
    started.append(client)
    client.wait_for("waiting for")  # nothing listens there: it waits for the server
    assert client.stop(signal.SIGINT) == 130
    assert _last_line(client) == (
        "veilfl client: stopped by SIGINT; its key is in me.key; run the same command again "
        "to rejoin the run (the coordinator keeps its enrollment)."
    )


def test_an_aggregator_says_where_its_shares_are(
    tmp_path: Path, started: list[VeilflProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    from veilfl.cli.local_fleet import free_port
    from veilfl.keyfiles import read_public_key

    assert main(["keys", "--out", str(tmp_path / "keys"), "--count", "1"]) == 0
    fingerprint = read_public_key(tmp_path / "keys" / "aggregator-1.pub").fingerprint
    aggregator = VeilflProcess(
        [
            "aggregator",
            "--index",
            "1",
            "--key",
            "keys/aggregator-1.key",
            "--insecure",
            "--coordinator",
            f"http://127.0.0.1:{free_port()}",
            "--port",
            str(free_port()),
            "--spool",
            "spool",
            "--peer-fingerprint",
            fingerprint,
        ],
        cwd=tmp_path,
    )
    started.append(aggregator)
    aggregator.wait_for("the run comes from the coordinator")
    assert aggregator.stop(signal.SIGTERM) == 143
    assert _last_line(aggregator) == (
        "veilfl aggregator: stopped by SIGTERM; the open round's shares are in spool; start "
        "it again with --spool spool to take them back."
    )


def test_a_simulation_says_it_does_not_resume(
    tmp_path: Path, mnist_dir: Path, started: list[VeilflProcess]
) -> None:
    simulation = VeilflProcess(
        [
            "simulate",
            "--mnist-dir",
            str(mnist_dir),
            "--rounds",
            "1000",
            "--run-dir",
            "sim",
            "--num-clients",
            "2",
        ],
        cwd=tmp_path,
    )
    started.append(simulation)
    deadline_line = "round"
    simulation.wait_for(deadline_line)
    assert simulation.stop(signal.SIGINT) == 130
    assert _last_line(simulation) == (
        "veilfl simulate: stopped by SIGINT; the completed rounds' metrics are in sim; a "
        "simulation does not resume: run it again to start over."
    )


@pytest.mark.parametrize("forget", [False, True])
def test_a_handled_interrupt_from_nested_python_does_not_kill_the_process_at_exit(
    forget: bool,
) -> None:
    # torch's C++ runs Python through PyRun_*; an interrupt that left such code makes
    # CPython kill the process with SIGINT at exit, even once the command handled it.
    script = (
        "import ctypes\n"
        "from veilfl.cli.stopping import forget_handled_interrupt\n"
        "ctypes.pythonapi.PyRun_SimpleString(b'raise KeyboardInterrupt')\n"
        + ("forget_handled_interrupt()\n" if forget else "")
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        check=False,
    )
    assert result.returncode == (0 if forget else -signal.SIGINT)
