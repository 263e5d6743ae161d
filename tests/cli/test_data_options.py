"""``--data`` and ``--eval-data`` on the command line: clients on their own files,
simulations over any source, optional server-side evaluation, and one-line errors when
the model does not take the data."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.cli.processes import write_tiny_mnist

from veilfl.cli.config_file import expand_config
from veilfl.cli.data_options import client_data, server_evaluation_data
from veilfl.cli.demo_data import demo_client_files
from veilfl.cli.learner_option import learner_for
from veilfl.cli.main import build_parser, main
from veilfl.ml.data_sources import CsvSource, DataSettings, read_csv_rows
from veilfl.ml.datasets import ArrayDataset
from veilfl.ml.learner import Learner

MODULE = "data_options_learner_fixture"
LOADING = "data_options_loading_fixture"  # the same learner, with a load_data


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder with a tabular learner (5 features, 3 classes) and a CSV table."""
    (tmp_path / f"{MODULE}.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from torch import nn
            from veilfl.ml.datasets import ArrayDataset
            from veilfl.ml.learner import sgd_learner
            from veilfl.ml.local_data import LocalData

            def model():
                return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))

            learner = sgd_learner(model)
            """
        )
    )
    (tmp_path / f"{LOADING}.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from veilfl.ml.datasets import ArrayDataset
            from veilfl.ml.local_data import LocalData
            from data_options_learner_fixture import learner

            read = []

            def load_data(path):
                read.append(path)
                data = ArrayDataset(
                    images=np.ones((6, 5), np.float32), labels=np.zeros(6, np.int64)
                )
                return LocalData(train=data.subset(range(4)), evaluation=data.subset([4, 5]))
            """
        )
    )
    rng = np.random.default_rng(0)
    rows = ["a,b,c,d,e,label"] + [
        ",".join([*(f"{v:.3f}" for v in rng.normal(size=5)), str(i % 3)]) for i in range(40)
    ]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop(MODULE, None)
    sys.modules.pop(LOADING, None)


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_a_client_reads_its_own_table_and_holds_out_a_fifth(project: Path) -> None:
    args = _args("client", "--server", "https://x", "--data", str(project / "table.csv"))

    data = client_data(args, learner_for(f"{MODULE}:learner"), model_name=f"{MODULE}:learner")

    assert data.local.evaluation is not None
    assert (len(data.local.train), len(data.local.evaluation)) == (32, 8)
    assert data.description == str(project / "table.csv")


def _plain_learner() -> Learner[ArrayDataset]:
    """The fixture's learner, whose module has no load_data (veilfl's sources read)."""
    return learner_for(f"{MODULE}:learner")


def test_a_client_with_a_client_index_trains_on_its_part_of_the_table(project: Path) -> None:
    args = _args(
        "client",
        "--server",
        "https://x",
        "--data",
        str(project / "table.csv"),
        "--client-index",
        "1",
        "--num-clients",
        "4",
        "--eval-fraction",
        "0",
    )

    data = client_data(args, _plain_learner(), model_name="m")

    assert len(data.local.train) == 10 and data.local.evaluation is None


def test_a_learner_modules_load_data_reads_the_clients_data(project: Path) -> None:
    args = _args("client", "--server", "https://x", "--data", "anything.bin")
    learner = learner_for(f"{LOADING}:learner")

    data = client_data(args, learner, model_name="m")

    assert sys.modules[LOADING].read == ["anything.bin"]  # type: ignore[attr-defined]
    assert data.local.evaluation is not None and len(data.local.evaluation) == 2


def test_the_data_options_are_keys_of_veilfl_toml(project: Path) -> None:
    config = project / "veilfl.toml"
    config.write_text('[client]\ndata = "table.csv"\neval-fraction = 0.25\nlabel-column = "e"\n')

    argv = expand_config(
        build_parser(), ["client", "--server", "https://x", "--config", str(config)]
    )
    args = _args(*argv)

    assert (args.data, args.eval_fraction, args.label_column) == (
        str(project / "table.csv"),
        0.25,
        "e",
    )


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("veilfl: error: ")
    return lines[0]


def test_a_client_whose_model_does_not_take_its_data_stops_in_one_line(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "client",
            "--server",
            "http://127.0.0.1:9",
            "--insecure",
            "--data",
            str(project / "table.csv"),
            "--log-level",
            "error",
        ]
    )

    line = _one_error_line(capsys)
    assert code == 1
    assert "gives examples of shape (5,), but the model simple-cnn takes" in line


def test_a_client_with_neither_data_nor_index_says_what_to_give(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["client", "--server", "http://127.0.0.1:9", "--insecure", "--log-level", "error"])

    assert code == 1
    assert "needs --data with this client's own files, or --client-index" in _one_error_line(capsys)


