"""One epsilon for one set of settings: ``veilfl server``'s settings path and
``veilfl simulate``'s (round-based, and buffered through the async simulator) give the
same noise multiplier, sampling rate, minimum cohort and epsilon, against both
observers; and contradictory DP flags are refused in one line before anything starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.cli.processes import write_tiny_mnist

from veilfl.cli.learner_option import learner_for
from veilfl.cli.main import build_parser, main
from veilfl.cli.server_cmd import settings_from_args
from veilfl.protocol import assembly
from veilfl.protocol.effects import PersistRound, RoundCompleted, RoundPersisted
from veilfl.protocol.messages import TaskKind, UpdateHeader
from veilfl.reporting import format_round_table_header
from veilfl.server.run_setup import PreparedRun, prepare_run
from veilfl.sim import assembly as simulated_run

pytestmark = pytest.mark.timeout(300)

POPULATION = 6
FLAGS = [
    "--dp",
    "central",
    "--target-epsilon",
    "4",
    "--accounting",
    "pld",
    "--rounds",
    "2",
    "--clients-per-round",
    "3",
    "--min-clients",
    "2",
    "--max-batches",
    "1",
    "--batch-size",
    "8",
]


FTRL_FLAGS = [*FLAGS[:2], "--dp-mechanism", "ftrl", *FLAGS[2:]]
"""The same run under DP-FTRL (K and b defaulted from the cohort: 1 and 2)."""

BANDED_FLAGS = [*FLAGS[:2], "--dp-mechanism", "banded", *FLAGS[2:]]
"""The same run under banded matrix factorisation (K 1, b 2 bands, defaulted the same way)."""

BLT_FLAGS = [*FLAGS[:2], "--dp-mechanism", "blt", *FLAGS[2:]]
"""The same run under BLT (central noise)."""

LOCAL_FLAGS = [FLAGS[0], "local", *FLAGS[2:8], "--clients-per-round", "6", *FLAGS[10:]]
"""Local noise, every client in every round (q = 1): the coordinator's epsilon is finite
and does not depend on which clients the sampling drew."""

FEDBUFF_FLAGS = [*FLAGS[:10], "--mode", "fedbuff", "--buffer-size", "3", *FLAGS[10:]]
"""The same run buffered (FedBuff, K = 3): the async simulator's path."""


def _server_run(run_dir: Path, flags: list[str] = FLAGS) -> PreparedRun:
    """The server's settings path: its parser, settings_from_args and prepare_run."""
    args = build_parser().parse_args(
        ["server", "--run-dir", str(run_dir), "--population", str(POPULATION), *flags]
    )
    settings = settings_from_args(args)
    learner = learner_for(settings.model_name, seed=settings.seed)
    return prepare_run(
        run_dir, settings, initial_weights=lambda seed: learner.initial_weights(seed=seed)
    )


def _release_rounds(prepared: PreparedRun, rounds: int) -> list[dict[str, Any]]:
    """Drive the server's core through ``rounds`` rounds (zero updates, persisted)."""
    core = prepared.coordinator
    clients = [f"client-{i}" for i in range(POPULATION)]
    for client in clients:
        core.join(client, now=0.0)
    done: list[dict[str, Any]] = []
    while len(done) < rounds:
        core.tick(now=0.0)
        for client in clients:
            task = core.task_for(client, now=0.0)
            if task.kind is TaskKind.TRAIN:
                assert task.round_id is not None and task.model_version is not None
                core.submit_plaintext_update(
                    UpdateHeader(client, task.round_id, task.model_version, 1, 0.5),
                    core.global_model().weights,
                    now=0.0,
                )
        while effects := core.drain():
            for effect in effects:
                if isinstance(effect, PersistRound):
                    prepared.persist(effect.outcome)
                    core.handle(RoundPersisted(effect.outcome.cohort.round_id), now=0.0)
                elif isinstance(effect, RoundCompleted):
                    done.append(vars(effect.outcome.metrics))
    return done


