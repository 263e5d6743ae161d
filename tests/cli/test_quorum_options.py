"""``--quorum`` sits beside ``--threshold`` in ``veilfl server``, ``simulate`` and
``demo``; its default is ceil((m + t) / 2), and a quorum that lets two certificates of a
round split is refused in one line before any slow work, unless
``--allow-split-certificates`` accepts the risk."""

from __future__ import annotations

from pathlib import Path

import pytest

from veilfl.cli.main import build_parser, main
from veilfl.cli.preflight import check_arguments
from veilfl.cli.run_resume import differing_settings
from veilfl.cli.server_cmd import secure_from_args
from veilfl.errors import ConfigurationError


def _server(tmp_path: Path, *extra: str) -> list[str]:
    if not (tmp_path / "keys").exists():
        assert main(["keys", "--out", str(tmp_path / "keys"), "--count", "4"]) == 0
    listed = [
        flag
        for j in range(1, 5)
        for flag in (
            "--aggregator",
            f"https://127.0.0.1:{8090 + j},{tmp_path}/keys/aggregator-{j}.pub",
        )
    ]
    return ["server", "--run-dir", str(tmp_path / "r"), "--insecure", *listed, *extra]


def test_the_server_takes_the_quorum_into_the_runs_settings(tmp_path: Path) -> None:
    parser = build_parser()
    default = secure_from_args(parser.parse_args(_server(tmp_path)))
    assert default is not None and default.config.quorum == 3  # m = 4, t = 2
    chosen = secure_from_args(parser.parse_args(_server(tmp_path, "--quorum", "4")))
    assert chosen is not None and chosen.config.quorum == 4
    stored = default.config.to_json()
    assert stored["quorum"] == 3 and stored["allow_split_certificates"] is False
    assert differing_settings(
        {"secure": {"config": stored}}, {"secure": {"config": chosen.config.to_json()}}
    ) == ["--quorum 3 (stored) vs 4 (now)"]


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--secure", "--aggregators", "3", "--threshold", "2", "--quorum", "2"],
        ["simulate", "--secure", "--aggregators", "5", "--threshold", "3", "--quorum", "3"],
        ["demo", "--aggregators", "4", "--threshold", "2", "--quorum", "2"],
    ],
)
def test_a_splittable_quorum_is_refused_before_any_work_unless_allowed(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    with pytest.raises(ConfigurationError, match="--allow-split-certificates"):
        check_arguments(parser.parse_args(argv))
    check_arguments(parser.parse_args([*argv, "--allow-split-certificates"]))
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("veilfl: error: --quorum ")


def test_the_server_refuses_a_splittable_quorum_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _server(tmp_path, "--quorum", "2")
    capsys.readouterr()
    assert main(argv) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--quorum 2 with 4 aggregators and threshold 2" in line
    assert "use --quorum 3 or more" in line


def test_a_quorum_out_of_range_is_refused() -> None:
    parser = build_parser()
    with pytest.raises(ConfigurationError, match="--quorum must be at least 1; got 0"):
        check_arguments(parser.parse_args(["simulate", "--secure", "--quorum", "0"]))
    with pytest.raises(ConfigurationError, match="--quorum must be between 1 and the 3"):
        check_arguments(parser.parse_args(["simulate", "--secure", "--quorum", "4"]))


def test_the_demo_defaults_tolerate_one_aggregator_failure() -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.aggregators, args.threshold, args.quorum) == (4, 2, None)
    from veilfl.cli.demo_cmd import _quorum

    assert _quorum(args) == 3 and args.aggregators - _quorum(args) == 1
