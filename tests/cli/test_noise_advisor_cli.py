"""The noise advisor on the command line: its line before the round table, and a
suggested cohort that the command line, given it, plans under the threshold."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli.processes import write_tiny_mnist

from veilfl.cli.main import build_parser, main
from veilfl.cli.server_cmd import settings_from_args
from veilfl.privacy.utility import DROWNING_RATIO
from veilfl.protocol.assembly import privacy_advice
from veilfl.reporting import format_round_table_header

pytestmark = pytest.mark.timeout(300)


def test_simulate_prints_the_advice_before_the_round_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mnist = write_tiny_mnist(tmp_path / "mnist", train=40, test=10)
    code = main(
        [
            *("simulate", "--run-dir", str(tmp_path / "sim"), "--num-clients", "4"),
            *("--mnist-dir", str(mnist), "--rounds", "1", "--max-batches", "1"),
            *("--dp", "central", "--target-epsilon", "8", "--clients-per-round", "2"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    advice = next(line for line in out.splitlines() if line.startswith("noise advisor:"))
    header = format_round_table_header().splitlines()[0]
    assert out.index(advice) < out.index(header)  # before the table, so before training
    # d = 21,840 over 2 clients: far above the threshold, and 4 clients cannot fix it.
    assert "DP-FedAvg, 2 clients a round" in advice
    assert f"over {DROWNING_RATIO:g}" in advice
    assert "no cohort" in advice


def _server_advice(flags: list[str], *, model_size: int) -> tuple[float, int | None]:
    args = build_parser().parse_args(
        ["server", "--run-dir", "unused", "--population", "400", "--rounds", "8", *flags]
    )
    advice = privacy_advice(settings_from_args(args), model_size=model_size)
    assert advice is not None
    return advice.ratio, advice.suggested_clients


@pytest.mark.parametrize("mechanism", ["fedavg", "ftrl"])
def test_the_server_plans_the_suggested_cohort_under_the_threshold(mechanism: str) -> None:
    flags = ["--insecure", "--dp", "central", "--dp-mechanism", mechanism]
    flags += ["--target-epsilon", "4", "--min-clients", "2"]
    ratio, suggested = _server_advice([*flags, "--clients-per-round", "10"], model_size=4_000)
    assert ratio > DROWNING_RATIO
    assert suggested is not None and 10 < suggested <= 400
    # Given the suggestion, the command line derives settings the advisor calls fine.
    ratio_there, again = _server_advice(
        [*flags, "--clients-per-round", str(suggested)], model_size=4_000
    )
    assert ratio_there <= DROWNING_RATIO
    assert again is None
    # And one client fewer is still over.
    below, _ = _server_advice([*flags, "--clients-per-round", str(suggested - 1)], model_size=4_000)
    assert below > DROWNING_RATIO
