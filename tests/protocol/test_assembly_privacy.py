"""One assembly for every path, under DP: cohort figures, the start-up checks, and a DP core
that reports both observers in its metrics, its status and its persisted outcome."""

from __future__ import annotations

import numpy as np
import pytest
from tests.run_descriptions import published
from tests.tiny_coordinator import settle

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.privacy.accountant import epsilon_for
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.utility import noise_warning
from veilfl.protocol.assembly import (
    build_coordinator,
    check_run_settings,
    cohort_plan,
    privacy_warning,
)
from veilfl.protocol.buffered import BufferConfig
from veilfl.protocol.messages import TaskKind, UpdateHeader
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout

START = {"w": np.zeros(100, dtype=np.float32)}


def _settings(dp: DpConfig | None, **changes: object) -> RunSpec:
    fields: dict[str, object] = {
        "model_name": "tiny",
        "rounds": RoundConfig(num_rounds=3, clients_per_round=5, min_clients=3),
        "dp": dp,
        "population": 20,
    }
    fields.update(changes)
    return RunSpec(**fields)  # type: ignore[arg-type]


def _dp(placement: str = "central", **changes: object) -> DpConfig:
    return DpConfig(placement=placement, noise_multiplier=1.0, clip_norm=1.0, **changes)  # type: ignore[arg-type]


def test_dp_rounds_are_secretly_sampled_and_buffers_are_not() -> None:
    rounds = cohort_plan(_settings(_dp(min_clients=4)))
    assert (rounds.sample_rate, rounds.minimum, rounds.secret_sampling) == (0.25, 4, True)
    assert rounds.charged_sample_rate == 0.25
    buffered = cohort_plan(
        _settings(_dp(), buffer=BufferConfig(buffer_size=5, max_staleness=2, max_versions=3))
    )
    assert (buffered.secret_sampling, buffered.charged_sample_rate) == (False, 1.0)
    assert not cohort_plan(_settings(None)).secret_sampling


def test_contradictory_settings_are_refused_by_every_assembly() -> None:
    settings = _settings(_dp("distributed", min_clients=4))
    with pytest.raises(ConfigurationError, match="needs secure aggregation"):
        check_run_settings(settings)
    with pytest.raises(ConfigurationError, match="--dp-min-clients 4 exceeds --min-clients 3"):
        check_run_settings(settings, secure=True)
    with pytest.raises(ConfigurationError, match="needs secure aggregation"):
        build_coordinator(settings, initial_weights=START, run_id="r")


def test_the_warning_uses_the_noise_a_release_actually_carries() -> None:
    # Distributed noise is dealt by the aggregators: the charged z at the verified
    # bound (at least C), whatever the number of contributions.
    config = SecureAggregationConfig(threshold=2, num_aggregators=2, norm_bound=1.0)
    keys = [generate_keypair() for _ in range(2)]
    secure = SecureSettings(config=config, aggregators=published(keys))
    settings = _settings(_dp("distributed", min_clients=2), secure=secure)
    layout = ContributionLayout(10_000, config)
    said = privacy_warning(settings, model_size=10_000)
    oracle = noise_warning(
        model_size=10_000,
        clients_per_round=5,
        noise_multiplier=1.0,
        clip_norm=max(1.0, layout.bounds.norm_bound / layout.scale),
    )
    assert said is not None and said == oracle
    assert privacy_warning(_settings(_dp()), model_size=4) is None
    assert privacy_warning(_settings(None), model_size=10**9) is None


def test_a_dp_core_reports_both_observers_and_its_state_each_round() -> None:
    settings = _settings(
        _dp("local"), rounds=RoundConfig(num_rounds=2, clients_per_round=20, min_clients=1)
    )
    core = build_coordinator(
        settings, initial_weights=START, run_id="r", sampling_rng=CsprngStream(key=bytes(32))
    ).coordinator
    clients = [f"c{i}" for i in range(20)]
    for client in clients:
        core.join(client, now=0.0)
    core.tick(now=0.0)
    for client in clients:
        task = core.task_for(client, now=0.0)
        if task.kind is TaskKind.TRAIN:
            assert task.privacy is not None and task.privacy.placement == "local"
            core.submit_plaintext_update(
                UpdateHeader(client, 1, 0, num_samples=1, loss=0.0), START, now=0.0
            )
    (outcome,) = settle(core)
    metrics = outcome.metrics
    # q = 1: everyone took part, so both observers get one unsampled Gaussian round.
    one_round = epsilon_for(noise_multiplier=1.0, sample_rate=1.0, rounds=1, delta=1e-5)
    assert metrics.epsilon == pytest.approx(one_round)
    assert metrics.epsilon_coordinator == pytest.approx(one_round)
    assert (metrics.accounting, metrics.delta) == ("rdp", 1e-5)
    assert outcome.privacy is not None and outcome.privacy.ledger.rounds == 1
    status = core.status()["privacy"]
    assert isinstance(status, dict) and status["epsilon_public"] == metrics.epsilon