@pytest.mark.parametrize(
    "flags",
    [FLAGS, LOCAL_FLAGS, FTRL_FLAGS, BANDED_FLAGS, BLT_FLAGS, FEDBUFF_FLAGS],
    ids=["dp-fedavg", "dp-fedavg-local", "dp-ftrl", "banded-mf", "blt", "dp-fedbuff"],
)
def test_server_and_simulate_give_one_epsilon_for_one_set_of_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str]
) -> None:
    # Arrange: spy on the assembly the simulator does (the real one runs).
    assembled: list[assembly.AssembledRun] = []

    def spy(*args: Any, **kwargs: Any) -> assembly.AssembledRun:
        run = assembly.build_coordinator(*args, **kwargs)
        assembled.append(run)
        return run

    monkeypatch.setattr(simulated_run, "build_coordinator", spy)
    mnist = write_tiny_mnist(tmp_path / "mnist")
    # Act: simulate, then the server's path with the same flags.
    code = main(
        [
            "simulate",
            "--run-dir",
            str(tmp_path / "sim"),
            "--num-clients",
            str(POPULATION),
            "--mnist-dir",
            str(mnist),
            "--test-examples",
            "20",
            *flags,
        ]
    )
    assert code == 0
    (sim_run,) = assembled
    simulated = json.loads((tmp_path / "sim" / "metrics.json").read_text())
    served = _server_run(tmp_path / "server", flags)
    server_rounds = _release_rounds(served, 2)
    # Assert: the same plan ...
    assert served.privacy is not None and sim_run.privacy is not None
    assert served.privacy.config == sim_run.privacy.config  # z derived once, the same way
    assert served.cohort == sim_run.cohort
    if flags is LOCAL_FLAGS:
        assert (served.cohort.sample_rate, served.cohort.minimum) == (1.0, 2)
    elif flags is not FEDBUFF_FLAGS:
        assert (served.cohort.sample_rate, served.cohort.minimum) == (0.5, 2)
    # ... and the same epsilon against the public, round by round, with the accounting.
    assert [r["epsilon"] for r in server_rounds] == [r["epsilon"] for r in simulated]
    assert {r["accounting"] for r in simulated} == {r["accounting"] for r in server_rounds}
    assert {r["accounting"] for r in simulated} == {"pld"}
    coordinator = [r["epsilon_coordinator"] for r in server_rounds]
    assert coordinator == [r["epsilon_coordinator"] for r in simulated]
    if flags is LOCAL_FLAGS:  # each client's own noise protects it from the coordinator
        assert coordinator[0] is not None and 0 < coordinator[0] < coordinator[1]
    else:  # central noise: the coordinator sees the noiseless sum
        assert coordinator == [None, None]
    assert simulated[-1]["epsilon"] <= 4.0
    served.store.close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["simulate", "--secure", "--dp-min-clients", "5", "--clients-per-round", "4"],
            "--dp-min-clients 5 exceeds --min-clients 2: a round may close with that many, "
            "and a release over fewer than 5 is withheld",
        ),
        (
            # Issue 11's example: a FedBuff release sums 4 where 10 are charged.
            [
                *("simulate", "--secure", "--mode", "fedbuff", "--buffer-size", "4"),
                *("--clients-per-round", "10", "--dp-min-clients", "10"),
            ],
            "--dp-min-clients 10 exceeds --buffer-size 4",
        ),
        (
            ["server", "--run-dir", "RUN", "--insecure", "--clients-per-round", "4"],
            "--dp distributed needs secure aggregation",
        ),
        (
            [
                *("simulate", "--secure", "--dp-mechanism", "ftrl", "--clients-per-round", "4"),
                *("--dp-min-separation", "6"),
            ],
            "--dp-min-separation 6 with 4 clients per round needs at least 24 clients",
        ),
        (
            [
                *("simulate", "--secure", "--dp-mechanism", "ftrl", "--clients-per-round", "4"),
                *("--rounds", "30", "--dp-max-participations", "2"),
            ],
            "--rounds 30 of 4 clients need 120 participations, but "
            "--dp-max-participations 2 over 20 clients allows 40",
        ),
        (
            ["simulate", "--secure", "--clients-per-round", "4", "--dp-max-participations", "2"],
            "--dp-max-participations and --dp-min-separation are DP-FTRL and Banded MF and BLT's",
        ),
        (
            [
                *("simulate", "--secure", "--dp-mechanism", "ftrl", "--clients-per-round", "4"),
                *("--mode", "fedbuff", "--buffer-size", "4"),
            ],
            "--dp-mechanism ftrl releases synchronous rounds in order",
        ),
    ],
)
def test_contradictory_dp_flags_are_refused_in_one_line_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    run_dir = tmp_path / "run"
    command = [str(run_dir) if a == "RUN" else a for a in argv]
    if command[0] == "simulate":
        command += ["--run-dir", str(run_dir), "--num-clients", "20"]
    command += ["--dp", "distributed", "--noise-multiplier", "1.0", "--min-clients", "2"]
    assert main(command) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not run_dir.exists() or not any(run_dir.iterdir())  # no run, data or model


def test_the_demo_refuses_contradictory_dp_flags_before_starting_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "demo"
    code = main(
        [
            *("demo", "--run-dir", str(run_dir), "--plaintext"),
            *("--dp", "distributed", "--noise-multiplier", "1.0"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("veilfl: error: --dp distributed needs secure aggregation")
    assert not (run_dir / "logs" / "server.log").exists()  # no process was started


def test_simulate_and_the_demo_warn_before_training_when_noise_drowns_the_signal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # z = 1 over d = 21,840 parameters with 2 clients per round: ratio 74, far above 4.
    mnist = write_tiny_mnist(tmp_path / "mnist", train=40, test=10)
    flags = ["--dp", "central", "--noise-multiplier", "1", "--clients-per-round", "2"]
    assert (
        main(
            [
                *("simulate", "--run-dir", str(tmp_path / "sim"), "--num-clients", "2"),
                *("--mnist-dir", str(mnist), "--rounds", "1", "--max-batches", "1", *flags),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    header = format_round_table_header().splitlines()[0]
    assert out.index(warning) < out.index(header)  # before the table, so before training
    assert "drown the signal" in warning and "sample at least" in warning
    # The demo checks the server it is about to start with the same code.
    from veilfl.cli.demo_cmd import _check_server_settings

    said = _check_server_settings(
        ["server", "--run-dir", str(tmp_path / "d"), "--insecure", "--min-clients", "2", *flags]
    )
    assert said is not None and said == warning.removeprefix("warning: ")
