"""The noise warning fires where veilfl's own runs failed and not where they trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from veilfl.errors import ConfigurationError
from veilfl.ml.models import build_model, count_parameters
from veilfl.privacy.accountant import noise_multiplier_for
from veilfl.privacy.utility import DROWNING_RATIO, noise_to_signal, noise_warning

RESULTS = Path(__file__).parents[2] / "docs" / "results" / "privacy_utility.json"
SIMPLE_CNN = count_parameters(build_model("simple-cnn"))
FRACTION = 0.1  # the benchmark samples 10% of clients per round


def _client_level_runs() -> list[dict[str, float]]:
    runs = json.loads(RESULTS.read_text())
    return [r for r in runs if r["kind"] == "client-level DP-FedAvg"]


def test_the_issues_failing_example_warns_with_numbers_and_a_fix() -> None:
    # `--target-epsilon 3`, 10 clients per round (100 clients, q = 0.1, 30 rounds).
    z = noise_multiplier_for(target_epsilon=3.0, sample_rate=0.1, rounds=30, delta=1e-5)
    message = noise_warning(
        model_size=SIMPLE_CNN, clients_per_round=10, noise_multiplier=z, clip_norm=1.0
    )
    assert message is not None and "\n" not in message
    assert "10 clipped updates" in message and f"d = {SIMPLE_CNN:,}" in message
    # The cohort it recommends is one that does not warn.
    needed = int(message.split("sample at least ")[1].split(" ")[0].replace(",", ""))
    assert (
        noise_warning(
            model_size=SIMPLE_CNN, clients_per_round=needed, noise_multiplier=z, clip_norm=1.0
        )
        is None
    )
    assert noise_warning(
        model_size=SIMPLE_CNN, clients_per_round=needed - 1, noise_multiplier=z, clip_norm=1.0
    )


def test_the_warning_separates_the_benchmark_runs_that_trained_from_those_that_did_not() -> None:
    runs = _client_level_runs()
    baseline = {r["clients"]: r["accuracy"] for r in runs if r["noise_multiplier"] is None}
    private = [r for r in runs if r["noise_multiplier"] is not None]
    assert {r["clients"] for r in private} == {100, 1000}
    for run in private:
        warned = noise_warning(
            model_size=SIMPLE_CNN,
            clients_per_round=FRACTION * run["clients"],
            noise_multiplier=run["noise_multiplier"],
            clip_norm=1.0,
        )
        # A run "drowned" if it lost more than 10 points against the same run without DP.
        drowned = run["accuracy"] < baseline[run["clients"]] - 0.10
        assert (warned is not None) == drowned, run
    # In particular the 1,000-client settings (100 clients per round) never warn.
    assert all(r["clients"] == 100 for r in private if r["accuracy"] < 0.9)


def test_the_ratio_does_not_depend_on_the_clipping_norm() -> None:
    ratio = noise_to_signal(model_size=10_000, clients_per_round=25, noise_multiplier=1.0)
    assert ratio == pytest.approx(4.0)
    for clip in (0.1, 1.0, 30.0):
        assert (
            noise_warning(
                model_size=10_000,
                clients_per_round=25,
                noise_multiplier=1.0,
                clip_norm=clip,
                limit=DROWNING_RATIO,
            )
            is None
        )
        assert noise_warning(
            model_size=10_000, clients_per_round=24, noise_multiplier=1.0, clip_norm=clip
        )


def test_nonsense_sizes_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        noise_warning(model_size=0, clients_per_round=10, noise_multiplier=1.0, clip_norm=1.0)
    with pytest.raises(ConfigurationError):
        noise_warning(model_size=10, clients_per_round=10, noise_multiplier=1.0, clip_norm=0.0)