def test_a_server_whose_model_does_not_take_its_eval_data_stops_in_one_line(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = tmp_path / "wide.csv"
    wide.write_text("a,b,label\n1,2,0\n3,4,1\n")

    code = main(
        [
            "server",
            "--run-dir",
            str(tmp_path / "run"),
            "--insecure",
            "--open-enrollment",
            "--learner",
            f"{MODULE}:learner",
            "--eval-data",
            str(wide),
            "--log-level",
            "error",
        ]
    )

    line = _one_error_line(capsys)
    assert code == 1
    assert f"--eval-data {wide} gives examples of shape (2,), but the model" in line
    assert "(5,)" in line


def test_server_evaluation_is_off_for_test_examples_0_or_a_non_mnist_learner(
    project: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mnist = write_tiny_mnist(tmp_path / "mnist")
    tabular = _plain_learner()
    builtin = learner_for("simple-cnn")
    caplog.set_level(logging.INFO, logger="veilfl")

    off = server_evaluation_data(
        _args("server", "--run-dir", "r", "--test-examples", "0"), builtin, model_name="simple-cnn"
    )
    none = server_evaluation_data(
        _args("server", "--run-dir", "r", "--mnist-dir", str(mnist)), tabular, model_name="m:l"
    )
    given = server_evaluation_data(
        _args("server", "--run-dir", "r", "--eval-data", str(project / "table.csv")),
        tabular,
        model_name="m:l",
    )
    digits = server_evaluation_data(
        _args("server", "--run-dir", "r", "--mnist-dir", str(mnist), "--test-examples", "7"),
        builtin,
        model_name="simple-cnn",
    )

    assert off is None and none is None
    assert given is not None and len(given) == 40
    assert digits is not None and digits.images.shape == (7, 1, 28, 28)
    assert "give --eval-data to evaluate on the server" in caplog.text.lower()


def test_a_simulation_without_server_evaluation_still_writes_its_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mnist = write_tiny_mnist(tmp_path / "mnist")
    run = tmp_path / "run"

    code = main(
        [
            "simulate",
            "--mnist-dir",
            str(mnist),
            "--num-clients",
            "3",
            "--rounds",
            "2",
            "--max-batches",
            "1",
            "--test-examples",
            "0",
            "--run-dir",
            str(run),
            "--log-level",
            "error",
        ]
    )

    rounds = json.loads((run / "metrics.json").read_text())
    assert code == 0
    assert [(r["round_id"], r["test_accuracy"], r["test_loss"]) for r in rounds] == [
        (1, None, None),
        (2, None, None),
    ]
    assert (run / "metrics.csv").read_text().count("\n") == 3  # a header and two rounds
    assert "ERROR" not in capsys.readouterr().err


def test_the_demo_splits_one_table_into_a_file_per_client(project: Path, tmp_path: Path) -> None:
    table = project / "table.csv"

    files = demo_client_files(
        str(table), clients=3, run_dir=tmp_path / "run", settings=DataSettings(), scheme="iid"
    )

    header, rows = read_csv_rows(table)
    parts = [read_csv_rows(path) for path in files]
    assert [path.name for path in files] == ["client-0.csv", "client-1.csv", "client-2.csv"]
    assert all(part_header == header for part_header, _ in parts)
    assert sorted(map(tuple, rows)) == sorted(tuple(r) for _, part in parts for r in part)
    assert len(CsvSource(files[0]).load()) in (13, 14)


def test_an_evaluation_fraction_outside_the_unit_interval_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["client", "--server", "http://127.0.0.1:9", "--insecure", "--eval-fraction", "1"])

    assert code == 1
    assert _one_error_line(capsys) == ("veilfl: error: --eval-fraction must lie in [0, 1); got 1.")


def test_every_data_setting_is_an_option_of_the_commands_that_read_data() -> None:
    from veilfl.declared import declared_settings

    commands = {
        name: {flag for action in parser._actions for flag in action.option_strings}
        for name, parser in _subcommands().items()
    }
    wanted = {
        "client": {"data", "eval_fraction", "label_column", "image_size", "image_mode"},
        "simulate": {"data", "eval_data", "eval_fraction", "label_column", "image_size"},
        "demo": {"data", "eval_data", "eval_fraction", "label_column", "image_mode"},
        "server": {"eval_data", "label_column", "image_size", "image_mode"},
    }

    for declared in declared_settings(DataSettings):
        assert declared.setting.help and declared.setting.flag, declared.path
        for command, paths in wanted.items():
            if declared.path in paths:
                assert declared.setting.flag in commands[command], (command, declared.path)
    assert "--data" not in commands["server"] and "--eval-data" not in commands["client"]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_simulated_clients_evaluate_on_their_held_out_parts(tmp_path: Path) -> None:
    mnist = write_tiny_mnist(tmp_path / "mnist")
    run = tmp_path / "run"

    code = main(
        [
            "simulate",
            "--mnist-dir",
            str(mnist),
            "--num-clients",
            "3",
            "--clients-per-round",
            "3",
            "--rounds",
            "1",
            "--max-batches",
            "1",
            "--eval-fraction",
            "0.25",
            "--run-dir",
            str(run),
            "--log-level",
            "error",
        ]
    )

    (metrics,) = json.loads((run / "metrics.json").read_text())
    assert code == 0
    # The tiny MNIST trains on 200 images (240 less the validation sixth): parts of 67,
    # 67 and 66, of which each client holds out a quarter.
    assert metrics["federated_examples"] == sum(round(0.25 * n) for n in (67, 67, 66))
    assert metrics["test_accuracy"] is not None  # MNIST's test set, as before
