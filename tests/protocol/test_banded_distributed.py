"""Banded matrix factorisation with noise dealt by the aggregators, through the real
coordinator core and in-process aggregators: the decoded model is theta_0 plus the
prefix sum over n (negligible noise), a run killed after two rounds (coordinator and
aggregators restarted from what they stored) continues the same releases and reports
the same epsilon as one that ran straight through, against both observers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from tests.run_descriptions import run_info
from tests.tiny_coordinator import settle

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ConfigurationError
from veilfl.ml.learner import LocalUpdate
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.mechanisms import BandedOptions
from veilfl.protocol.assembly import AssembledRun, ResumePoint, build_coordinator
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.hand_in import HandInContext
from veilfl.protocol.messages import RunInfo, TaskKind
from veilfl.protocol.private_ftrl import FtrlAggregation
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.sim.hand_in import SimulatedHandIn
from veilfl.sim.in_process_aggregators import InProcessAggregators

START = {"w": np.zeros(3, np.float32)}
CONFIG = SecureAggregationConfig(
    threshold=2, num_aggregators=3, norm_bound=10.0, max_samples_per_client=100
)
GRID = 1 / ContributionLayout(3, CONFIG).scale
VALUES = {"a": 100 * GRID, "b": 300 * GRID, "c": -50 * GRID, "d": 20 * GRID}
"""Each client's delta (every coordinate), on the encoding's grid: the sums are exact."""
ROUNDS = 4
DP = DpConfig(
    placement="distributed",
    noise_multiplier=1e-9,  # negligible: the decoded sums are the round sums
    clip_norm=10.0,
    min_clients=2,
    mechanism="banded",
    max_participations=2,
    min_separation=2,
    options=BandedOptions(scale_bits=6),
)


def _spec(aggregators: InProcessAggregators) -> RunSpec:
    return RunSpec(
        model_name="tiny",
        rounds=RoundConfig(
            num_rounds=ROUNDS, clients_per_round=2, min_clients=2, round_timeout_s=30
        ),
        server_learning_rate=1.0,
        secure=SecureSettings(config=CONFIG, aggregators=aggregators.published),
        dp=DP,
        population=len(VALUES),
    )


def _start() -> tuple[AssembledRun, InProcessAggregators, RunInfo]:
    aggregators = InProcessAggregators(CONFIG, run_id="r", model_size=3, noise_seed=b"seed")
    assembled = build_coordinator(_spec(aggregators), initial_weights=START, run_id="r")
    spec = _spec(aggregators)
    run = run_info(spec, run_id="r", coordinator_key="", model_size=3)
    aggregators.attach(run)
    return assembled, aggregators, run


def _round(core: Coordinator, aggregators: InProcessAggregators, run: RunInfo, now: float) -> float:
    """One round: the selected clients hand in their deltas; returns the round's sum."""
    for client in VALUES:
        core.join(client, now=now)
    core.tick(now=now)
    total = 0.0
    for client, value in VALUES.items():
        task = core.task_for(client, now=now)
        if task.kind is not TaskKind.TRAIN:
            continue
        assert task.privacy is not None and task.privacy.update_stddev == 0
        total += value
        result = SimulatedHandIn(
            core,
            core.spec,
            aggregators=aggregators,
            csprng=CsprngStream(),
            policy=ClientPolicy.accepting(run, min_cohort=2),
        ).deliver(
            LocalUpdate(delta={"w": np.full(3, value, np.float32)}, num_samples=100, mean_loss=0.5),
            context=HandInContext(
                client_id=client,
                run=run,
                round_id=task.round_id,
                base_version=task.model_version,
                admission="in-process",
                privacy=task.privacy,
                aggregator_policies=aggregators.policies,
            ),
            now=now,
        )
        assert result.taken
    settle(core, now=now, aggregators=aggregators)
    return total


def test_the_decoded_model_is_theta_0_plus_the_prefix_sum_over_n() -> None:
    assembled, aggregators, run = _start()
    core = assembled.coordinator
    sums = [_round(core, aggregators, run, now=float(r)) for r in range(1, ROUNDS + 1)]
    assert len(core.history) == ROUNDS
    # theta_0 + eta * (sum of the round sums) / n, n = 2 expected clients.
    np.testing.assert_allclose(
        core.global_model().weights["w"], np.full(3, sum(sums) / 2), atol=1e-4
    )
    last = core.history[-1]
    planned = DP.privacy_mechanism.planned_epsilon(DP, rounds=ROUNDS, sample_rate=1.0)
    assert last.epsilon == last.epsilon_coordinator == pytest.approx(planned)


def test_a_killed_run_resumes_the_aggregators_encoders_and_reports_the_same_epsilon() -> None:
    # Arrange: one run straight through, one killed after two rounds.
    straight, straight_aggregators, straight_run = _start()
    straight_sums = [
        _round(straight.coordinator, straight_aggregators, straight_run, now=float(r))
        for r in range(1, ROUNDS + 1)
    ]
    first, aggregators, run = _start()
    sums = [_round(first.coordinator, aggregators, run, now=float(r)) for r in (1, 2)]
    privacy = first.privacy
    assert isinstance(privacy, FtrlAggregation)
    limits = privacy.limits
    # Act: restart the coordinator from its stored state, and every aggregator from
    # the noise state it saved (its shares of the last b - 1 aggregates among it).
    resume = ResumePoint(
        next_round=3,
        model_version=2,
        releases=2,
        privacy=privacy.state(),
        participations={c: limits.participations(c) for c in VALUES},
        last_steps={c: s for c in VALUES if (s := limits.last_step(c)) is not None},
    )
    resumed = build_coordinator(
        _spec(aggregators),
        initial_weights=first.coordinator.global_model().weights,
        run_id="r",
        resume=resume,
    ).coordinator
    aggregators.restart(run)
    sums += [_round(resumed, aggregators, run, now=float(r)) for r in (3, 4)]
    # Assert: the same rounds, the same decoded model, the same epsilon.
    assert sums == straight_sums
    np.testing.assert_allclose(
        resumed.global_model().weights["w"],
        straight.coordinator.global_model().weights["w"],
        atol=1e-4,
    )
    np.testing.assert_allclose(
        resumed.global_model().weights["w"], np.full(3, sum(sums) / 2), atol=1e-4
    )
    last, straight_last = resumed.history[-1], straight.coordinator.history[-1]
    assert last.epsilon == straight_last.epsilon == last.epsilon_coordinator


def test_a_strategy_whose_releases_could_wrap_is_refused_before_the_run_starts() -> None:
    aggregators = InProcessAggregators(CONFIG, run_id="r", model_size=3)
    wide = replace(_spec(aggregators), dp=replace(DP, options=BandedOptions(scale_bits=26)))
    with pytest.raises(ConfigurationError, match=r"could reach .* lower its scale bits"):
        build_coordinator(wide, initial_weights=START, run_id="r")
