"""``--config FILE``: options from TOML, flags override, unknown keys are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from veilfl.cli.config_file import expand_config
from veilfl.cli.main import build_parser, main
from veilfl.errors import ConfigurationError


def _parse(argv: list[str]) -> object:
    parser = build_parser()
    return parser.parse_args(expand_config(parser, argv))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "veilfl.toml"
    path.write_text(text)
    return path


def test_top_level_and_command_table_set_options_and_flags_win(tmp_path: Path) -> None:
    config = _write(
        tmp_path,
        """
        rounds = 7
        lr = 0.2
        [server]
        run-dir = "runs/r1"
        clients_per_round = 3
        insecure = true
        open-enrollment = true
        aggregator = ["http://127.0.0.1:8091,keys/a1.pub", "http://127.0.0.1:8092,/abs/a2.pub"]
        [client]
        server = "http://127.0.0.1:8080"
        """,
    )
    args = _parse(["server", "--config", str(config), "--lr", "0.5"])
    assert vars(args)["rounds"] == 7
    assert vars(args)["lr"] == 0.5  # the flag wins
    assert vars(args)["clients_per_round"] == 3
    assert vars(args)["insecure"] is True and vars(args)["open_enrollment"] is True
    assert vars(args)["run_dir"] == tmp_path / "runs" / "r1"  # relative to the file
    assert vars(args)["aggregator"] == [
        f"http://127.0.0.1:8091,{tmp_path / 'keys' / 'a1.pub'}",
        "http://127.0.0.1:8092,/abs/a2.pub",
    ]


def test_a_repeated_flag_on_the_command_line_replaces_the_files_list(tmp_path: Path) -> None:
    config = _write(tmp_path, '[client]\naggregator-fingerprint = ["aa", "bb"]\n')
    argv = ["client", "--config", str(config), "--server", "https://h", "--client-index", "0"]
    assert vars(_parse(argv))["aggregator_fingerprint"] == ["aa", "bb"]
    replaced = _parse([*argv, "--aggregator-fingerprint", "cc"])
    assert vars(replaced)["aggregator_fingerprint"] == ["cc"]


def test_required_options_may_come_from_the_file(tmp_path: Path) -> None:
    config = _write(tmp_path, '[client]\nserver = "https://h:1"\nclient-index = 2\n')
    args = _parse(["client", "--config", str(config)])
    assert vars(args)["server"] == "https://h:1" and vars(args)["client_index"] == 2


def test_false_flag_leaves_the_default(tmp_path: Path) -> None:
    config = _write(tmp_path, "[simulate]\nsecure = false\n")
    assert vars(_parse(["simulate", "--config", str(config)]))["secure"] is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "roundz = 3\n",
            "unknown key 'roundz' for veilfl simulate; keys are the command's "
            "long options without the dashes (see veilfl simulate --help).",
        ),
        ("[simulate]\nconfig = 'other.toml'\n", "unknown key 'config' for veilfl simulate"),
        ("[demo]\nroundz = 3\n", "unknown key 'roundz' for veilfl demo"),
        (
            "[simulte]\nrounds = 3\n",
            "unknown table [simulte]; tables are named after commands "
            "(server, client, aggregator, simulate, demo).",
        ),
        ("secure = 1\n", "secure is a flag; write true or false."),
        ("rounds = [1, 2]\n", "rounds takes one value, not a list."),
        ("rounds = true\n", "rounds takes a value, not true or false."),
        ("rounds = \n", "not valid TOML"),
    ],
)
def test_mistakes_are_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    config = _write(tmp_path, text)
    with pytest.raises(ConfigurationError) as caught:
        expand_config(build_parser(), ["simulate", "--config", str(config)])
    assert str(caught.value).startswith(f"{config}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_command_line_prints_the_unknown_key_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, "[server]\nroundz = 3\n")
    assert main(["server", "--config", str(config)]) == 1
    assert capsys.readouterr().err == (
        f"veilfl: error: {config}: unknown key 'roundz' for veilfl server; keys are the "
        "command's long options without the dashes (see veilfl server --help).\n"
    )


def test_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["simulate", f"--config={missing}"]) == 1
    assert capsys.readouterr().err == (
        f"veilfl: error: --config {missing} cannot be read: No such file or directory.\n"
    )
