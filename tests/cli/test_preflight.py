"""Bad flags are reported in one line naming the flag, before any slow work."""

from __future__ import annotations

from pathlib import Path

import pytest

from veilfl.cli.main import build_parser, main
from veilfl.cli.preflight import check_arguments
from veilfl.errors import ConfigurationError

SERVER = ["server", "--insecure", "--open-enrollment"]


def _check(argv: list[str]) -> None:
    check_arguments(build_parser().parse_args(argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [*SERVER, "--run-dir", "{tmp}/r", "--rounds", "-3"],
            "--rounds must be at least 1; got -3.",
        ),
        (
            [*SERVER, "--run-dir", "{tmp}/r", "--fraction", "1.5"],
            "--fraction must lie in (0, 1]; got 1.5.",
        ),
        ([*SERVER, "--run-dir", "{tmp}/r", "--lr", "0"], "--lr must be more than 0; got 0."),
        (
            [*SERVER, "--run-dir", "{tmp}/r", "--port", "70000"],
            "--port must lie in [0, 65535]; got 70000.",
        ),
        (
            [*SERVER, "--run-dir", "{tmp}/r", "--round-timeout", "nan"],
            "--round-timeout must be a finite number; got nan.",
        ),
        (["simulate", "--dropout", "1"], "--dropout must lie in [0, 1); got 1."),
        (
            ["simulate", "--secure", "--threshold", "4", "--aggregators", "3"],
            "--threshold 4 is more than --aggregators 3; at most that many shares exist.",
        ),
        (
            ["client", "--server", "https://h:1", "--client-index", "0", "--connect-timeout", "0"],
            "--connect-timeout must be more than 0; got 0.",
        ),
        (
            ["client", "--server", "htps://127.0.0.1:8080", "--client-index", "0"],
            "--server htps://127.0.0.1:8080 is not an http:// or https:// URL; did you mean "
            "https://?",
        ),
        (
            ["client", "--server", "https://", "--client-index", "0"],
            "--server https:// names no host, as in https://127.0.0.1:8080.",
        ),
        (
            ["client", "--server", "https://h:port", "--client-index", "0"],
            "--server https://h:port is not a valid URL",
        ),
        (
            ["client", "--server", "https://h", "--client-index", "4", "--num-clients", "4"],
            "--client-index 4 is outside 0..3 (--num-clients 4 decides the partitions).",
        ),
        (
            ["client", "--server", "https://h", "--client-index", "0", "--ca-cert", "{tmp}/ca.pem"],
            "--ca-cert {tmp}/ca.pem does not exist.",
        ),
        (
            ["client", "--server", "https://h", "--client-index", "0", "--mnist-dir", "{tmp}/f"],
            "--mnist-dir {tmp}/f is not a folder.",
        ),
        (
            [*SERVER, "--run-dir", "/proc/nonexistent/r"],
            "--run-dir /proc/nonexistent/r cannot be created: No such file or directory "
            "(/proc/nonexistent); choose a writable folder.",
        ),
        (
            [*SERVER, "--run-dir", "{tmp}/f/r"],
            "--run-dir {tmp}/f/r cannot be created: Not a directory",
        ),
        (
            [*SERVER, "--run-dir", "{tmp}/r", "--aggregator", "htp://a:1,{tmp}/k.pub"],
            "--aggregator htp://a:1 is not an http:// or https:// URL; did you mean http://?",
        ),
        (
            [*SERVER, "--run-dir", "{tmp}/r", "--aggregator", "https://a:1,{tmp}/k.pub"],
            "--aggregator {tmp}/k.pub does not exist.",
        ),
        (
            [*SERVER, "--run-dir", "{tmp}/r", "--aggregator", "https://a:1"],
            "--aggregator takes URL,PUBLIC_KEY_FILE; got 'https://a:1'.",
        ),
        (
            ["aggregator", "--index", "0", "--key", "k", "--coordinator", "https://h"],
            "--index must be at least 1; got 0.",
        ),
        (["tokens", "--out", "{tmp}"], "--out {tmp} is a folder; name a file."),
        (
            ["simulate", "--clients-per-round", "3", "--fraction", "0.5"],
            "Give --clients-per-round (a count) or --fraction (of joined clients), not both.",
        ),
        (
            ["simulate", "--clients-per-round", "3", "--min-clients", "4"],
            "--min-clients 4 is more than --clients-per-round 3: the round could never close.",
        ),
        (["simulate", "--momentum", "1"], "--momentum must lie in [0, 1); got 1."),
        (
            ["simulate", "--device", "gpu"],
            "--device 'gpu' is not a device; use auto, cpu, cuda or cuda:N (N from 0).",
        ),
        (
            ["client", "--server", "https://h", "--client-index", "0", "--device", "cuda:x"],
            "--device 'cuda:x' is not a device",
        ),
        (["simulate", "--ray-gpus", "0.5"], "--ray-gpus needs --backend ray."),
        (["simulate", "--ray-address", "auto"], "--ray-address needs --backend ray."),
        (["simulate", "--backend", "ray", "--ray-cpus", "0"], "--ray-cpus must be more than 0"),
        (["simulate", "--batch-clients", "0"], "--batch-clients must be at least 1; got 0."),
        (["simulate", "--proximal-mu", "-1"], "--proximal-mu must be at least 0; got -1."),
        (["simulate", "--server-beta2", "1"], "--server-beta2 must lie in [0, 1); got 1."),
        (["simulate", "--server-tau", "0"], "--server-tau must be more than 0; got 0."),
        (
            [
                *SERVER,
                "--run-dir",
                "{tmp}/r",
                "--aggregator",
                "https://a:1,{tmp}/f",
                "--threshold",
                "2",
            ],
            "--threshold 2 is more than the 1 --aggregator given; at most that many shares exist.",
        ),
    ],
)
def test_each_mistake_names_its_flag(tmp_path: Path, argv: list[str], message: str) -> None:
    (tmp_path / "f").write_text("a file, not a folder")
    argv = [token.replace("{tmp}", str(tmp_path)) for token in argv]
    with pytest.raises(ConfigurationError) as caught:
        _check(argv)
    assert str(caught.value).startswith(message.replace("{tmp}", str(tmp_path)))


def test_good_arguments_pass_and_create_the_output_folder(tmp_path: Path) -> None:
    key = tmp_path / "a1.pub"
    key.write_text("{}")
    run_dir = tmp_path / "deep" / "r"
    _check(
        [
            *SERVER,
            "--run-dir",
            str(run_dir),
            "--aggregator",
            f"https://a:8091,{key}",
            "--threshold",
            "1",
        ]
    )
    assert run_dir.is_dir()


def test_the_server_reports_a_bad_run_dir_in_one_line_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*SERVER, "--run-dir", "/proc/nonexistent/r"]) == 1
    assert capsys.readouterr().err == (
        "veilfl: error: --run-dir /proc/nonexistent/r cannot be created: No such file or "
        "directory (/proc/nonexistent); choose a writable folder.\n"
    )
