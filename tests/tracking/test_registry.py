"""Metrics sinks by name: the one-line errors, the fan-out, the files sink against the
functions it wraps, and the MLflow sink's calls (against a stand-in ``mlflow``)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from veilfl.cli.config_file import expand_config
from veilfl.cli.main import build_parser, main
from veilfl.errors import ConfigurationError
from veilfl.protocol.metrics import RoundMetrics
from veilfl.reporting import plot_metrics, write_metrics
from veilfl.tracking import MetricsSinks, SinkContext, check_sinks, open_sinks, sink_names
from veilfl.tracking.files import FilesSink

ROUNDS = (
    RoundMetrics(1, 3, 0.9, 0.8, 0.5, seconds=1.5, epsilon=0.7, accounting="pld", delta=1e-5),
    RoundMetrics(
        2,
        2,
        0.6,
        0.4,
        0.75,
        seconds=1.0,
        epsilon=1.1,
        accounting="pld",
        delta=1e-5,
        federated_loss=0.45,
        federated_accuracy=0.625,
        federated_examples=96.0,
    ),
)


def test_the_built_in_sinks_are_registered_by_name() -> None:
    assert sink_names() == ["files", "mlflow", "tensorboard"]


def test_an_unknown_sink_is_one_line_naming_the_choices() -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_sinks(["tensorbord"])
    assert str(caught.value) == (
        "--metrics-sink 'tensorbord' is not a metrics sink; choose from files, mlflow, tensorboard."
    )


@pytest.mark.parametrize("name", ["tensorboard", "mlflow"])
def test_a_sink_whose_extra_is_missing_is_one_line_naming_the_install(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda module, *a: None if module == name else real(module)
    )
    with pytest.raises(ConfigurationError) as caught:
        check_sinks([name])
    assert str(caught.value) == (
        f'--metrics-sink {name} needs the {name} package: pip install ".[{name}]" in the checkout.'
    )


def test_the_command_line_refuses_a_missing_extra_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda module, *a: None if module == "mlflow" else real(module)
    )
    code = main(["simulate", "--run-dir", str(tmp_path / "run"), "--metrics-sink", "mlflow"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        'veilfl: error: --metrics-sink mlflow needs the mlflow package: pip install ".[mlflow]"'
        " in the checkout.\n"
    )


def test_the_files_sink_writes_what_the_reporting_functions_write(tmp_path: Path) -> None:
    # Arrange: the oracle, written directly.
    write_metrics(tmp_path / "oracle", ROUNDS)
    plot_metrics(tmp_path / "oracle", ROUNDS, title="t")
    # Act: a resumed run that had round 1, then completes round 2.
    sink = FilesSink(tmp_path / "sink", title="t", history=ROUNDS[:1])
    sink.round(ROUNDS[1])
    sink.close()
    # Assert
    for name in ("metrics.json", "metrics.csv"):
        assert (tmp_path / "sink" / name).read_bytes() == (tmp_path / "oracle" / name).read_bytes()
    assert (tmp_path / "sink" / "metrics.png").stat().st_size > 0


class _Sink:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.rounds: list[int] = []
        self.closed = False

    def round(self, metrics: RoundMetrics) -> None:
        if self.fail:
            raise OSError("disk full")
        self.rounds.append(metrics.round_id)

    def close(self) -> None:
        self.closed = True


def test_a_failing_sink_does_not_keep_the_round_from_the_others() -> None:
    broken, kept = _Sink(fail=True), _Sink()
    sinks = MetricsSinks([broken, kept])
    with pytest.raises(OSError, match="disk full"), sinks:
        sinks.round(ROUNDS[0])
    assert kept.rounds == [1]
    assert kept.closed and broken.closed


def test_the_files_sink_is_always_opened_and_each_name_once(tmp_path: Path) -> None:
    with open_sinks(["files", "files"], SinkContext(tmp_path, "t")) as sinks:
        sinks.round(ROUNDS[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "metrics.csv",
        "metrics.json",
        "metrics.png",
    ]


def test_the_mlflow_sink_logs_each_round_at_its_step_and_ends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: a stand-in for mlflow.tracking.MlflowClient that records its calls.
    calls: list[tuple[Any, ...]] = []

    class Client:
        def get_experiment_by_name(self, name: str) -> None:
            calls.append(("get_experiment", name))

        def create_experiment(self, name: str) -> str:
            calls.append(("create_experiment", name))
            return "7"

        def create_run(self, experiment_id: str, *, run_name: str) -> Any:
            calls.append(("create_run", experiment_id, run_name))
            return types.SimpleNamespace(info=types.SimpleNamespace(run_id="r1"))

        def log_metric(self, run_id: str, key: str, value: float, *, step: int) -> None:
            calls.append(("log", run_id, key, value, step))

        def set_terminated(self, run_id: str) -> None:
            calls.append(("end", run_id))

    mlflow = types.ModuleType("mlflow")
    tracking = types.ModuleType("mlflow.tracking")
    tracking.MlflowClient = Client  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", tracking)
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: object())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fl")

    # Act
    with open_sinks(["mlflow"], SinkContext(tmp_path, "veilfl run abc")) as sinks:
        for metrics in ROUNDS:
            sinks.round(metrics)

    # Assert
    assert calls[:3] == [
        ("get_experiment", "fl"),
        ("create_experiment", "fl"),
        ("create_run", "7", "veilfl run abc"),
    ]
    logged = {(c[2], c[4]): c[3] for c in calls if c[0] == "log"}
    assert logged[("test/accuracy", 1)] == 0.5
    assert logged[("test/accuracy", 2)] == 0.75
    assert logged[("privacy/epsilon", 2)] == 1.1
    assert logged[("train/loss", 1)] == 0.9
    assert logged[("federated/accuracy", 2)] == 0.625
    assert logged[("federated/examples", 2)] == 96.0
    assert ("federated/accuracy", 1) not in logged  # round 1 had no federated evaluation
    assert calls[-1] == ("end", "r1")


@pytest.mark.parametrize("command", ["server", "simulate"])
def test_veilfl_toml_names_the_sinks_with_the_flags_key(command: str, tmp_path: Path) -> None:
    config = tmp_path / "veilfl.toml"
    config.write_text(f'[{command}]\nmetrics-sink = ["tensorboard", "mlflow"]\n')
    parser = build_parser()
    argv = [command, "--run-dir", str(tmp_path / "run"), "--config", str(config)]
    args = parser.parse_args(expand_config(parser, argv))
    assert args.metrics_sink == ["tensorboard", "mlflow"]
