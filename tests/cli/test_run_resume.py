"""A restart with other settings names each differing setting, by flag, with both values."""

from __future__ import annotations

from pathlib import Path

import pytest

from veilfl.cli import demo_cmd
from veilfl.cli.main import build_parser, main
from veilfl.cli.run_resume import differing_settings
from veilfl.cli.server_cmd import settings_from_args
from veilfl.server.run_store import RunStore

SERVER = ["server", "--insecure", "--open-enrollment"]


def _settings(argv: list[str]) -> dict[str, object]:
    return settings_from_args(
        build_parser().parse_args([*SERVER, "--run-dir", "r", *argv])
    ).to_json()


def _stored_run(run_dir: Path, argv: list[str]) -> None:
    run_dir.mkdir()
    with RunStore(run_dir / "run.sqlite") as store:
        store.initialise("run-7", _settings(argv))


def test_the_same_settings_differ_in_nothing() -> None:
    assert differing_settings(_settings(["--rounds", "3"]), _settings(["--rounds", "3"])) == []


def test_each_difference_is_named_by_its_flag_with_both_values() -> None:
    stored = _settings(["--rounds", "5", "--lr", "0.05"])
    now = _settings(["--rounds", "10", "--lr", "0.1", "--learner", "pkg.mod:make"])
    assert differing_settings(stored, now) == [
        "--model/--learner simple-cnn (stored) vs pkg.mod:make (now)",
        "--rounds 5 (stored) vs 10 (now)",
        "--lr 0.05 (stored) vs 0.1 (now)",
    ]


def test_the_server_optimiser_and_fedprox_are_named_by_their_flags() -> None:
    stored = _settings(["--server-optimizer", "fedadam", "--server-beta1", "0.9"])
    now = _settings(
        ["--server-optimizer", "fedyogi", "--server-beta1", "0.5", "--proximal-mu", "0.01"]
    )
    assert differing_settings(stored, now) == [
        "--proximal-mu 0.0 (stored) vs 0.01 (now)",
        "--server-optimizer fedadam (stored) vs fedyogi (now)",
        "--server-beta1 0.9 (stored) vs 0.5 (now)",
    ]
    assert differing_settings(_settings([]), _settings(["--server-optimizer", "fedadagrad"])) == [
        "--server-lr 1.0 (stored) vs 0.01 (now)",
        "--server-optimizer none (stored) vs fedadagrad (now)",
    ]


def test_the_server_learning_rate_defaults_to_the_optimisers() -> None:
    assert _settings([])["server_learning_rate"] == 1.0
    assert _settings(["--server-optimizer", "fedyogi"])["server_learning_rate"] == 0.01
    stored = _settings(["--server-optimizer", "fedadam", "--server-lr", "0.3"])
    assert stored["server_learning_rate"] == 0.3
    assert stored["server_optimizer"] == {
        "name": "fedadam",
        "beta1": 0.9,
        "beta2": 0.99,
        "tau": 0.001,
    }


def test_another_accounting_names_its_flag() -> None:
    dp = ["--dp", "central", "--noise-multiplier", "1.0"]
    stored = _settings(dp)
    now = _settings([*dp, "--accounting", "pld"])
    assert differing_settings(stored, now) == ["--accounting rdp (stored) vs pld (now)"]


def test_turning_on_buffered_mode_names_mode() -> None:
    stored = _settings([])
    now = _settings(["--mode", "fedbuff"])
    assert differing_settings(stored, now) == ["--mode none (stored) vs on (now)"]


def test_the_server_refuses_in_one_line_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "r1"
    _stored_run(run_dir, ["--rounds", "5"])
    code = main([*SERVER, "--run-dir", str(run_dir), "--rounds", "10", "--epochs", "2"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] + "\n" == (
        f"veilfl: error: The run folder {run_dir} holds run run-7 with other settings: "
        "--rounds 5 (stored) vs 10 (now); --epochs 1 (stored) vs 2 (now). Start with the "
        "stored settings to resume, or use a new --run-dir.\n"
    )


def test_differing_aggregators_are_named_by_index_and_what_differs() -> None:
    stored = _settings([])
    now = _settings([])
    stored["secure"] = {"aggregators": [_published(1, 8091), _published(2, 8092)]}
    now["secure"] = {"aggregators": [_published(1, 8091), _published(2, 9092)]}
    assert differing_settings(stored, now) == [
        "--aggregator 2 URL https://127.0.0.1:8092 (stored) vs https://127.0.0.1:9092 (now)"
    ]


def test_another_aggregator_count_is_named_once() -> None:
    stored = _settings([])
    now = _settings([])
    stored["secure"] = {
        "config": {"num_aggregators": 2},
        "aggregators": [_published(1, 8091), _published(2, 8092)],
    }
    now["secure"] = {
        "config": {"num_aggregators": 3},
        "aggregators": [_published(1, 8091), _published(2, 8092), _published(3, 8093)],
    }
    assert differing_settings(stored, now) == ["--aggregator (count) 2 (stored) vs 3 (now)"]


def _published(index: int, port: int) -> dict[str, object]:
    return {"index": index, "url": f"https://127.0.0.1:{port}", "public_key": "k"}


class _StartedError(Exception):
    """Raised where the demo would start its first process."""


def _demo_server_command(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The coordinator command line `veilfl demo` plans for ``run_dir`` (nothing starts)."""
    commands: list[list[str]] = []

    def popen(command: list[str], **_: object) -> None:
        commands.append(command)
        raise _StartedError

    monkeypatch.setattr(demo_cmd.subprocess, "Popen", popen)
    with pytest.raises(_StartedError):
        main(["demo", "--run-dir", str(run_dir), "--clients", "3", "--rounds", "1"])
    return commands[0]


def test_a_demo_resumed_on_its_folder_starts_the_run_it_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "demo"
    first = _demo_server_command(run_dir, monkeypatch)
    settings = settings_from_args(build_parser().parse_args(first[3:]))
    with RunStore(run_dir / "run.sqlite") as store:  # what the coordinator stored
        store.initialise("run-1", settings.to_json())

    again = _demo_server_command(run_dir, monkeypatch)  # the resume check passes

    assert _aggregator_flags(again) == _aggregator_flags(first)


def _aggregator_flags(command: list[str]) -> list[str]:
    return [command[i + 1] for i, flag in enumerate(command) if flag == "--aggregator"]
